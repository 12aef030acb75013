"""Infer what each column of a training table is, and what task its label asks for.

Each column is judged on its own by :func:`edgeml.data.kinds.classify_column`
(the rules are listed in :mod:`edgeml.data.kinds`); this module checks the options
against the table, leaves out the rows without a label, infers the task and
names the model's input features.

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
>>> schema.columns[0].features  # the parts of its dates that vary (see edgeml.data.dates)
('when__hour', 'when__hour_sin', 'when__hour_cos')
>>> schema.notices
("dropped column 'fw' (constant: every value is '1.2')",)
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from pandas.api import types

from edgeml.data.dates import choose_parts
from edgeml.data.kinds import (
    Dropped,
    Judged,
    integer_valued,
    is_blank,
    is_boolean,
    is_datetime_text,
    judge_column,
    parse_numbers,
    present_values,
    show_value,
)
from edgeml.data.numbers import read_label, read_label_as
from edgeml.errors import DataError
from edgeml_runtime.headers import clean_name
from edgeml_runtime.schema import DATETIME_PARTS, InputColumn, NumberFormat, feature_name

__all__ = [
    "TASKS",
    "InferredSchema",
    "clean_labels",
    "infer_schema",
    "infer_task",
    "rare_classes",
    "rare_note",
    "tidy_labels",
]

#: The tasks a model can be searched for.
TASKS = ("classification", "regression")

#: An integer-valued label with at most this many distinct values is a class label.
MAX_INTEGER_CLASSES = 20
#: The share of the labelled rows held out for validation, and again for testing (the split's default).
HOLDOUT_SHARE = 0.15


@dataclass(frozen=True)
class InferredSchema:
    """What :func:`infer_schema` decided about a table."""

    label: str
    task: str  #: one of :data:`TASKS`
    columns: tuple[InputColumn, ...]  #: the model's inputs, in the frame's column order
    dropped: tuple[Dropped, ...]
    notices: tuple[str, ...]  #: one line each, to show the user
    time_column: str | None = None
    label_format: NumberFormat | None = None  #: a regression label written as text numbers (decimal commas...)


def infer_schema(
    frame: pd.DataFrame,
    label: str,
    *,
    task: str | None = None,
    drop: Sequence[str] = (),
    time_column: str | None = None,
    unnamed: Sequence[str] = (),
) -> InferredSchema:
    """Decide the task and the kind of every column; rows without a label are left out of the judgement.

    ``task`` overrides the inferred task; ``drop`` names columns to leave out;
    ``time_column`` (kept in the schema for a time-ordered split) must hold
    dates or numbers. ``label``, ``drop`` and ``time_column`` name a column
    exactly or as the header rule reads it (:func:`edgeml_runtime.headers.clean_name`:
    ``"Position "`` finds ``Position``). ``unnamed`` are the columns whose
    header cell was empty (:attr:`edgeml.data.ingest.Table.unnamed`): a
    dropped one says so. Text labels are stripped of surrounding whitespace
    (:func:`tidy_labels`). Raises :class:`DataError` naming the column and the fix.

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"id": range(1, 31), "x": [i / 7 for i in range(30)], "y": [i % 3 for i in range(30)]})
    >>> schema = infer_schema(frame, "y")
    >>> schema.task, [c.name for c in schema.columns], schema.dropped
    ('classification', ['x'], (Dropped(name='id', reason='identifier: 30 unique values in 30 rows'),))
    """
    names = _column_names(frame)
    drop = [drop] if isinstance(drop, str) else list(dict.fromkeys(drop))
    label, drop, time_column = _check_options(names, label, drop, time_column)
    missing = label_missing(frame[label])
    frame = frame[~missing]
    if frame.empty:
        raise DataError(f"label {label!r} has no values in any row; choose a label column that is filled in")
    labels, label_notes = tidy_labels(frame[label])
    frame = frame.assign(**{label: labels}) if label_notes else frame
    numbers = read_label(frame[label]) if task != "classification" else None
    if numbers is not None:  # a label such as "31,875": a measurement, the rows whose label is no number left out
        frame = frame.assign(**{label: numbers.values})[numbers.values.notna()]
        label_notes += list(numbers.notes)
    if time_column is not None:
        _check_time_column(frame[time_column])
    task = infer_task(frame[label], task)
    columns, dropped, notes = _judge_columns(frame, [n for n in names if n != label], drop)
    dropped = tuple(_say_unnamed(d) if d.name in unnamed else d for d in dropped)
    if not columns:
        reasons = "; ".join(f"{d.name!r}: {d.reason}" for d in dropped) or "the label is the only column"
        raise DataError(f"no column is left to learn {label!r} from ({reasons}); add input columns to the data")
    notices = [f"dropped column {d.name!r} ({d.reason})" for d in dropped] + notes
    if n := int(missing.sum()):
        notices.insert(0, f"dropped {n} row{'s' if n != 1 else ''} with no value for label {label!r}")
    notices[:0] = label_notes
    return InferredSchema(label, task, columns, dropped, tuple(notices), time_column=time_column,
                          label_format=numbers.number_format if numbers is not None else None)


def clean_labels(frame: pd.DataFrame, schema: InferredSchema) -> pd.DataFrame:
    """``frame`` without the rows whose label is missing or blank (the original index is kept), its text labels
    stripped of surrounding whitespace as :func:`infer_schema` judged them (:func:`tidy_labels`).

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": ["a", None, " ", "b\t"]})
    >>> schema = InferredSchema(label="y", task="classification", columns=(), dropped=(), notices=())
    >>> clean = clean_labels(frame, schema)
    >>> clean.index.tolist(), clean["y"].tolist()
    ([0, 3], ['a', 'b'])
    """
    frame = frame[~label_missing(frame[schema.label])]
    if schema.label_format is not None:
        values = read_label_as(frame[schema.label], schema.label_format)
        return frame.assign(**{schema.label: values})[values.notna()]
    labels, changed = tidy_labels(frame[schema.label])
    return frame.assign(**{schema.label: labels}) if changed else frame


def tidy_labels(labels: pd.Series) -> tuple[pd.Series, list[str]]:
    """Text labels without surrounding whitespace, and a note on what that changed (none when nothing did).

    ``"positive"`` and ``"positive\\t"`` (a stray tab) are one class, never two.

    >>> import pandas as pd
    >>> tidy, notes = tidy_labels(pd.Series(["positive", "negative", "positive\\t", "positive"], name="target"))
    >>> tidy.tolist()
    ['positive', 'negative', 'positive', 'positive']
    >>> print(notes[0])
    label 'target': 'positive\\t' (1 row) is class 'positive': surrounding whitespace is not part of a label
    """
    if labels.dtype != object and not isinstance(labels.dtype, pd.StringDtype):
        return labels, []
    spellings = pd.unique(labels)
    stripped = {v: v.strip() for v in spellings if isinstance(v, str) and v != v.strip()}
    if not stripped:
        return labels, []
    tidy = labels.map(lambda v: stripped.get(v, v) if isinstance(v, str) else v)
    counts = labels.value_counts()
    kept = set(spellings) - set(stripped)
    merged = [f"{v!r} ({_rows(counts[v])}) is class {s!r}" for v, s in stripped.items() if s in kept]
    alone = [v for v, s in stripped.items() if s not in kept]
    notes = []
    if merged:
        more = f" and {len(merged) - 5} more" if len(merged) > 5 else ""
        notes.append(f"label {labels.name!r}: {', '.join(merged[:5])}{more}: surrounding whitespace is not part "
                     "of a label")
    if alone:
        notes.append(f"label {labels.name!r}: surrounding whitespace removed from {len(alone)} class name(s), "
                     f"e.g. {alone[0]!r} is {stripped[alone[0]]!r}")
    return tidy, notes


def rare_classes(labels: pd.Series, share: float = HOLDOUT_SHARE) -> pd.Series:
    """The row counts of the classes too rare for a stratified split, rarest first: those with fewer rows than
    it takes to give the validation and the test split (``share`` of the rows each) one row of theirs on average.

    The split keeps all their rows in training (:func:`edgeml.data.preprocess.split_frame`), with a note.

    >>> import pandas as pd
    >>> rare_classes(pd.Series(["a"] * 40 + ["b"] * 7 + ["c"] * 6 + ["d"] * 2)).to_dict()
    {'d': 2, 'c': 6}
    """
    counts = labels.value_counts(sort=False)
    return counts[counts * share < 1].sort_values(kind="stable")


def label_missing(series: pd.Series) -> pd.Series:
    """True for the rows whose label is missing or blank: those rows cannot be learned from."""
    return series.isna() | is_blank(series)


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
            f"label {name!r} has a single value ({show_value(label.iloc[0])}) in all {len(label)} rows; "
            "a model needs at least two; check the label column"
        )
    boolean = is_boolean(label)
    numbers = None if boolean else parse_numbers(label, share=1.0)
    if task is None:
        integer = numbers is not None and integer_valued(numbers.to_numpy(dtype="float64"))
        small = integer and distinct <= MAX_INTEGER_CLASSES
        task = "classification" if numbers is None or small else "regression"
    if task == "regression" and numbers is None:
        what = "is boolean" if boolean else "is not numeric"
        raise DataError(
            f"label {name!r} {what} (e.g. {show_value(label.iloc[0])}), so it cannot be a regression target; "
            "use --task classification"
        )
    if task == "classification":
        _check_classes(label)
    return task


def column_features(name: str, kind: str, taken: set[str], parts: Sequence[str] = DATETIME_PARTS) -> tuple[str, ...]:
    """The model input names for column ``name``: one, or one per datetime part in ``parts``.

    >>> column_features("Air temperature [K]", "numeric", set())
    ('Air_temperature_K',)
    >>> column_features("when", "datetime", set(), ("month", "hour_sin"))
    ('when__month', 'when__hour_sin')
    """
    if kind == "datetime":
        return tuple(feature_name(name, taken, suffix=part) for part in parts)
    return (feature_name(name, taken),)


def input_column(series: pd.Series, judged: Judged, taken: set[str]) -> tuple[InputColumn, tuple[str, ...]]:
    """The input column for ``series`` as judged, with unique feature names, and the notes to show about it.

    A datetime column gets the parts of its dates that vary in ``series``
    (:func:`edgeml.data.dates.choose_parts`).
    """
    name = str(series.name)
    parts = choose_parts(series, judged.date_order).parts if judged.kind == "datetime" else ()
    features = column_features(name, judged.kind, taken, parts)
    column = InputColumn(name=name, kind=judged.kind, features=features, dtype=str(series.dtype),
                         number_format=judged.number_format, date_order=judged.date_order, parts=parts)
    return column, judged.notes


# -- checks and messages ----------------------------------------------------------------------


def _check_classes(label: pd.Series) -> None:
    """Refuse a label most of whose classes have a single row: a measurement (or free text), not classes.

    A few rare classes are fine: their rows stay in training (:func:`rare_classes`, with a note).
    """
    counts = label.value_counts()
    single = counts[counts < 2]
    if len(single) * 2 <= len(counts):
        return
    shown = ", ".join(show_value(v) for v in single.index[:5])
    more = f" and {len(single) - 5} more" if len(single) > 5 else ""
    raise DataError(
        f"label {label.name!r}: classes {shown}{more} have only 1 row, {len(single)} of the {len(counts)} classes: "
        "a class needs rows to learn from and to test on; use --task regression if the label is a measurement, "
        "or merge the rare classes"
    )


def rare_note(rare: pd.Series, share: float = HOLDOUT_SHARE) -> str:
    """The note for the classes of :func:`rare_classes` that the split kept in training.

    >>> import pandas as pd
    >>> rare_note(pd.Series({9: 5}))
    'class 9 (5 rows) is too rare for a stratified split (fewer than 7 rows): its rows are all used for training, \
none to validate or test on, so the test metrics do not measure it'
    """
    shown = ", ".join(f"{show_value(v)} ({_rows(n)})" for v, n in rare.iloc[:5].items())
    more = f" and {len(rare) - 5} more" if len(rare) > 5 else ""
    one = len(rare) == 1
    return (f"class{'' if one else 'es'} {shown}{more} {'is' if one else 'are'} too rare for a stratified split "
            f"(fewer than {_fewest(share)} rows): {'its' if one else 'their'} rows are all used for training, "
            f"none to validate or test on, so the test metrics do not measure {'it' if one else 'them'}")


def _fewest(share: float = HOLDOUT_SHARE) -> int:
    """The fewest rows a class needs not to be rare (:func:`rare_classes`)."""
    return math.ceil(1 / share)


def _rows(n: int) -> str:
    return f"{n} row{'s' if n != 1 else ''}"


def _say_unnamed(dropped: Dropped) -> Dropped:
    """``dropped`` saying that its header cell was empty (most often a DataFrame's index written out)."""
    return Dropped(dropped.name, f"unnamed in the header, most likely a saved row index; {dropped.reason}")


def _judge_columns(
    frame: pd.DataFrame, names: list[str], drop: list[str]
) -> tuple[tuple[InputColumn, ...], tuple[Dropped, ...], list[str]]:
    """The input columns (with unique feature names, in frame order), the dropped ones, and notes about them."""
    columns: list[InputColumn] = []
    dropped: list[Dropped] = []
    notes: list[str] = []
    taken: set[str] = set()
    for name in names:
        verdict = Dropped(name, "dropped by --drop") if name in drop else judge_column(frame[name])
        if isinstance(verdict, Dropped):
            dropped.append(verdict)
        else:
            column, said = input_column(frame[name], verdict, taken)
            columns.append(column)
            notes.extend(said)
    return tuple(columns), tuple(dropped), notes


def _check_options(names: list[str], label: str, drop: list[str],
                   time_column: str | None) -> tuple[str, list[str], str | None]:
    """The columns ``--label``, ``--drop`` and ``--time-column`` name, as the frame names them."""
    label = _require_column(label, names, "label", "--label")
    drop = list(dict.fromkeys(_require_column(name, names, "column to drop", "--drop") for name in drop))
    if label in drop:
        raise DataError(f"label {label!r} is also given to --drop; the label cannot be dropped, remove it from --drop")
    if time_column is not None:
        time_column = _require_column(time_column, names, "time column", "--time-column")
    return label, drop, time_column


def _check_time_column(series: pd.Series) -> None:
    present = present_values(series)
    if present.empty:
        raise DataError(f"time column {series.name!r} has no values; choose a column of timestamps")
    if types.is_datetime64_any_dtype(present.dtype) or is_datetime_text(present):
        return
    if parse_numbers(present, share=1.0) is None:
        raise DataError(
            f"time column {series.name!r} holds neither dates (ISO 8601, dd-mm-yyyy, mm/dd/yyyy, 5 Sep 2011...) "
            "nor numbers "
            f"(e.g. {show_value(present.iloc[0])}); "
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


def _require_column(name: str, names: list[str], what: str, option: str) -> str:
    """The column ``name`` is: the one spelled so, else the one spelled so after the header rule on both sides
    (``"Water  (kg)"`` finds ``Water (kg)``); else a :class:`DataError` with the closest names."""
    if name in names:
        return name
    same = [n for n in names if clean_name(n) == clean_name(name)]
    if len(same) == 1:
        return same[0]
    if same:
        raise DataError(f"{what} {name!r} could be any of {', '.join(map(repr, same))}; give one of them exactly "
                        f"to {option}")
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
