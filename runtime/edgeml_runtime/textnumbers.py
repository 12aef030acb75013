"""Numbers written as text, for a numeric column with a :class:`~edgeml_runtime.schema.NumberFormat`.

A column whose training data wrote numbers the way people type them (``1.200,5``, ``$30``, ``2 BHK``,
``1200 - 1500``) carries a number format; every value of it, on the host and on a device, is read by
:func:`read_text_number` with that format. Text that is no number in this grammar is a missing value,
as the host made it in training. A column without a number format keeps the strict grammar of
:func:`edgeml_runtime.cells.to_number`, where such text is a row error.

The grammar, around one number (spaces between the parts are free unless said):

- the number: ASCII digits, the format's decimal mark, digit groups of exactly three after the
  format's grouping separator (``1,234,567``; ``1.200,5`` with decimal ``,``), an exponent (``1e5``);
  ``+`` ``-`` or ``−`` before it. In a format without grouping, the other mark is read as a decimal
  mark when it is not followed by exactly three digits (``1,5`` and ``1.5`` are both 1.5 there, as
  surveys mix them), and ``1,200`` there is no number (it could be 1.2 or 1200);
- a currency before or after: a symbol (``$30``, ``30 €``, ``£1,200``) or a code (``EUR 30``);
- a unit after, up to three words (``2 BHK``, ``100 kg``, ``12.5 km/h``, ``24 labour days``, ``45%``:
  45, the number as written, as ``45`` in the same column means). A unit written against the number
  must be two letters or more and no ordinal: ``100kg`` is 100, ``1st``, ``12A`` are no numbers;
- a range ``1200 - 1500``, ``1200-1500``, ``1200 – 1500``, ``10 to 20``: the midpoint. Its ends have
  no sign and no leading zero and the first is not above the second, so that ``2011-05-09``,
  ``2011-05`` and ``12-05`` are never ranges;
- an approximation or a bound: ``~25``, ``≈25``, ``about 25``, ``ca. 25``, ``approx. 25``, ``23+``,
  ``>5``, ``<5``, ``>=5``, ``≤5``: the number given (the bound is the nearest value the text states;
  a missing value would throw away that the value is small or large).

Never a date or a time (``17:00``, ``09-05-2011``: no ``:`` and no third part), never a code with a
letter before the number (``A12``, ``Type 2``). Text outside the 32-bit float range is missing too,
like any text that is no usable number in such a column; a number that is not text (a JSON number)
goes through :func:`~edgeml_runtime.cells.to_number`, errors included.

Example:

>>> from edgeml_runtime.schema import NumberFormat
>>> eu = NumberFormat(decimal=",", grouping=".")
>>> [read_text_number(v, eu) for v in ("1.200,5", "€ 30", "2100 - 2850", "~25", "23+", "45 %")]
[1200.5, 30.0, 2475.0, 25.0, 23.0, 45.0]
>>> read_text_number("17:00", eu), read_text_number("A12", eu), read_text_number(None, eu)
(nan, nan, nan)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .cells import _F32_MAX, _NAN, to_number
from .schema import NumberFormat

__all__ = ["TextNumber", "parse_text_number", "read_text_number", "text_reader"]

_CURRENCY_SYMBOLS = "$€£¥₹₽₩₺₪₫฿₴₦₱"
_CURRENCY_CODES = ("USD", "EUR", "GBP", "CHF", "JPY", "CNY", "INR", "RUB", "AUD", "CAD", "NZD", "SEK", "NOK", "DKK",
                   "PLN", "CZK", "HUF", "RON", "BGN", "UAH", "TRY", "BRL", "MXN", "ZAR", "KRW", "SGD", "HKD", "ILS")
_APPROX = r"~|≈|≃|ca\.?|circa|about|around|approx\.?|approximately|<=|>=|≤|≥|<|>"
_ORDINALS = frozenset({"st", "nd", "rd", "th"})
#: What each grouping separator may be written as (a space also as a no-break or narrow no-break space).
_GROUP_CHARS = {",": ",", ".": r"\.", " ": "[ \u00a0\u202f]", "'": "['’]"}
_SEPARATORS = {",": ",", ".": "."}


@dataclass(frozen=True)
class TextNumber:
    """One text read as a number: its ``value`` and, if it had one, the ``unit`` after it (lower case)."""

    value: float
    unit: str = ""


def _number(fmt: NumberFormat) -> str:
    """The pattern of one unsigned number in ``fmt`` (no capture groups)."""
    dec = re.escape(fmt.decimal)
    whole = r"[0-9]+"
    if fmt.grouping:
        whole = rf"[0-9]{{1,3}}(?:{_GROUP_CHARS[fmt.grouping]}[0-9]{{3}})+(?![0-9])|[0-9]+"
    forms = [rf"(?:{whole})(?:{dec}[0-9]*)?", rf"{dec}[0-9]+"]
    if not fmt.grouping:  # the other mark as a decimal mark, unless three digits follow it (1,200 is ambiguous)
        other = re.escape("," if fmt.decimal == "." else ".")
        forms.insert(0, rf"[0-9]+{other}(?![0-9]{{3}}(?![0-9]))[0-9]+")
    return rf"(?:{'|'.join(forms)})(?:[eE][+-]?[0-9]+)?"


def _pattern(fmt: NumberFormat) -> re.Pattern:
    num = _number(fmt)
    currency = rf"[{_CURRENCY_SYMBOLS}]|(?:{'|'.join(_CURRENCY_CODES)})(?![^\W\d_])"
    word = r"[°º]?[^\W\d_]+(?:[/.·-][^\W\d_]+)*[²³]?\.?"
    unit = rf"%|‰|(?:[{_CURRENCY_SYMBOLS}]|{word})(?:\s*/\s*{word})?(?:\s+{word}){{0,2}}"
    return re.compile(
        rf"""\s*(?P<approx>(?:{_APPROX})\s*)?
        (?P<sign>[+\-−]\s*)?(?P<pre>(?:{currency})\s*)?(?P<sign2>[+\-−])?
        (?P<a>{num})
        (?:(?P<to>\s*[-–—]\s*|\s+to\s+)(?P<b>{num}))?
        (?P<plus>\+)?
        (?P<gap>\s*)(?P<unit>{unit})?\s*""",
        re.IGNORECASE | re.VERBOSE,
    )


_PATTERNS: dict[NumberFormat, re.Pattern] = {}
_LEADING_ZERO = re.compile(r"0[0-9]")


def _compiled(fmt: NumberFormat) -> re.Pattern:
    """The grammar's one regular expression for ``fmt``, compiled once per format."""
    pattern = _PATTERNS.get(fmt)
    if pattern is None:
        pattern = _PATTERNS[fmt] = _pattern(fmt)
    return pattern


