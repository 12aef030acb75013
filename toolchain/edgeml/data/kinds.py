"""Decide what kind of model input one column is, or why it cannot be one.

:func:`classify_column` judges a column on its own, applying these rules in
order (the first that matches wins) to the column's *present* values, those
neither missing nor blank (empty or whitespace-only text):

1. **empty**: no present value. Dropped.
2. **constant**: at most one distinct present value. Dropped.
3. **boolean**: a bool dtype, or text whose present values are exactly two
   words, one true and one false, from :data:`TRUE_WORDS` / :data:`FALSE_WORDS`
   (case-insensitive, stripped). A 0/1 integer column stays numeric.
4. **datetime**: a datetime64 dtype.
5. **numeric**: a numeric dtype, or text of which at least :data:`NUMERIC_SHARE`
   parses as numbers (blanks there become missing values, not a category), by
   the device's own number grammar (:func:`edgeml_runtime.features.read_numbers`:
   ASCII digits, no ``_``), so that a column is numeric exactly when a device
   reads its values as numbers. If some of its values are not plain numbers,
   the column gets a number format and those values are read as numbers
   written as text, or become missing values, with a note
   (:func:`edgeml.data.numbers.read_plain`). An
   integer-valued one may still be an *identifier* (rule 7); a column with
   fractional values never is.
6. **datetime**: text of which at least :data:`DATETIME_SHARE` of a sample,
   and of the whole column, reads as dates with one date order, by the
   device's own date grammar (:mod:`edgeml_runtime.dates`: ISO 8601,
   ``dd-mm-yyyy``, ``mm/dd/yyyy``, month names; never plain numbers); the
   order, and the parts the model gets, are decided from the values
   (:mod:`edgeml.data.dates`). A datetime column whose dates leave no part
   that varies (only an ever-increasing year) is dropped.
6b. **numeric**: text of which at least :data:`~edgeml.data.numbers.TEXT_NUMBER_SHARE`
   reads as numbers written as text (``1.200,5``, ``$30``, ``2 BHK``, ``1200 - 1500``)
   in one number format chosen from the values (:func:`edgeml.data.numbers.read_text`);
   the rest become missing values, with a note. Then rule 7 as for rule 5.
7. **identifier**: text or integer-valued numbers whose distinct values are at
   least :data:`IDENTIFIER_SHARE` of at least :data:`IDENTIFIER_MIN_ROWS`
   present rows, or integers counting up by exactly 1 row after row. Dropped.
8. **categorical**: any other text.

Each rule is one small public function, so that the table-level inference in
:mod:`edgeml.data.schema` can reuse the same tests for the label and the time column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api import types

from edgeml.data.dates import choose_parts, read_dates
from edgeml.data.numbers import ReadNumbers, read_plain, read_text
from edgeml.errors import DataError
from edgeml_runtime.features import read_numbers
from edgeml_runtime.schema import NumberFormat

__all__ = [
    "Dropped",
    "Judged",
    "classify_column",
    "judge_column",
    "constant_reason",
    "device_numbers",
    "identifier_reason",
    "is_blank",
    "is_boolean",
    "is_datetime_text",
    "parse_numbers",
    "present_values",
]

#: Share of a text column's present values that must parse as numbers for it to be numeric.
NUMERIC_SHARE = 0.97
#: Share of a text column's sampled (and of all its) present values that must read as dates with one order.
DATETIME_SHARE = 0.97
#: How many present values the datetime test looks at (evenly spaced through the column).
DATETIME_SAMPLE = 1000
#: Distinct values / present rows at or above which a text or integer column is an identifier.
IDENTIFIER_SHARE = 0.95
#: Fewer present rows than this and the distinct-share identifier rule does not apply.
IDENTIFIER_MIN_ROWS = 20
#: Fewer present rows than this and an integer run 1, 2, 3... is not called a row counter.
COUNTER_MIN_ROWS = 3

#: More distinct spellings than this and a text column is not yes/no.
_MAX_BOOLEAN_SPELLINGS = 64

TRUE_WORDS = frozenset({"true", "t", "yes", "y"})
FALSE_WORDS = frozenset({"false", "f", "no", "n"})


@dataclass(frozen=True)
class Dropped:
    """A column the model will not see, and why (shown to the user)."""

    name: str
    reason: str


@dataclass(frozen=True)
class Judged:
    """A column the model will take: its kind, how its text is written, and what the user should be told."""

    kind: str
    number_format: NumberFormat | None = None  #: numeric text not in the plain grammar (see InputColumn)
    date_order: str | None = None  #: datetime text not in ISO 8601 (see InputColumn)
    notes: tuple[str, ...] = ()  #: one line each, naming the column


# -- the rules, one small function each -----------------------------------------------------


def classify_column(series: pd.Series) -> str | Dropped:
    """The kind of ``series`` (one of ``KINDS``), or a :class:`Dropped` saying why it is unusable
    (:func:`judge_column` without the formats and notes).

    >>> import pandas as pd
    >>> classify_column(pd.Series(["Yes", "No", "no"], name="Partner"))
    'boolean'
    >>> classify_column(pd.Series(["29.85", " ", "1889.5"], name="TotalCharges"))
    'numeric'
    >>> classify_column(pd.Series([None, None], name="notes", dtype=object))
    Dropped(name='notes', reason='empty: no values')
    """
    judged = judge_column(series)
    return judged if isinstance(judged, Dropped) else judged.kind


def judge_column(series: pd.Series) -> Judged | Dropped:
    """What ``series`` is as a model input (the rules of this module, in order), or why it is unusable.

    >>> import pandas as pd
    >>> judge_column(pd.Series(["29.85", " ", "1889.5"], name="TotalCharges"))
    Judged(kind='numeric', number_format=None, date_order=None, notes=())
    """
    name = str(series.name)
    present = present_values(series)
    if present.empty:
        return Dropped(name, "empty: no values")
    _refuse_nested(present)
    if reason := constant_reason(present, missing=len(series) - len(present)):
        return Dropped(name, reason)
    if is_boolean(present):
        return Judged("boolean")
    if types.is_datetime64_any_dtype(present.dtype):
        return _dates_judged(present, None)
    numbers = read_plain(present, NUMERIC_SHARE)
    if numbers is not None:
        return _numeric_verdict(name, numbers)
    if (reading := read_dates(present, DATETIME_SHARE, DATETIME_SAMPLE)) is not None:
        return _dates_judged(present, reading.order, reading.notes)
    numbers = read_text(present)
    if numbers is not None:
        return _numeric_verdict(name, numbers)
    reason = identifier_reason(present)
    return Dropped(name, reason) if reason else Judged("categorical")


def _numeric_verdict(name: str, read: ReadNumbers) -> Judged | Dropped:
    """A column read as numbers: numeric with its number format and notes, unless its numbers identify rows."""
    reason = identifier_reason(read.numbers)
    return Dropped(name, reason) if reason else Judged("numeric", read.number_format, notes=read.notes)


def is_blank(series: pd.Series) -> pd.Series:
    """True where a text value is empty or whitespace only (never for numbers or missing values).

    >>> import pandas as pd
    >>> is_blank(pd.Series(["a", " ", "", None])).tolist()
    [False, True, True, False]
    """
    if not _is_text(series.dtype):
        return pd.Series(False, index=series.index)
    if isinstance(series.dtype, pd.StringDtype):
        return series.str.strip().eq("").fillna(False).astype(bool)
    return series.map(lambda v: isinstance(v, str) and not v.strip()).astype(bool)


def present_values(series: pd.Series) -> pd.Series:
    """The values of ``series`` that are neither missing nor blank, in order."""
    return series[series.notna() & ~is_blank(series)]


def constant_reason(present: pd.Series, missing: int = 0) -> str | None:
    """Why a column with at most one distinct present value is dropped, else None.

    >>> import pandas as pd
    >>> constant_reason(pd.Series(["x", "x"]), missing=3)
    "constant: every value is 'x' (3 missing)"
    >>> constant_reason(pd.Series([1, 2])) is None
    True
    """
    if present.nunique() > 1:
        return None
    note = f" ({missing} missing)" if missing else ""
    return f"constant: every value is {show_value(present.iloc[0])}{note}"


def is_boolean(present: pd.Series) -> bool:
    """True for a bool dtype, or text with exactly two words, one from each of TRUE_WORDS and FALSE_WORDS.

    >>> import pandas as pd
    >>> is_boolean(pd.Series(["Yes", "No", " yes"])), is_boolean(pd.Series([0, 1]))
    (True, False)
    """
    if types.is_bool_dtype(present.dtype):
        return present.nunique() == 2
    if not _is_text(present.dtype):
        return False
    spellings = present.unique()  # few for a yes/no column; normalise those, not every row
    if len(spellings) > _MAX_BOOLEAN_SPELLINGS:
        return False
    words = {str(v).strip().lower() for v in spellings}
    return len(words) == 2 and bool(words & TRUE_WORDS) and bool(words & FALSE_WORDS)


def parse_numbers(present: pd.Series, share: float = NUMERIC_SHARE) -> pd.Series | None:
    """The values as float64 when the column is numeric (see rule 5), else None; unparsable values are left out.

    >>> import pandas as pd
    >>> parse_numbers(pd.Series(["1", "2.5", "x"]), share=0.5).tolist()
    [1.0, 2.5]
    >>> parse_numbers(pd.Series(["1", "x"])) is None
    True
    """
    read = read_plain(present, share)
    return None if read is None else read.numbers


def is_datetime_text(present: pd.Series) -> bool:
    """True when text values read as dates with one date order (see rule 6); plain numbers never do.

    >>> import pandas as pd
    >>> is_datetime_text(pd.Series(["2024-03-01", "2024-03-02T10:15:00+01:00"]))
    True
    >>> is_datetime_text(pd.Series(["13/06/2020", "06/13/2020"])), is_datetime_text(pd.Series(["2024", "2025"]))
    (False, False)
    """
    return read_dates(present, DATETIME_SHARE, DATETIME_SAMPLE) is not None


def _dates_judged(present: pd.Series, order: str | None, notes: tuple[str, ...] = ()) -> Judged | Dropped:
    """A datetime column with its date order and notes, or dropped when no part of its dates varies usefully."""
    chosen = choose_parts(present, order)
    if not chosen.parts:
        return Dropped(str(present.name), chosen.reason)
    return Judged("datetime", date_order=order, notes=notes + chosen.notes)


def identifier_reason(present: pd.Series) -> str | None:
    """Why a column looks like a row identifier (see rule 7), else None.

    >>> import pandas as pd
    >>> identifier_reason(pd.Series([f"C{i:04}" for i in range(40)]))
    'identifier: 40 unique values in 40 rows'
    >>> identifier_reason(pd.Series([7.0, 8.0, 9.0]))
    'identifier: counts up by 1 from 7 to 9'
    >>> identifier_reason(pd.Series([i + 0.5 for i in range(40)])) is None
    True
    """
    rows = len(present)
    numeric = types.is_numeric_dtype(present.dtype) and not types.is_bool_dtype(present.dtype)
    if numeric:
        values = present.to_numpy(dtype="float64")
        if not integer_valued(values):
            return None  # fractional values: a measurement, unique per row by nature
    if rows >= IDENTIFIER_MIN_ROWS:
        unique = present.nunique()
        if unique >= IDENTIFIER_SHARE * rows:
            return f"identifier: {unique} unique values in {rows} rows"
    if numeric and rows >= COUNTER_MIN_ROWS and np.all(np.diff(values) == 1):
        return f"identifier: counts up by 1 from {int(values[0])} to {int(values[-1])}"
    return None

# -- helpers ---------------------------------------------------------------------------------


def _refuse_nested(present: pd.Series) -> None:
    if present.dtype != object:
        return
    nested = present[present.map(lambda v: isinstance(v, (dict, list, tuple, set)))]
    if not nested.empty:
        raise DataError(
            f"column {present.name!r} holds nested values (e.g. {show_value(nested.iloc[0])}), which cannot be "
            f"a model input; flatten it into plain columns, or leave it out with --drop {present.name!r}"
        )


def _is_text(dtype) -> bool:
    return not (
        types.is_numeric_dtype(dtype)
        or types.is_bool_dtype(dtype)
        or types.is_datetime64_any_dtype(dtype)
        or types.is_timedelta64_dtype(dtype)
    )


def _sample(values: pd.Series, size: int = DATETIME_SAMPLE) -> pd.Series:
    """At most ``size`` values, evenly spaced through ``values`` (deterministic)."""
    step = max(1, len(values) // size)
    return values.iloc[::step].iloc[:size]


def _share_of_numbers(values: pd.Series) -> float:
    parsed = device_numbers(values.astype(str))
    return float(parsed.notna().mean()) if len(values) else 0.0


def device_numbers(text: pd.Series) -> pd.Series:
    """Text values as float64 the way a device reads them (NaN where it reads no number, or a missing one).

    >>> import pandas as pd
    >>> device_numbers(pd.Series([" 2.5", "1_551", "١٢", "1e3"])).tolist()
    [2.5, nan, nan, 1000.0]
    """
    return pd.Series(read_numbers(text.tolist())[0], index=text.index, dtype="float64")


def integer_valued(values: np.ndarray) -> bool:
    """True when every value is a finite whole number (also used by the label check in :mod:`edgeml.data.schema`)."""
    return bool(np.all(np.isfinite(values)) and np.all(values == np.floor(values)))


def show_value(value) -> str:
    """A value as a user would write it in a message: text quoted, numbers plain (never ``np.float64(1.5)``)."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, np.generic):
        value = value.item()
    return str(value)
