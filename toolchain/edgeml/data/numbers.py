"""Decide whether a text column holds numbers, and in which number format a device must read them.

Two rules of :func:`edgeml.data.kinds.judge_column` live here, both reading values with the device's own
code (:func:`edgeml_runtime.features.read_numbers`), so that what the host trains on is what a device reads:

- :func:`read_plain` (rule 5): a column is numeric when at least ``share`` (97 %) of its present values
  are plain numbers. If some of its values are not, the column gets a :class:`NumberFormat` (decimal ".",
  grouping only if its values show one), so that those values are read by the text grammar of
  :mod:`edgeml_runtime.textnumbers` (``2100 - 2850`` is its midpoint) or become missing values, on the
  host and on a device alike, with a note naming them. Before, one such value stopped the build.
- :func:`read_text` (after the datetime rule): a text column is numeric when at least
  :data:`TEXT_NUMBER_SHARE` of its present values read as numbers in ONE format, chosen by
  :func:`choose_format` from locale evidence; the rest become missing values, with a note.
  90 % because such columns are typed by people (a survey's "years of experience": ``1,5``,
  ``less than year``, ``~25``): a few answers in words should not make a measure a category, while a
  column of which one value in ten is a word is more than a measure with typos.

A real category does not pass: the grammar refuses ordinals and codes (``1st``, ``A1``, ``12A``,
``Type 2``) and sizes (``S``/``M``/``L``) have no digits; a column whose values carry more than
:data:`MAX_UNITS` different unit words (``3 apples``, ``2 pears``...) names things, and stays text.

Example:

>>> import pandas as pd
>>> read = read_text(pd.Series(["1.200,5", "3,5", "€ 40", "nicht bekannt"] + ["7,25"] * 20, name="Preis"))
>>> read.number_format, read.values.tolist()[:4]
(NumberFormat(decimal=',', grouping='.'), [1200.5, 3.5, 40.0, nan])
>>> print(read.notes[0].replace("; ", ";\\n"))
column 'Preis': read as numbers written as text (decimal ',', grouping '.');
1 value that is no number becomes missing: 'nicht bekannt'

"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api import types

from edgeml_runtime.cells import NA_TOKENS
from edgeml_runtime.features import few, read_numbers
from edgeml_runtime.schema import NumberFormat
from edgeml_runtime.textnumbers import parse_text_number

__all__ = ["MAX_UNITS", "TEXT_NUMBER_SHARE", "ReadNumbers", "choose_format", "read_plain", "read_text"]

#: Share of a text column's present values (missing-value words aside) that must read in one number format.
TEXT_NUMBER_SHARE = 0.90
#: More distinct unit words than this after the numbers, and a column names things rather than measures them.
MAX_UNITS = 4
#: Values looked at before reading a whole column (evenly spaced): most text columns are refused on these.
SAMPLE = 1000

_DIGITS = re.compile(r"[0-9]+(?:[.,'’\u00a0\u202f ][0-9]+)*")


@dataclass(frozen=True)
class ReadNumbers:
    """A column read as numbers: its format (None for plain numbers), each present value as float64 (NaN
    where missing), and what the user should be told."""

    number_format: NumberFormat | None
    values: pd.Series
    notes: tuple[str, ...] = ()

    @property
    def numbers(self) -> pd.Series:
        """The values that are numbers (what the identifier rule looks at)."""
        return self.values.dropna()


def read_plain(present: pd.Series, share: float, name: str | None = None) -> ReadNumbers | None:
    """``present`` read as numbers when at least ``share`` of it are plain numbers (missing-value words such
    as ``NA`` aside), else None; the rest as :func:`read_text` would read them, with a note.

    >>> import pandas as pd
    >>> read = read_plain(pd.Series(["1200", "1350.5", "2100 - 2850", "ask"] * 10, name="area"), share=0.5)
    >>> read.number_format, read.values.tolist()[:4]
    (NumberFormat(decimal='.', grouping=''), [1200.0, 1350.5, 2475.0, nan])
    >>> read_plain(pd.Series(["1", "2.5", "NA"]), share=0.97).number_format is None
    True
    """
    name = str(present.name) if name is None else name
    if types.is_bool_dtype(present.dtype) or types.is_datetime64_any_dtype(present.dtype):
        return None
    if types.is_numeric_dtype(present.dtype):
        return ReadNumbers(None, present.astype("float64"))
    if not _is_text(present.dtype) or present.empty or _plain_share(_sample(present)) < 0.5:
        return None  # plainly text (half of an evenly spaced sample is no number): skip reading every row
    texts = present.astype(str).tolist()
    x, bad = read_numbers(texts)
    counted = ~np.isnan(x)  # numbers, and below the unreadable; the rest the device reads as missing (NA, nan)
    counted[list(bad)] = True
    if not counted.any() or (~np.isnan(x[counted])).mean() < share:
        return None
    if not bad:
        return ReadNumbers(None, pd.Series(x, index=present.index))
    unread = [texts[i] for i in sorted(bad)]
    fmt, ambiguous = choose_format(unread, decimal=".")
    y = read_numbers(texts, fmt)[0]
    lost = [t for t, v in zip(unread, y[sorted(bad)], strict=True) if np.isnan(v)]
    gone = set(lost)
    read = [t for t in unread if t not in gone]
    note = (f"column {name!r}: {len(bad)} value{_s(len(bad))} not written as plain numbers; read as numbers "
            f"written as text ({describe(fmt)})")
    if read:
        note += f": {len(read)} such as {', '.join(map(repr, _distinct(read)[:3]))}"
    note += _lost(lost)
    return ReadNumbers(fmt, pd.Series(y, index=present.index), (note,) + ambiguous)


def read_text(present: pd.Series, share: float = TEXT_NUMBER_SHARE, name: str | None = None) -> ReadNumbers | None:
    """``present`` (text that is not plain numbers) read as numbers written as text, when at least ``share``
    of it (missing-value words aside) reads in the one format :func:`choose_format` picks; else None.

    >>> import pandas as pd
    >>> read_text(pd.Series(["2 BHK", "3 BHK", "1 BHK", "4 BHK"], name="size")).values.tolist()
    [2.0, 3.0, 1.0, 4.0]
    >>> read_text(pd.Series(["1st", "2nd", "3rd", "4th"], name="floor")) is None
    True
    """
    name = str(present.name) if name is None else name
    if not _is_text(present.dtype) or present.empty:
        return None
    sample = _sample(present).astype(str).tolist()
    fmt, _ = choose_format(sample)
    if _read_share(sample, fmt) < min(share, 0.5):
        return None  # plainly text: skip reading every row
    texts = present.astype(str).tolist()
    fmt, ambiguous = choose_format(texts)
    x = read_numbers(texts, fmt)[0]
    counted = np.array([t.strip().lower() not in NA_TOKENS for t in texts])
    if not counted.any() or (~np.isnan(x[counted])).mean() < share:
        return None
    units = _units(texts, fmt)
    if len(units) > MAX_UNITS:
        return None
    lost = [t for t, v, c in zip(texts, x, counted, strict=True) if c and np.isnan(v)]
    note = f"column {name!r}: read as numbers written as text ({describe(fmt)})"
    if units:
        note += f", unit{_s(len(units))} {few(sorted(units), MAX_UNITS)} left out"
    note += _lost(lost)
    return ReadNumbers(fmt, pd.Series(x, index=present.index), (note,) + ambiguous)


def choose_format(texts: Sequence[str], decimal: str | None = None) -> tuple[NumberFormat, tuple[str, ...]]:
    """The number format ``texts`` are written in, from locale evidence, and a note when it was a guess.

    A value with both marks ends with its decimal mark (``1.200,5``); a mark that repeats groups digits
    (``1,234,567``); one mark followed by other than three digits is a decimal mark (``3,5``); one mark
    followed by exactly three digits (``1,200``) is ambiguous. The decimal mark is ``decimal`` when given,
    else the one more values show (on a tie "," if more values group with dots than with commas, else ".").
    The grouping is the separator values show grouping, else the other mark when ambiguous values hold
    it: ``1,200`` is 1200 when nothing shows a decimal comma (with a note, as it was a guess), and
    ``1.200`` is 1200 beside decimal commas.

    >>> choose_format(["1,200", "3,5"])[0], choose_format(["1.200", "1.200,5"])[0]
    (NumberFormat(decimal=',', grouping=''), NumberFormat(decimal=',', grouping='.'))
    >>> fmt, notes = choose_format(["1,200", "2,500"])
    >>> fmt, notes[0][:39]
    (NumberFormat(decimal='.', grouping=','), "values such as '1,200' are read as 1200")
    """
    decimals, groupings, ambiguous = Counter(), Counter(), Counter()
    examples: dict[str, str] = {}
    for text in dict.fromkeys(texts):
        m = _DIGITS.search(text)
        if m is None:
            continue
        for kind, mark in _evidence(m[0]):
            {"decimal": decimals, "grouping": groupings, "ambiguous": ambiguous}[kind][mark] += 1
            examples.setdefault(mark, text)
    if decimal is None:  # more decimal commas than points, or as many and more dots grouping (1.234.567)
        decimal = "," if (decimals[","] - decimals["."], groupings["."] - groupings[","]) > (0, 0) else "."
    other = "," if decimal == "." else "."
    grouping = next((g for g, _ in groupings.most_common() if g != decimal), "")
    notes: tuple[str, ...] = ()
    if not grouping and ambiguous[other]:
        grouping = other
        if decimal == "." and not decimals["."]:
            notes = (f"values such as {examples[other]!r} are read as {_grouped_example(examples[other])} "
                     f"({other!r} taken as a thousands separator, as nothing in the column shows a decimal comma); "
                     "if they are decimal numbers, write them with a decimal point",)
    return NumberFormat(decimal, grouping), notes


def read_label(labels: pd.Series) -> ReadNumbers | None:
    """A text label written as numbers the way :func:`read_text` reads an input column (``31,875``,
    ``1.200,5``, ``$30``), as float64, NaN where a value is no number; None when it is not such a label
    (plain numbers, which the task inference reads as they are, or text that is not numbers).

    A European spreadsheet writes its target with decimal commas like every other column; such a label is a
    measurement to regress on, not hundreds of one-row classes.

    >>> import pandas as pd
    >>> read = read_label(pd.Series(["31,875", "36,64", "n/a", "40,5"] * 10, name="strength"))
    >>> read.number_format, read.values.tolist()[:4]
    (NumberFormat(decimal=',', grouping=''), [31.875, 36.64, nan, 40.5])
    >>> read_label(pd.Series(["1.5", "2"])) is None, read_label(pd.Series(["red", "blue"] * 20)) is None
    (True, True)
    """
    present = labels.dropna()
    if not _is_text(present.dtype) or present.empty or read_plain(present, 1.0) is not None:
        return None
    read = read_text(present, name=str(labels.name))
    if read is None or read.number_format is None:
        return None
    unread = read.values.isna()
    note = f"label {labels.name!r}: read as numbers written as text ({describe(read.number_format)})"
    if unread.any():
        note += (f"; {_rows_dropped(int(unread.sum()))} whose label is no number, such as "
                 f"{present[unread].iloc[0]!r}, left out")
    return ReadNumbers(read.number_format, read.values.reindex(labels.index), (note,))


def _rows_dropped(n: int) -> str:
    return f"{n} row{_s(n)}"


def read_label_as(labels: pd.Series, fmt: NumberFormat) -> pd.Series:
    """``labels`` read in ``fmt`` (what :func:`read_label` chose), float64, NaN where a value is no number."""
    return pd.Series(read_numbers(labels.astype(str).tolist(), fmt)[0], index=labels.index, dtype="float64")


def describe(fmt: NumberFormat) -> str:
    """A number format in words.

    >>> describe(NumberFormat(",", ".")), describe(NumberFormat())
    ("decimal ',', grouping '.'", "decimal '.', no grouping")
    """
    return f"decimal {fmt.decimal!r}, " + (f"grouping {fmt.grouping!r}" if fmt.grouping else "no grouping")


# -- helpers ---------------------------------------------------------------------------------


def _evidence(digits: str):
    """(kind, mark) pairs for one run of digits and separators: what it says about the format."""
    marks = [c for c in digits if not c.isdigit()]
    if not marks:
        return
    spaces = [c for c in marks if c in " \u00a0\u202f"]
    if spaces:
        yield "grouping", " "
    if "'" in marks or "’" in marks:
        yield "grouping", "'"
    dots, commas = marks.count("."), marks.count(",")
    if dots and commas:
        last = "," if digits.rfind(",") > digits.rfind(".") else "."
        yield "decimal", last
        yield "grouping", "." if last == "," else ","
        return
    for mark, count in ((".", dots), (",", commas)):
        if count > 1:
            yield "grouping", mark
        elif count == 1:
            after = digits[digits.index(mark) + 1 :]
            run = len(after) - len(after.lstrip("0123456789"))
            yield ("ambiguous" if run == 3 else "decimal"), mark


def _grouped_example(text: str) -> str:
    m = _DIGITS.search(text)
    return re.sub(r"[^0-9]", "", m[0]) if m else text


def _units(texts: Sequence[str], fmt: NumberFormat) -> set[str]:
    units = set()
    for text in set(texts):
        read = parse_text_number(text, fmt)
        if read is not None and read.unit:
            units.add(read.unit[:-1] if read.unit.endswith("s") and len(read.unit) > 3 else read.unit)
    return units


def _read_share(texts: list[str], fmt: NumberFormat) -> float:
    present = [t for t in texts if t.strip().lower() not in NA_TOKENS]
    if not present:
        return 0.0
    return float((~np.isnan(read_numbers(present, fmt)[0])).mean())


def _plain_share(values: pd.Series) -> float:
    return float((~np.isnan(read_numbers(values.astype(str).tolist())[0])).mean()) if len(values) else 0.0


def _sample(values: pd.Series, size: int = SAMPLE) -> pd.Series:
    step = max(1, len(values) // size)
    return values.iloc[::step].iloc[:size]


def _distinct(texts: list[str]) -> list[str]:
    return list(dict.fromkeys(texts))


def _is_text(dtype) -> bool:
    return not (types.is_numeric_dtype(dtype) or types.is_bool_dtype(dtype)
                or types.is_datetime64_any_dtype(dtype) or types.is_timedelta64_dtype(dtype))


def _s(n: int, plural: str = "s") -> str:
    return "" if n == 1 else plural


def _lost(lost: list[str]) -> str:
    """The end of a note: how many values became missing, and a few of them."""
    if not lost:
        return ""
    n = len(lost)
    verbs = "value that is no number becomes" if n == 1 else "values that are no number become"
    shown = _distinct(lost)
    return f"; {n} {verbs} missing, such as {', '.join(map(repr, shown[:3]))}" if len(shown) > 3 else \
        f"; {n} {verbs} missing: {', '.join(map(repr, shown))}"
