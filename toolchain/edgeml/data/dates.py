"""Decide how a column writes its dates, and which of their parts a model gets: the host's side of
:mod:`edgeml_runtime.dates`, whose grammar both the host and the device read dates with.

:func:`read_dates` decides whether text is a date column and its *date order* from evidence: the order
(of :data:`edgeml_runtime.dates.ORDERS`) that reads nearly all of its values. ISO 8601 throughout is order
``None``, which a device reads strictly; dates with the year first or with month names are ``"ymd"``; dates
with the year last are day-first (``"dmy"``) when a first field is above 12 (``13/06/2020``), month-first
(``"mdy"``) when a second one is (``06/13/2020``). When no value decides it (``05/06/2020``), the
separator's convention does: ``.`` and ``-`` day-first, ``/`` month-first, and a note says so. Values no
order reads are missing values, in training and on the device, with a note.

:func:`choose_parts` picks the :data:`~edgeml_runtime.schema.DATETIME_PARTS` a column feeds the model, from
its values: a part that never varies is left out (no hour or minute for dates without a time), and so is the
year of a column that only ever increases (an event log's timestamps), whose absolute value cannot
generalise beyond the training period; a note says so.

Example:

>>> import pandas as pd
>>> reading = read_dates(pd.Series(["09-05-2011", "13-05-2011", "01-06-2011"], name="day"))
>>> reading.order, reading.notes
('dmy', ())
>>> choose_parts(pd.Series(["09-05-2011", "13-05-2011", "01-06-2011"], name="day"), "dmy").parts
('month', 'day', 'dayofweek', 'dayofyear', 'dayofyear_sin', 'dayofyear_cos', 'dayofweek_sin', 'dayofweek_cos')
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
from pandas.api import types

from edgeml_runtime.cells import NA_TOKENS, BadValue, datetime_fields, to_datetime
from edgeml_runtime.dates import ORDERS, orders_reading, reads
from edgeml_runtime.features import few, read_numbers
from edgeml_runtime.schema import DATETIME_PARTS

__all__ = ["ChosenParts", "DateReading", "choose_parts", "read_dates", "time_order"]

#: How each order is named in a note.
_SAID = {"dmy": "day-first (dd/mm/yyyy)", "mdy": "month-first (mm/dd/yyyy)"}
#: The order a separator's convention gives dates with the year last that no value decides.
_CONVENTION = {"/": "mdy", ".": "dmy", "-": "dmy"}
#: How many distinct values, at most, the date order is decided on (the rest are then read with that order).
EVIDENCE_VALUES = 20_000
#: The calendar fields of :func:`edgeml_runtime.cells.datetime_fields`, in its order.
_FIELDS = ("month", "day", "dayofweek", "hour", "minute", "year", "dayofyear")


@dataclass(frozen=True)
class DateReading:
    """How a text column writes its dates: the date order, and what the user should be told."""

    order: str | None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChosenParts:
    """The datetime parts a column feeds the model, the notes about them, and why there are none if so."""

    parts: tuple[str, ...]
    notes: tuple[str, ...] = ()
    reason: str = ""  #: why no part is left (the column is then dropped)


def read_dates(present: pd.Series, share: float = 0.97, sample: int = 1000) -> DateReading | None:
    """The date order of text values when at least ``share`` of an evenly spaced ``sample`` of them, and of all
    of them, read as dates with one order; None when they are not a date column. Plain numbers never are.

    >>> import pandas as pd
    >>> read_dates(pd.Series(["05/06/2020", "07/06/2020"], name="d")).order
    'mdy'
    >>> read_dates(pd.Series(["2024", "2025"])) is None
    True
    """
    if not _is_text(present) or present.empty:
        return None
    step = max(1, len(present) // sample)
    if _best_share(_counts(present.iloc[::step].iloc[:sample])) < share:
        return None  # most are not dates: the whole column need not be read
    counts = _counts(present)
    readers = _readers(_spread(counts, EVIDENCE_VALUES))
    decided = _decide(present.name, {t: counts[t] for t in readers}, readers, share)
    if decided is None:
        return None
    order, notes = decided
    unread = _unread(counts, readers, order)
    if order is None and unread:  # beyond the evidence, text ISO 8601 does not read: read leniently
        order, unread = "ymd", _unread(counts, readers, "ymd")
    n, k = sum(counts.values()), sum(counts[t] for t in unread)
    if k > (1 - share) * n:
        return None
    if unread:
        what = "is no date" if k == 1 else "are no dates"
        notes.append(f"column {present.name!r}: {k} of {n} values {what} ({few(unread, 3)}); they are missing "
                     "values, in training and on the device")
    return DateReading(order, tuple(notes))


def choose_parts(series: pd.Series, order: str | None) -> ChosenParts:
    """The parts of :data:`~edgeml_runtime.schema.DATETIME_PARTS` that vary in ``series`` (read with ``order``),
    in that order: the calendar fields, day of year when both month and day vary, the season as sin and cos
    (of the day of year when the day varies, else of the month), and those of the day of week and the hour.
    The year is left out, with a note, when the dates only ever increase.

    >>> import pandas as pd
    >>> log = pd.Series(["2023-12-31 22:00", "2024-01-01 09:00", "2024-01-01 17:00"], name="at")
    >>> chosen = choose_parts(log, None)
    >>> chosen.parts[:5], chosen.notes[0][:40]
    (('month', 'day', 'dayofweek', 'hour', 'dayofyear'), "column 'at' only ever increases (from 20")
    """
    name, dates = series.name, _dates(series, order)
    if not dates:
        return ChosenParts((), reason="no value reads as a date")
    fields = np.array([datetime_fields(d) for d in dates])
    varies = {f: bool(fields[:, i].min() != fields[:, i].max()) for i, f in enumerate(_FIELDS)}
    wanted = {f for f in _FIELDS[:6] if varies[f]}
    if varies["month"] and varies["day"]:
        wanted.add("dayofyear")
    season = "dayofyear" if varies["day"] else "month"
    for base in (season, "dayofweek", "hour"):
        if varies[base]:
            wanted.update((f"{base}_sin", f"{base}_cos"))
    notes = ()
    if varies["year"] and all(a <= b for a, b in zip(dates, dates[1:], strict=False)):
        wanted.discard("year")
        left = ", ".join(p for p in DATETIME_PARTS if p in wanted) or "none"
        notes = (f"column {name!r} only ever increases (from {dates[0]} to {dates[-1]}): its year is left out, "
                 f"since an absolute date cannot generalise beyond the training period; its parts: {left}",)
    parts = tuple(p for p in DATETIME_PARTS if p in wanted)
    if parts:
        return ChosenParts(parts, notes)
    why = ("only its year varies, and it only ever increases: an absolute date cannot generalise beyond the "
           "training period" if varies["year"] else "its dates differ only in seconds, which no part holds")
    return ChosenParts((), notes, why)


def time_order(series: pd.Series) -> np.ndarray:
    """The positions of ``series`` in time order (a stable sort, missing values last): dates as a device reads
    them with the column's date order (see :func:`read_dates`), else numbers (the time column of a split).

    >>> import pandas as pd
    >>> time_order(pd.Series(["13/01/2024", "02/01/2024", None, "05/01/2024"])).tolist()
    [1, 3, 0, 2]
    """
    if _is_text(series) and (reading := read_dates(series[series.notna()])) is not None:
        dates = [_date(v, reading.order) for v in series.tolist()]
        keys = [(d is None, d or datetime.min) for d in dates]
    elif types.is_datetime64_any_dtype(series.dtype):
        keys = [(d is None, d or datetime.min) for d in (_date(v, None) for v in series.tolist())]
    else:
        x = series.to_numpy(dtype="float64") if types.is_numeric_dtype(series.dtype) else \
            read_numbers(series.astype(str).tolist())[0]
        keys = [(bool(np.isnan(v)), 0.0 if np.isnan(v) else v) for v in x.tolist()]
    return np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)


# -- helpers ---------------------------------------------------------------------------------


def _is_text(series: pd.Series) -> bool:
    return not (types.is_numeric_dtype(series.dtype) or types.is_bool_dtype(series.dtype)
                or types.is_datetime64_any_dtype(series.dtype) or types.is_timedelta64_dtype(series.dtype))


def _counts(values: pd.Series) -> dict[str, int]:
    """How often each distinct text occurs, missing values (``NA``, ``null``...) left out."""
    counts = values.astype(str).value_counts(sort=False)
    return {t: int(c) for t, c in counts.items() if t.strip().lower() not in NA_TOKENS}


def _decide(name, counts: dict[str, int], readers: dict[str, frozenset], share: float):
    """The order that reads the most of the values (ISO 8601 only if it reads them all), and the notes; None
    when no order reads ``share`` of them."""
    n = sum(counts.values())
    reading = {order: sum(counts[t] for t, r in readers.items() if order in r) for order in ORDERS}
    best = max(reading[o] for o in ORDERS[1:])
    if reading[None] == n:
        return None, []
    if best < share * n:
        return None
    if reading["ymd"] == best:
        return "ymd", []
    if reading["dmy"] != reading["mdy"]:
        return ("dmy" if reading["dmy"] > reading["mdy"] else "mdy"), []
    order, note = _by_convention(name, readers)
    return order, [note]


def _unread(counts: dict[str, int], readers: dict[str, frozenset], order: str | None) -> list[str]:
    """The distinct texts that ``order`` does not read (those beyond the evidence read once, with it)."""
    return sorted(t for t in counts if (order not in readers[t] if t in readers else not reads(t, order)))


def _spread(counts: dict[str, int], size: int) -> dict[str, int]:
    """At most ``size`` of the distinct texts, evenly spaced (all of them when there are no more)."""
    if len(counts) <= size:
        return counts
    keys = list(counts)
    return {t: counts[t] for t in keys[:: len(keys) // size + 1]}


def _readers(counts: dict[str, int]) -> dict[str, frozenset]:
    """For each distinct text, the orders that read it."""
    return {t: orders_reading(t) for t in counts}


def _best_share(counts: dict[str, int]) -> float:
    """The largest share of the values that one order reads."""
    readers, n = _readers(counts), sum(counts.values())
    return max(sum(counts[t] for t, r in readers.items() if o in r) for o in ORDERS) / n if n else 0.0


def _by_convention(name, readers: dict[str, frozenset]) -> tuple[str, str]:
    """The order its separator's convention gives dates with the year last that no value decides, and the note."""
    year_last = [t for t, r in readers.items() if "ymd" not in r and r & {"dmy", "mdy"}]
    separators = [next((ch for ch in t.strip() if not ch.isdigit()), "/") for t in year_last]
    sep = max(sorted(set(separators)), key=separators.count) if separators else "/"
    order = _CONVENTION.get(sep, "dmy")
    either = [t for t in year_last if len(readers[t] & {"dmy", "mdy"}) == 1]
    why = (f"its values point both ways, e.g. {few(either, 2)}" if either else
           f"none has a day above 12, e.g. {few(year_last, 1)}")
    return order, (f"column {name!r}: whether its dates are day-first or month-first cannot be decided from the "
                   f"values ({why}); read as {_SAID[order]}, the convention for dates written with {sep!r}; "
                   "if that is wrong, write them as yyyy-mm-dd")


def _date(v, order: str | None) -> datetime | None:
    try:
        return to_datetime(v, order)
    except BadValue:
        return None


def _dates(series: pd.Series, order: str | None) -> list[datetime]:
    """The dates of ``series`` as a device reads them, in row order, missing and unreadable values left out."""
    values = series.tolist()
    if _is_text(series):
        known = {t: _date(t, order) for t in set(v for v in values if isinstance(v, str))}
        out = [known[v] if isinstance(v, str) else _date(v, order) for v in values]
    else:
        out = [_date(v, order) for v in values]
    return [d for d in out if d is not None]
