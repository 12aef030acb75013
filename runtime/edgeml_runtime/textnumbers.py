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
  ``>5``, ``<5``, ``>=5``, ``≤5``, ``up to 10``, ``more than 3``: the number given (the bound is the
  nearest value the text states; a missing value would throw away that the value is small or large,
  and size buckets such as ``up to 10``, ``11-50``, ``1000+`` keep their order).

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
from collections.abc import Callable
from dataclasses import dataclass

from .cells import _F32_MAX, _NAN, to_number
from .schema import NumberFormat

__all__ = ["TextNumber", "parse_text_number", "read_text_number", "text_reader"]

_CURRENCY_SYMBOLS = "$€£¥₹₽₩₺₪₫฿₴₦₱"
_CURRENCY_CODES = ("USD", "EUR", "GBP", "CHF", "JPY", "CNY", "INR", "RUB", "AUD", "CAD", "NZD", "SEK", "NOK", "DKK",
                   "PLN", "CZK", "HUF", "RON", "BGN", "UAH", "TRY", "BRL", "MXN", "ZAR", "KRW", "SGD", "HKD", "ILS")
_APPROX = (r"~|≈|≃|ca\.?|circa|about|around|approx\.?|approximately|<=|>=|≤|≥|<|>"
           r"|up\s+to|less\s+than|more\s+than|at\s+least|at\s+most|over|under|below|above")
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
        (?:(?P<to>\s*[-–—]\s*|\s+to\s+)(?:{currency})?\s*(?P<b>{num}))?
        (?P<plus>\+)?
        (?P<gap>\s*)(?P<unit>{unit})?\s*""",
        re.IGNORECASE | re.VERBOSE,
    )


_LEADING_ZERO = re.compile(r"0[0-9]").match
_UNIT_WORD = re.compile(r"[^\W\d_]+").match
#: The characters each grouping separator may be written as (see _GROUP_CHARS).
_GROUP_LITERALS = {",": ",", ".": ".", " ": " \u00a0\u202f", "'": "'’"}


class _Grammar:
    """The grammar for one number format: its one regular expression, compiled once, and how a matched
    number becomes a float."""

    def __init__(self, fmt: NumberFormat):
        self.fmt = fmt
        self.match = _pattern(fmt).fullmatch
        if fmt.grouping:
            table: dict = dict.fromkeys(_GROUP_LITERALS[fmt.grouping])
            table[fmt.decimal] = "."
        else:  # without grouping, the one mark a number holds is its decimal mark
            table = {",": "."}
        self.table = str.maketrans(table)
        self.point = fmt.decimal == "."

    def parse(self, text: str) -> tuple[float, str] | None:
        """The value and unit of ``text``, or None when it is no number (the regular expression alone)."""
        m = self.match(text)
        if m is None:
            return None
        _, sign, _, sign2, a, _, b, plus, gap, unit = m.groups()
        if unit and not gap and unit[0].isalpha():
            first = _UNIT_WORD(unit)[0]
            if len(first) < 2 or first.lower() in _ORDINALS:
                return None  # 1st, 12A: an ordinal or a code, not a number with a unit
        if b is not None:
            if sign or sign2 or plus or _LEADING_ZERO(a) or _LEADING_ZERO(b):
                return None
            low, high = float(a.translate(self.table)), float(b.translate(self.table))
            if low > high:
                return None  # 2011-5, 5-2: a date or a code rather than a range
            value = (low + high) / 2
        else:
            if sign and sign2:
                return None
            value = float(a.translate(self.table))
            if (sign or sign2 or "").strip() in ("-", "−"):
                value = -value
        if not -_F32_MAX <= value <= _F32_MAX:
            return None
        return value, (unit or "").strip().lower()

    def read(self, value) -> float:
        """:func:`read_text_number` in this format."""
        if type(value) is not str:
            return to_number(value)
        if value.isascii() and "_" not in value and (self.point or "." not in value):
            try:  # float() first: where it reads a 32-bit number, parse reads the same
                f = float(value if self.point else value.replace(",", "."))
            except ValueError:
                pass
            else:
                if -_F32_MAX <= f <= _F32_MAX:
                    return f
        got = self.parse(value)
        return _NAN if got is None else got[0]


_GRAMMARS: dict[NumberFormat, _Grammar] = {}


def _grammar(fmt: NumberFormat) -> _Grammar:
    grammar = _GRAMMARS.get(fmt)
    if grammar is None:
        grammar = _GRAMMARS[fmt] = _Grammar(fmt)
    return grammar


def parse_text_number(text: str, fmt: NumberFormat) -> TextNumber | None:
    """``text`` read in the grammar of this module with ``fmt``, or None when it is no number there
    (missing-value words such as ``NA`` included; values beyond 32-bit floats too).

    >>> parse_text_number("2 BHK", NumberFormat())
    TextNumber(value=2.0, unit='bhk')
    >>> parse_text_number("1st", NumberFormat()) is None, parse_text_number("2011-05-09", NumberFormat()) is None
    (True, True)
    """
    got = _grammar(fmt).parse(text)
    return None if got is None else TextNumber(*got)


def read_text_number(value, fmt: NumberFormat) -> float:
    """One value of a column with number format ``fmt`` as a float: NaN for a missing value and for text
    that is no number in this grammar; a value that is not text is read by
    :func:`~edgeml_runtime.cells.to_number` (a boolean or a nested value stays a row error).

    >>> read_text_number("1,234,567", NumberFormat(".", ",")), read_text_number("1,5", NumberFormat(",", ""))
    (1234567.0, 1.5)
    >>> read_text_number(7, NumberFormat()), read_text_number("n/a-ish", NumberFormat())
    (7.0, nan)
    """
    return _grammar(fmt).read(value)


def text_reader(fmt: NumberFormat) -> Callable:
    """:func:`read_text_number` for one format, as a one-argument function (what the encoder's paths take)."""
    return _grammar(fmt).read
