"""One raw value read as its column's kind: the number grammar, categories, booleans and datetimes.

These are the scalar readers, one value at a time, that every device and the
host share: :func:`to_number` is the one number grammar (the host decides a
column's kind with it, through :func:`edgeml_runtime.features.read_numbers`),
:func:`to_category`, :func:`to_boolean` and :func:`to_datetime` the rest.
A value that cannot be read raises :class:`BadValue`, which
:class:`~edgeml_runtime.features.FeatureEncoder` turns into a
:class:`~edgeml_runtime.errors.RowError` for its row. The encoder's fast
paths convert a block of values at a time and give exactly what these give.

Example:

>>> [SCALAR["numeric"](v) for v in (" 3.5 ", 7, None)][:2], SCALAR["boolean"]("no")
([3.5, 7.0], 0.0)
>>> to_number("hot")
Traceback (most recent call last):
...
edgeml_runtime.cells.BadValue: could not read 'hot' as a number
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime

import numpy as np

from .dates import parse_date
from .schema import DATETIME_PARTS

#: Marks a key that a record does not have at all (as opposed to a null value).
ABSENT = type("Absent", (), {"__repr__": lambda self: "<absent>"})()

#: Text that means "no value" in a numeric, boolean or datetime column (compared lower-cased, stripped).
NA_TOKENS = frozenset({"", "na", "nan", "null", "none", "n/a", "#n/a", "?"})
TRUE_TOKENS = frozenset({"true", "t", "yes", "y", "1"})
FALSE_TOKENS = frozenset({"false", "f", "no", "n", "0"})

_NAN = float("nan")
_INF = (float("inf"), float("-inf"))
_F32_MAX = float(np.finfo(np.float32).max)


class BadValue(ValueError):
    """A single value cannot be converted; the message says why."""


def _absent() -> BadValue:
    return BadValue("the record has no such field (send null for a missing value)")


def to_number(v) -> float:
    """A numeric cell as a float, NaN for a missing value.

    Text follows one number grammar, on the device and on the host (which
    decides column kinds with :func:`~edgeml_runtime.features.read_numbers`):
    Python's ``float()`` in ASCII without ``_`` (sign, digits, ``.``, exponent,
    spaces around). Alone, ``float()`` also reads ``1_551`` and non-ASCII
    digits (``١٢``), which a CSV writer never means as numbers.

    >>> to_number(" 3.5 "), to_number(7), math.isnan(to_number(""))
    (3.5, 7.0, True)
    >>> to_number("1_551")
    Traceback (most recent call last):
    ...
    edgeml_runtime.cells.BadValue: could not read '1_551' as a number (write numbers with ASCII digits, without '_')
    """
    t = type(v)
    if t is str:
        try:
            if not v.isascii() or "_" in v:
                raise ValueError(v)
            f = float(v)
        except ValueError:
            if v.strip().lower() in NA_TOKENS:
                return _NAN
            raise BadValue(f"could not read {v!r} as a number{_grammar_hint(v)}") from None
        if not -_F32_MAX <= f <= _F32_MAX and f == f:
            raise BadValue(f"{v!r} is not a finite 32-bit number")
        return f
    if t is float or t is int:
        try:
            f = float(v)
        except OverflowError:
            f = _INF[0]
        if not -_F32_MAX <= f <= _F32_MAX and f == f:
            shown = repr(v) if t is float else f"{str(v)[:20]}…"
            raise BadValue(f"{shown} is not a finite 32-bit number")
        return f
    if v is None:
        return _NAN
    if v is ABSENT:
        raise _absent()
    if isinstance(v, (bool, np.bool_)):
        raise BadValue(f"expected a number, got the boolean {v!r}")
    if isinstance(v, (int, float, np.integer, np.floating)):
        return to_number(float(v))
    raise BadValue(f"expected a number, got {type(v).__name__} {v!r}")


def _grammar_hint(v: str) -> str:
    """Why text that Python's ``float()`` reads is no number here (empty when ``float()`` refuses it too)."""
    try:
        float(v)
    except ValueError:
        return ""
    return " (write numbers with ASCII digits, without '_')"


def to_category(v) -> str:
    """A categorical cell as text; a missing value is the empty string.

    >>> to_category("L"), to_category(None), to_category(3)
    ('L', '', '3')
    >>> to_category("\\ud800")
    Traceback (most recent call last):
    ...
    edgeml_runtime.cells.BadValue: '\\ud800' holds a lone UTF-16 surrogate, which is not text (no engine can take it)
    """
    if type(v) is str:
        if not _is_text(v):
            raise BadValue(f"{v[:40]!r} holds a lone UTF-16 surrogate, which is not text (no engine can take it)")
        return v if v.strip() else ""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if v is ABSENT:
        raise _absent()
    if isinstance(v, (dict, list, tuple, set)):
        raise BadValue(f"expected a category (text), got {type(v).__name__} {v!r}")
    return str(v)


def _is_text(v: str) -> bool:
    """False for text an engine cannot take: a lone surrogate (JSON ``"\\ud800"``) has no UTF-8 form."""
    if v.isascii():
        return True
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def to_boolean(v) -> float:
    """A boolean cell as 1.0 / 0.0, NaN for a missing value.

    >>> to_boolean("Yes"), to_boolean(False), math.isnan(to_boolean(""))
    (1.0, 0.0, True)
    """
    if isinstance(v, (bool, np.bool_)):
        return 1.0 if v else 0.0
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return _NAN
    if v is ABSENT:
        raise _absent()
    s = str(v).strip().lower()
    if s in TRUE_TOKENS:
        return 1.0
    if s in FALSE_TOKENS:
        return 0.0
    if s in NA_TOKENS:
        return _NAN
    raise BadValue(f"could not read {v!r} as a boolean (expected yes/no, true/false or 1/0)")


