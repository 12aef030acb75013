"""Infer what each column of a training table is, and what task its label asks for.

Each column is judged on its own by :func:`classify_column`, which applies
these rules in order (the first that matches wins) to the column's *present*
values, those neither missing nor blank (empty or whitespace-only text):

1. **empty**: no present value. Dropped.
2. **constant**: at most one distinct present value. Dropped.
3. **boolean**: a bool dtype, or text whose present values are exactly two
   words, one true and one false, from :data:`TRUE_WORDS` / :data:`FALSE_WORDS`
   (case-insensitive, stripped). A 0/1 integer column stays numeric.
4. **datetime**: a datetime64 dtype.
5. **numeric**: a numeric dtype, or text of which at least :data:`NUMERIC_SHARE`
   parses as numbers (blanks there become missing values, not a category). An
   integer-valued one may still be an *identifier* (rule 7); a column with
   fractional values never is.
6. **datetime**: text of which at least :data:`DATETIME_SHARE` of a sample
   parses as an ISO-8601 date or datetime and is not a plain number.
7. **identifier**: text or integer-valued numbers whose distinct values are at
   least :data:`IDENTIFIER_SHARE` of at least :data:`IDENTIFIER_MIN_ROWS`
   present rows, or integers counting up by exactly 1 row after row. Dropped.
8. **categorical**: any other text.

Only the kind and the feature names are decided here; categories, ranges and
missing rates are left at their defaults for the preprocessing step to fill in
from the training split.

Example:

>>> import pandas as pd
>>> frame = pd.DataFrame({
...     "when": ["2024-01-01 10:00", "2024-01-01 11:00", "2024-01-01 12:00", "2024-01-01 13:00"],
...     "temp [C]": ["21.5", " ", "22.0", "23.5"],
...     "site": ["a", "b", "a", "b"],
...     "fw": ["1.2", "1.2", "1.2", "1.2"],
...     "alarm": ["yes", "no", "no", "yes"],
... })
>>> schema = infer_schema(frame, "alarm")
>>> schema.task, [(c.name, c.kind) for c in schema.columns]
('classification', [('when', 'datetime'), ('temp [C]', 'numeric'), ('site', 'categorical')])
>>> schema.columns[0].features
('when__month', 'when__day', 'when__dayofweek', 'when__hour', 'when__minute')
>>> schema.notices
("dropped column 'fw' (constant: every value is '1.2')",)
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from edgeml_runtime.schema import DATETIME_PARTS, InputColumn, feature_name
from pandas.api import types

from .errors import DataError

__all__ = [
    "TASKS",
    "Dropped",
    "InferredSchema",
    "classify_column",
    "clean_labels",
    "infer_schema",
    "infer_task",
]

#: The tasks a model can be searched for.
TASKS = ("classification", "regression")

#: Share of a text column's present values that must parse as numbers for it to be numeric.
NUMERIC_SHARE = 0.97
#: Share of a text column's sampled present values that must parse as ISO-8601 dates.
DATETIME_SHARE = 0.97
#: How many present values the datetime test looks at (evenly spaced through the column).
DATETIME_SAMPLE = 1000
#: Distinct values / present rows at or above which a text or integer column is an identifier.
IDENTIFIER_SHARE = 0.95
#: Fewer present rows than this and the distinct-share identifier rule does not apply.
IDENTIFIER_MIN_ROWS = 20
#: Fewer present rows than this and an integer run 1, 2, 3... is not called a row counter.
COUNTER_MIN_ROWS = 3
#: An integer-valued label with at most this many distinct values is a class label.
MAX_INTEGER_CLASSES = 20

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
class InferredSchema:
    """What :func:`infer_schema` decided about a table."""

    label: str
    task: str  #: one of :data:`TASKS`
    columns: tuple[InputColumn, ...]  #: the model's inputs, in the frame's column order
    dropped: tuple[Dropped, ...]
    notices: tuple[str, ...]  #: one line each, to show the user
    time_column: str | None = None


def infer_schema(
    frame: pd.DataFrame,
    label: str,
    *,
    task: str | None = None,
    drop: Sequence[str] = (),
    time_column: str | None = None,
) -> InferredSchema:
    """Decide the task and the kind of every column; rows without a label are left out of the judgement.

    ``task`` overrides the inferred task; ``drop`` names columns to leave out;
    ``time_column`` (kept in the schema for a time-ordered split) must hold
    dates or numbers. Raises :class:`DataError` naming the column and the fix.

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"id": range(1, 31), "x": [i / 7 for i in range(30)], "y": [i % 3 for i in range(30)]})
    >>> schema = infer_schema(frame, "y")
    >>> schema.task, [c.name for c in schema.columns], schema.dropped
    ('classification', ['x'], (Dropped(name='id', reason='identifier: 30 unique values in 30 rows'),))
    """
    names = _column_names(frame)
    drop = [drop] if isinstance(drop, str) else list(dict.fromkeys(drop))
    _check_options(names, label, drop, time_column)
    missing = label_missing(frame[label])
    frame = frame[~missing]
    if frame.empty:
        raise DataError(f"label {label!r} has no values in any row; choose a label column that is filled in")
    if time_column is not None:
        _check_time_column(frame[time_column])
    task = infer_task(frame[label], task)
    columns, dropped = _judge_columns(frame, [n for n in names if n != label], drop)
    if not columns:
        reasons = "; ".join(f"{d.name!r}: {d.reason}" for d in dropped) or "the label is the only column"
        raise DataError(f"no column is left to learn {label!r} from ({reasons}); add input columns to the data")
    notices = [f"dropped column {d.name!r} ({d.reason})" for d in dropped]
    if n := int(missing.sum()):
        notices.insert(0, f"dropped {n} row{'s' if n != 1 else ''} with no value for label {label!r}")
    return InferredSchema(label, task, columns, dropped, tuple(notices), time_column=time_column)


def clean_labels(frame: pd.DataFrame, schema: InferredSchema) -> pd.DataFrame:
    """``frame`` without the rows whose label is missing or blank (the original index is kept).

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": ["a", None, " ", "b"]})
    >>> schema = InferredSchema(label="y", task="classification", columns=(), dropped=(), notices=())
    >>> clean_labels(frame, schema).index.tolist()
    [0, 3]
    """
    return frame[~label_missing(frame[schema.label])]


# -- the rules, one small function each -----------------------------------------------------


def classify_column(series: pd.Series) -> str | Dropped:
    """The kind of ``series`` (one of ``KINDS``), or a :class:`Dropped` saying why it is unusable.

    >>> import pandas as pd
    >>> classify_column(pd.Series(["Yes", "No", "no"], name="Partner"))
    'boolean'
    >>> classify_column(pd.Series(["29.85", " ", "1889.5"], name="TotalCharges"))
    'numeric'
    >>> classify_column(pd.Series([None, None], name="notes", dtype=object))
    Dropped(name='notes', reason='empty: no values')
    """
    name = str(series.name)
    present = present_values(series)
    if present.empty:
        return Dropped(name, "empty: no values")
    _refuse_nested(present)
    if reason := constant_reason(present, missing=len(series) - len(present)):
        return Dropped(name, reason)
    if is_boolean(present):
        return "boolean"
    if types.is_datetime64_any_dtype(present.dtype):
        return "datetime"
    numbers = parse_numbers(present)
    if numbers is not None:
        reason = identifier_reason(numbers)
        return Dropped(name, reason) if reason else "numeric"
    if is_datetime_text(present):
        return "datetime"
    reason = identifier_reason(present)
    return Dropped(name, reason) if reason else "categorical"


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


def label_missing(series: pd.Series) -> pd.Series:
    """True for the rows whose label is missing or blank: those rows cannot be learned from."""
    return series.isna() | is_blank(series)


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
    return f"constant: every value is {_show(present.iloc[0])}{note}"


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
    if types.is_bool_dtype(present.dtype) or types.is_datetime64_any_dtype(present.dtype):
        return None
    if types.is_numeric_dtype(present.dtype):
        return present.astype("float64")
    if not _is_text(present.dtype) or present.empty:
        return None
    if _share_of_numbers(_sample(present)) < 0.5:
        return None  # plainly text (half of an evenly spaced sample fails): skip parsing every row
    parsed = pd.to_numeric(present.astype(str).str.strip(), errors="coerce").astype("float64")
    if parsed.notna().mean() < share:
        return None
    return parsed.dropna()


def is_datetime_text(present: pd.Series) -> bool:
    """True when a sample of text values parses as ISO-8601 dates and they are not plain numbers.

    >>> import pandas as pd
    >>> is_datetime_text(pd.Series(["2024-03-01", "2024-03-02T10:15:00+01:00"]))
    True
    >>> is_datetime_text(pd.Series(["2024", "2025"]))
    False
    """
    if not _is_text(present.dtype) or present.empty:
        return False
    sample = _sample(present).astype(str).str.strip()
    try:
        dates = pd.to_datetime(sample, format="ISO8601", errors="coerce", utc=True).notna()
    except (ValueError, TypeError, OverflowError):
        return False
    plain_numbers = pd.to_numeric(sample, errors="coerce").notna()
    return bool((dates & ~plain_numbers).mean() >= DATETIME_SHARE)


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
        if not _integer_valued(values):
            return None  # fractional values: a measurement, unique per row by nature
    if rows >= IDENTIFIER_MIN_ROWS:
        unique = present.nunique()
        if unique >= IDENTIFIER_SHARE * rows:
            return f"identifier: {unique} unique values in {rows} rows"
    if numeric and rows >= COUNTER_MIN_ROWS and np.all(np.diff(values) == 1):
        return f"identifier: counts up by 1 from {int(values[0])} to {int(values[-1])}"
    return None


def infer_task(label: pd.Series, task: str | None = None) -> str:
    """Check ``task`` against the label's values, or infer it; the label must have no missing rows.

    Classification when the label is not numeric, is boolean, or is
    integer-valued with at most :data:`MAX_INTEGER_CLASSES` distinct values;
    regression otherwise.

    >>> import pandas as pd
    >>> infer_task(pd.Series([0, 1, 1, 0], name="failure")), infer_task(pd.Series([0.5, 1.5, 2.25], name="PE"))
    ('classification', 'regression')
    """
    name = label.name
    if task is not None and task not in TASKS:
        raise DataError(f"task {task!r} is not known; use --task classification or --task regression")
    distinct = label.nunique()
    if distinct < 2:
        raise DataError(
            f"label {name!r} has a single value ({_show(label.iloc[0])}) in all {len(label)} rows; "
            "a model needs at least two; check the label column"
        )
    boolean = is_boolean(label)
    numbers = None if boolean else parse_numbers(label, share=1.0)
    if task is None:
        integer = numbers is not None and _integer_valued(numbers.to_numpy(dtype="float64"))
        small = integer and distinct <= MAX_INTEGER_CLASSES
        task = "classification" if numbers is None or small else "regression"
    if task == "regression" and numbers is None:
        what = "is boolean" if boolean else "is not numeric"
        raise DataError(
            f"label {name!r} {what} (e.g. {_show(label.iloc[0])}), so it cannot be a regression target; "
            "use --task classification"
        )
    if task == "classification":
        _check_classes(label)
    return task


def column_features(name: str, kind: str, taken: set[str]) -> tuple[str, ...]:
    """The model input names for column ``name``: one, or one per datetime part.

    >>> column_features("Air temperature [K]", "numeric", set())
    ('Air_temperature_K',)
    """
    if kind == "datetime":
        return tuple(feature_name(name, taken, suffix=part) for part in DATETIME_PARTS)
    return (feature_name(name, taken),)


# -- checks and messages ----------------------------------------------------------------------


def _check_classes(label: pd.Series) -> None:
    counts = label.value_counts()
    rare = counts[counts < 2]
    if rare.empty:
        return
    shown = ", ".join(_show(v) for v in rare.index[:5])
    more = f" and {len(rare) - 5} more" if len(rare) > 5 else ""
    which = f"class {shown} has" if len(rare) == 1 else f"classes {shown}{more} have"
    raise DataError(
        f"label {label.name!r}: {which} only 1 row; every class needs at least 2 rows "
        "to be split into training and test data; remove or relabel those rows, "
        "or use --task regression if the label is a measurement"
    )


def _refuse_nested(present: pd.Series) -> None:
    if present.dtype != object:
        return
    nested = present[present.map(lambda v: isinstance(v, (dict, list, tuple, set)))]
    if not nested.empty:
        raise DataError(
            f"column {present.name!r} holds nested values (e.g. {_show(nested.iloc[0])}), which cannot be a model "
            f"input; flatten it into plain columns, or leave it out with --drop {present.name!r}"
        )


def _judge_columns(
    frame: pd.DataFrame, names: list[str], drop: list[str]
) -> tuple[tuple[InputColumn, ...], tuple[Dropped, ...]]:
    """The input columns (with unique feature names, in frame order) and the dropped ones."""
    columns: list[InputColumn] = []
    dropped: list[Dropped] = []
    taken: set[str] = set()
    for name in names:
        verdict = Dropped(name, "dropped by --drop") if name in drop else classify_column(frame[name])
        if isinstance(verdict, Dropped):
            dropped.append(verdict)
        else:
            features = column_features(name, verdict, taken)
            columns.append(InputColumn(name=name, kind=verdict, features=features, dtype=str(frame[name].dtype)))
    return tuple(columns), tuple(dropped)


def _check_options(names: list[str], label: str, drop: list[str], time_column: str | None) -> None:
    _require_column(label, names, "label", "--label")
    for name in drop:
        _require_column(name, names, "column to drop", "--drop")
    if label in drop:
        raise DataError(f"label {label!r} is also given to --drop; the label cannot be dropped, remove it from --drop")
    if time_column is not None:
        _require_column(time_column, names, "time column", "--time-column")


def _check_time_column(series: pd.Series) -> None:
    present = present_values(series)
    if present.empty:
        raise DataError(f"time column {series.name!r} has no values; choose a column of timestamps")
    if types.is_datetime64_any_dtype(present.dtype) or is_datetime_text(present):
        return
    if parse_numbers(present, share=1.0) is None:
        raise DataError(
            f"time column {series.name!r} holds neither ISO-8601 dates nor numbers (e.g. {_show(present.iloc[0])}); "
            "choose a column of timestamps, or leave --time-column out"
        )


def _column_names(frame: pd.DataFrame) -> list[str]:
    names = list(frame.columns)
    for position, name in enumerate(names):
        if not isinstance(name, str):
            raise DataError(
                f"column {position} is named {name!r} ({type(name).__name__}); column names must be text, "
                "give the table a header row"
            )
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise DataError(f"duplicate column names {', '.join(map(repr, dupes))}; rename them so every column is unique")
    return names


def _require_column(name: str, names: list[str], what: str, option: str) -> None:
    if name in names:
        return
    by_fold = {n.casefold(): n for n in names}
    close = [by_fold[m] for m in difflib.get_close_matches(name.casefold(), list(by_fold), n=3, cutoff=0.6)]
    close += [n for n in names if name.casefold() in n.casefold() and n not in close]
    hint = f"did you mean {', '.join(repr(n) for n in close[:3])}? " if close else ""
    listed = ", ".join(repr(n) for n in names[:8])
    more = f", ... ({len(names)} in all)" if len(names) > 8 else ""
    raise DataError(
        f"{what} {name!r} is not a column of the data; {hint}columns: {listed}{more}; "
        f"give the exact name to {option} (names are case-sensitive)"
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
    parsed = pd.to_numeric(values.astype(str).str.strip(), errors="coerce")
    return float(parsed.notna().mean()) if len(values) else 0.0


def _integer_valued(values: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(values)) and np.all(values == np.floor(values)))


def _show(value) -> str:
    """A value as a user would write it: text quoted, numbers plain (never ``np.float64(1.5)``)."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, np.generic):
        value = value.item()
    return str(value)
