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
from datetime import UTC, datetime

import numpy as np

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


def to_datetime(v) -> datetime | None:
    """A datetime cell as a naive UTC datetime, None for a missing value.

    >>> to_datetime("2024-03-01T12:30:00+01:00")
    datetime.datetime(2024, 3, 1, 11, 30)
    """
    if isinstance(v, datetime):
        d = v
    elif v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    elif v is ABSENT:
        raise _absent()
    elif isinstance(v, str):
        s = v.strip()
        if s.lower() in NA_TOKENS:
            return None
        try:
            d = datetime.fromisoformat(s)
        except ValueError:
            raise BadValue(f"could not read {v!r} as an ISO 8601 date or datetime") from None
    elif isinstance(v, np.datetime64):
        if np.isnat(v):
            return None
        d = datetime.fromisoformat(str(v.astype("datetime64[us]")))
    else:
        raise BadValue(f"expected an ISO 8601 date or datetime, got {type(v).__name__} {v!r}")
    if d.tzinfo is not None:
        d = d.astimezone(UTC).replace(tzinfo=None)
    return d


def datetime_parts(d: datetime | None) -> tuple[float, ...]:
    """The parts in :data:`DATETIME_PARTS` of a datetime, as floats (NaN when missing)."""
    if d is None:
        return (_NAN,) * len(DATETIME_PARTS)
    return (float(d.month), float(d.day), float(d.weekday()), float(d.hour), float(d.minute))


#: Per kind, the function from one raw value to the value(s) of its feature(s).
SCALAR = {
    "numeric": to_number,
    "boolean": to_boolean,
    "categorical": to_category,
    "datetime": lambda v: datetime_parts(to_datetime(v)),
}