def _value(text: str, fmt: NumberFormat) -> float:
    """An unsigned number matched by :func:`_number` as a float."""
    if fmt.grouping:
        return float(re.sub(_GROUP_CHARS[fmt.grouping], "", text).replace(fmt.decimal, "."))
    return float(text.replace(",", "."))  # without grouping, the one mark it holds is the decimal mark


def parse_text_number(text: str, fmt: NumberFormat) -> TextNumber | None:
    """``text`` read in the grammar of this module with ``fmt``, or None when it is no number there
    (missing-value words such as ``NA`` included; values beyond 32-bit floats too).

    >>> parse_text_number("2 BHK", NumberFormat())
    TextNumber(value=2.0, unit='bhk')
    >>> parse_text_number("1st", NumberFormat()) is None, parse_text_number("2011-05-09", NumberFormat()) is None
    (True, True)
    """
    m = _compiled(fmt).fullmatch(text)
    if m is None:
        return None
    a, b, unit = m["a"], m["b"], m["unit"] or ""
    if unit and not m["gap"] and unit[0].isalpha():
        first = re.match(r"[^\W\d_]+", unit)[0]
        if len(first) < 2 or first.lower() in _ORDINALS:
            return None  # 1st, 12A: an ordinal or a code, not a number with a unit
    if b is not None:
        if m["sign"] or m["sign2"] or m["plus"] or _LEADING_ZERO.match(a) or _LEADING_ZERO.match(b):
            return None
        low, high = _value(a, fmt), _value(b, fmt)
        if low > high:
            return None  # 2011-5, 5-2: a date or a code rather than a range
        value = (low + high) / 2
    else:
        if m["sign"] and m["sign2"]:
            return None
        value = _value(a, fmt)
        if (m["sign"] or m["sign2"] or "").strip() in ("-", "−"):
            value = -value
    if not -_F32_MAX <= value <= _F32_MAX:
        return None
    return TextNumber(value, unit.strip().lower())


def read_text_number(value, fmt: NumberFormat) -> float:
    """One value of a column with number format ``fmt`` as a float: NaN for a missing value and for text
    that is no number in this grammar; a value that is not text is read by
    :func:`~edgeml_runtime.cells.to_number` (a boolean or a nested value stays a row error).

    >>> read_text_number("1,234,567", NumberFormat(".", ",")), read_text_number("1,5", NumberFormat(",", ""))
    (1234567.0, 1.5)
    >>> read_text_number(7, NumberFormat()), read_text_number("n/a-ish", NumberFormat())
    (7.0, nan)
    """
    if type(value) is not str:
        return to_number(value)
    read = parse_text_number(value, fmt)
    return _NAN if read is None else read.value


def text_reader(fmt: NumberFormat):
    """``read_text_number`` for one format, as a one-argument function (what the encoder's paths take)."""

    def read(value) -> float:
        if type(value) is not str:
            return to_number(value)
        read = parse_text_number(value, fmt)
        return _NAN if read is None else read.value

    return read