def to_datetime(v, order: str | None = None) -> datetime | None:
    """A datetime cell as a naive UTC datetime, None for a missing value.

    Text is read by :func:`edgeml_runtime.dates.parse_date` with the column's date ``order``. A column
    without one (ISO 8601 only) refuses other text; a column with one (its dates written as people type
    them) reads text that is no date as a missing value, as the host read its training data.

    >>> to_datetime("2024-03-01T12:30:00+01:00"), to_datetime("09-05-2011 14:00", "dmy")
    (datetime.datetime(2024, 3, 1, 11, 30), datetime.datetime(2011, 5, 9, 14, 0))
    >>> to_datetime("soon", "dmy") is None
    True
    """
    if isinstance(v, str):
        if order is None:
            return parse_date(v, None)
        try:
            return parse_date(v, order)
        except BadValue:
            return None
    if isinstance(v, datetime):
        if v != v:  # pandas' NaT is a datetime too
            return None
        d = v
    elif isinstance(v, date):
        return datetime(v.year, v.month, v.day)
    elif v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    elif v is ABSENT:
        raise _absent()
    elif isinstance(v, np.datetime64):
        if np.isnat(v):
            return None
        d = datetime.fromisoformat(str(v.astype("datetime64[us]")))
    else:
        raise BadValue(f"expected a date as text or a datetime, got {type(v).__name__} {v!r}")
    if d.tzinfo is not None:
        d = d.astimezone(UTC).replace(tzinfo=None)
    return d


def _cycle(period: float, first: int, n: int) -> list[float]:
    """sin and cos tables, as float32 values, of ``k - first`` turns in ``period``, for k in 0..n-1 (NaN below
    ``first``): what both the careful and the fast paths look the cyclic parts up in, so that they agree."""
    turns = 2 * np.pi * (np.arange(n) - first) / period
    tables = np.stack([np.sin(turns), np.cos(turns)]).astype(np.float32)
    tables[:, :first] = np.nan
    return list(tables)


#: Per part of :data:`DATETIME_PARTS`: which field of :func:`datetime_fields` it is, and the float32 table it
#: is looked up in (None: the field itself). Cyclic parts put the last value of a cycle next to the first
#: (December by January, Sunday by Monday, 23:00 by midnight), which linear models and networks cannot see
#: in the plain numbers; day of year turns in 365.25 days, so that every year's 1 January is at 0.
_MONTH_SIN, _MONTH_COS = _cycle(12, 1, 13)
_DOY_SIN, _DOY_COS = _cycle(365.25, 1, 367)
_DOW_SIN, _DOW_COS = _cycle(7, 0, 7)
_HOUR_SIN, _HOUR_COS = _cycle(24, 0, 24)
PART_TABLES: dict[str, tuple[int, np.ndarray | None]] = {
    "month": (0, None), "day": (1, None), "dayofweek": (2, None), "hour": (3, None), "minute": (4, None),
    "year": (5, None), "dayofyear": (6, None),
    "month_sin": (0, _MONTH_SIN), "month_cos": (0, _MONTH_COS),
    "dayofyear_sin": (6, _DOY_SIN), "dayofyear_cos": (6, _DOY_COS),
    "dayofweek_sin": (2, _DOW_SIN), "dayofweek_cos": (2, _DOW_COS),
    "hour_sin": (3, _HOUR_SIN), "hour_cos": (3, _HOUR_COS),
}
_PLANS: dict[tuple[str, ...], tuple] = {}
_DAYS_BEFORE = (0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)  #: in a common year, before each month


def datetime_reader(order: str | None, parts: tuple[str, ...]) -> Callable:
    """The function from one raw value of a datetime column, read with its date ``order``, to its ``parts``.

    >>> datetime_reader("dmy", ("month", "day"))("09-05-2011")
    (5.0, 9.0)
    """
    return lambda v: datetime_parts(to_datetime(v, order), parts)


def datetime_fields(d: datetime) -> tuple[int, int, int, int, int, int, int]:
    """Month, day, day of week (Monday 0), hour, minute, year and day of year (1 January is 1) of ``d``."""
    month, year = d.month, d.year
    leap = month > 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return month, d.day, d.weekday(), d.hour, d.minute, year, _DAYS_BEFORE[month] + d.day + leap


def datetime_parts(d: datetime | None, parts: tuple[str, ...] = DATETIME_PARTS) -> tuple[float, ...]:
    """The ``parts`` (of :data:`DATETIME_PARTS`, in that order) of a datetime, as floats (NaN when missing).

    >>> datetime_parts(datetime(2024, 12, 31, 23, 5), ("year", "dayofweek", "hour", "hour_cos"))
    (2024.0, 1.0, 23.0, 0.9659258127212524)
    """
    if d is None:
        return (_NAN,) * len(parts)
    plan = _PLANS.get(parts)
    if plan is None:
        plan = _PLANS[parts] = tuple((i, None if t is None else t.tolist()) for i, t in map(PART_TABLES.get, parts))
    fields = datetime_fields(d)
    return tuple(float(fields[i]) if table is None else table[fields[i]] for i, table in plan)


#: Per kind, the function from one raw value to the value(s) of its feature(s).
SCALAR = {
    "numeric": to_number,
    "boolean": to_boolean,
    "categorical": to_category,
    "datetime": lambda v: datetime_parts(to_datetime(v)),
}

