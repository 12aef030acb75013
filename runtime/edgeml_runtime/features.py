"""Turn raw records into the tensors a model takes, checking each value.

This is the one place raw values become model inputs. The host builds its
training matrix with it too, so a device computes exactly the features the
model was trained on. Values are converted per column, each value as
:mod:`edgeml_runtime.cells` reads one (the number grammar, categories,
booleans, datetimes; numbers written as text, in a column with a number
format, as :mod:`edgeml_runtime.textnumbers` reads them); a value that cannot be converted becomes a
:class:`~edgeml_runtime.errors.RowError` for its row, and the rows without
errors are still scored.

Example:

>>> from edgeml_runtime.schema import InputColumn, InputSchema
>>> schema = InputSchema((
...     InputColumn("temp", "numeric", ("temp",)),
...     InputColumn("type", "categorical", ("type",), categories=("L", "M")),
... ))
>>> feeds, errors = FeatureEncoder(schema).encode({"temp": ["21.5", None, "hot"], "type": ["L", "H", "M"]}, 3)
>>> feeds["temp"].ravel().tolist()[:1], feeds["type"].ravel().tolist()
([21.5], ['L', 'H', 'M'])
>>> errors[2].reason
"could not read 'hot' as a number"
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from .cells import (
    _F32_MAX,
    _NAN,
    PART_TABLES,
    SCALAR,
    BadValue,
    _is_text,
    datetime_parts,
    datetime_reader,
    to_boolean,
    to_category,
    to_datetime,
    to_number,
)
from .errors import InputError, RowError
from .schema import DATETIME_PARTS, InputColumn, InputSchema, NumberFormat
from .textnumbers import text_reader

Converter = Callable[[Sequence, dict], dict]


class FeatureEncoder:
    """Converts raw columns into named model inputs, collecting row errors.

    ``encode(columns, n)`` takes a mapping from column name to a sequence of
    ``n`` raw values and returns ``(feeds, errors)``: ``feeds`` maps every
    feature name to an ``(n, 1)`` array (float32, or text for categoricals: an
    object array, or the column itself when it came as a NumPy text array) and
    ``errors`` maps a 0-based row index to the first
    :class:`RowError` of that row. Rows with errors hold NaN or ``""``.

    Columns are converted a block of rows at a time (:func:`_fast_numbers`,
    :func:`_fast_categories`); a block holding a value that the fast path
    cannot take goes through the scalar functions of :mod:`edgeml_runtime.cells`
    one value at a time, which is what ``careful=True`` does for every row. Both give the
    same feeds and the same errors (``tests/test_fast_paths.py``).
    """

    def __init__(self, schema: InputSchema, *, careful: bool = False):
        self.schema = schema
        converters = _CAREFUL if careful else _FAST
        self._plan = [(c, converters[c.kind]) for c in schema.columns]

    def missing_columns(self, names) -> list[str]:
        have = set(names)
        return [c.name for c in self.schema.columns if c.name not in have]

    def encode(self, columns: Mapping[str, Sequence], n: int, first_row: int = 1):
        missing = self.missing_columns(columns)
        if missing:
            raise InputError(
                f"input is missing column(s) {few(missing)} that the model needs; "
                f"expected columns: {few(self.schema.names)}"
            )
        feeds: dict[str, np.ndarray] = {}
        errors: dict[int, RowError] = {}
        for col, convert in self._plan:
            values = columns[col.name]
            if len(values) != n:
                raise InputError(f"column {col.name!r} has {len(values)} values, expected {n}")
            bad: dict[int, str] = {}
            feeds.update(convert(col, values, bad))
            for i, reason in bad.items():
                if i not in errors:
                    errors[i] = RowError(first_row + i, col.name, reason)
        return feeds, errors


def _convert_scalar(fn, fill, values, bad):
    out = []
    append = out.append
    for i, v in enumerate(values):
        try:
            append(fn(v))
        except BadValue as exc:
            bad[i] = str(exc)
            append(fill)
    return out


def number_reader(fmt: NumberFormat | None) -> Callable:
    """How one value of a numeric column is read: :func:`~edgeml_runtime.cells.to_number` (the plain
    grammar, unreadable text a row error), or with a number format the text grammar of
    :mod:`edgeml_runtime.textnumbers` (unreadable text a missing value).

    >>> number_reader(None)("3.5"), number_reader(NumberFormat(",", "."))("1.200,5 €")
    (3.5, 1200.5)
    """
    return to_number if fmt is None else text_reader(fmt)


def scalar_reader(col: InputColumn) -> Callable:
    """The function from one raw value of ``col`` to its feature value(s): :data:`~edgeml_runtime.cells.SCALAR`
    for its kind, with its number format (numeric) or its date order and parts (datetime) when it has them:
    what a one-record path must use."""
    if col.kind == "numeric":
        return number_reader(col.number_format)
    if col.kind == "datetime":
        return datetime_reader(col.date_order, col.parts)
    return SCALAR[col.kind]


def _numeric(col: InputColumn, values, bad):
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
        with np.errstate(over="ignore"):  # beyond float32 becomes inf, reported as a row error just below
            arr = values.astype(np.float32)
        if values.dtype.kind == "f":
            for i in np.flatnonzero(np.isinf(arr)):
                bad[int(i)] = f"{values[i]!r} is not a finite number"
    else:
        arr = np.array(_convert_scalar(number_reader(col.number_format), _NAN, values, bad), dtype=np.float32)
    return {col.features[0]: arr.reshape(-1, 1)}


def _boolean(col: InputColumn, values, bad):
    arr = np.array(_convert_scalar(to_boolean, _NAN, values, bad), dtype=np.float32)
    return {col.features[0]: arr.reshape(-1, 1)}


def _categorical(col: InputColumn, values, bad):
    arr = np.array(_convert_scalar(to_category, "", values, bad), dtype=object)
    return {col.features[0]: arr.reshape(-1, 1)}


def _datetime(col: InputColumn, values, bad):
    order, parts = col.date_order, col.parts
    dates = _convert_scalar(lambda v: to_datetime(v, order), None, values, bad)
    table = np.array([datetime_parts(d, parts) for d in dates], dtype=np.float32).reshape(-1, len(parts))
    return {name: table[:, j : j + 1] for j, name in enumerate(col.features)}


#: Column converters that take each value through the scalar functions: the reference for the fast ones.
_CAREFUL = {"numeric": _numeric, "boolean": _boolean, "categorical": _categorical, "datetime": _datetime}

#: Rows converted per block on the fast paths: a value they cannot take sends only its block row by row.
BLOCK_ROWS = 1024

#: Types whose ``float(v)`` is what :func:`to_number` returns for them (when that is a finite 32-bit number).
_FLOATABLE = frozenset({str, float, int, np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
                        np.uint8, np.uint16, np.uint32, np.uint64})
_PYTHON_NUMBERS = frozenset({float, int})
_TEXT = {str}


def _rows(values) -> Sequence:
    """``values`` as something to slice and index by position (a list, tuple or 1-D array)."""
    return values if isinstance(values, (list, tuple, np.ndarray)) else list(values)


def read_numbers(values: Sequence, number_format: NumberFormat | None = None) -> tuple[np.ndarray, dict[int, str]]:
    """Each value as a device reads it in a numeric column (with ``number_format``, if it has one), as float64
    (NaN if missing or unreadable), and why each unreadable one is, by position: the host decides a column's
    kind with this (one number grammar). With a number format, unreadable text is missing, never in ``bad``.

    >>> x, bad = read_numbers(["1.5", "1_551", "na", 7])
    >>> x.tolist()[0], x.tolist()[3], bad
    (1.5, 7.0, {1: "could not read '1_551' as a number (write numbers with ASCII digits, without '_')"})
    >>> read_numbers(["1,5", "2 - 3", "less than year"], NumberFormat(",", ""))[0].tolist()
    [1.5, 2.5, nan]
    """
    bad: dict[int, str] = {}
    return _numbers64(_rows(values), bad, number_format), bad


def _fast_numbers(values: Sequence, bad: dict, fmt: NumberFormat | None = None) -> np.ndarray:
    """A numeric column as float32, row errors into ``bad``: exactly what :func:`number_reader` on each value
    gives."""
    return _numbers64(values, bad, fmt).astype(np.float32)


def _numbers64(values: Sequence, bad: dict, fmt: NumberFormat | None = None) -> np.ndarray:
    """:func:`_fast_numbers` before the cast to float32.

    A block of plain values (text, Python or NumPy numbers) is one ``float`` per value at C speed, once its
    text is known to be ASCII without ``_`` (one ``join``; see :func:`_block_floats` for a number format);
    other blocks go value by value, and the rare results outside the float32 range go back through the
    column's reader for their error message (or, text with a number format, their missing value).
    """
    read = number_reader(fmt)
    n = len(values)
    x = np.empty(n)
    for start in range(0, n, BLOCK_ROWS):
        part = values[start : start + BLOCK_ROWS]
        types = set(map(type, part))
        if types <= _FLOATABLE and _plain_text(part, types):
            floats = _block_floats(part, types, fmt)
            if floats is not None:
                x[start : start + len(part)] = floats
                continue
        local: dict[int, str] = {}
        x[start : start + len(part)] = (_convert_scalar(read, _NAN, part, local) if fmt is None
                                        else _read_text_block(read, part, local))
        bad.update((start + i, reason) for i, reason in local.items())
    for i in np.flatnonzero(np.abs(x) > _F32_MAX).tolist():
        try:
            x[i] = read(values[i])
        except BadValue as exc:
            bad[i], x[i] = str(exc), _NAN
    return x


def _block_floats(part: Sequence, types: set, fmt: NumberFormat | None) -> np.ndarray | None:
    """A block of plain values (see :func:`_plain_text`) as float64 by ``float()``, or None when one of them
    needs the value-by-value reader.

    Where ``float()`` reads ASCII text, it reads what the plain grammar and, with decimal ".", every number
    format read (inf and NaN aside, which the callers check); with a decimal comma, a block of text without
    "." reads the same once "," is ".".
    """
    try:
        if fmt is None or fmt.decimal == ".":  # NumPy reads Python floats and ints exactly as float() does
            return (np.array(part, np.float64) if types <= _PYTHON_NUMBERS
                    else np.fromiter(map(float, part), np.float64, len(part)))
        if types == _TEXT:
            joined = "\x1f".join(part)
            if "." not in joined and joined.count("\x1f") == len(part) - 1:
                return np.fromiter(map(float, joined.replace(",", ".").split("\x1f")), np.float64, len(part))
    except (ValueError, OverflowError):  # NA text, text that is no number, an int beyond float
        pass
    return None


def _read_text_block(read: Callable, part: Sequence, bad: dict) -> list:
    """:func:`_convert_scalar` for a column with a number format, reading each distinct text once (text never
    fails there: it is a number or missing)."""
    seen: dict[str, float] = {}
    out = []
    append = out.append
    for i, v in enumerate(part):
        if type(v) is str:
            f = seen.get(v)
            if f is None:
                f = seen[v] = read(v)
            append(f)
            continue
        try:
            append(read(v))
        except BadValue as exc:
            bad[i] = str(exc)
            append(_NAN)
    return out


def _plain_text(part: Sequence, types: set) -> bool:
    """Whether the text in a block is all ASCII without ``_`` (what ``float()`` reads as :func:`to_number` does)."""
    if str not in types:
        return True
    joined = "".join(part) if len(types) == 1 else "".join(v for v in part if type(v) is str)
    return joined.isascii() and "_" not in joined


def _fast_categories(values: Sequence, bad: dict) -> np.ndarray:
    """A categorical column as an object array of text, row errors into ``bad``, as ``to_category`` gives."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "U":
        return values  # to_category(np.str_) is str(v), the text as it is; the engines take NumPy text as it is
    n = len(values)
    out = np.fromiter(values, dtype=object, count=n)
    for start in range(0, n, BLOCK_ROWS):
        part = values[start : start + BLOCK_ROWS]
        if set(map(type, part)) == _TEXT and _is_text("".join(part)):
            blank = {v for v in set(part) if not v.strip()}
            if blank:
                out[start : start + len(part)] = ["" if v in blank else v for v in part]
        else:
            local: dict[int, str] = {}
            out[start : start + len(part)] = _convert_scalar(to_category, "", part, local)
            bad.update((start + i, reason) for i, reason in local.items())
    return out


def _plain(values) -> bool:
    """True for values the fast paths take; a 2-D array (rows of several values) goes the careful way."""
    return not isinstance(values, np.ndarray) or values.ndim == 1


def _fast_numeric(col: InputColumn, values, bad):
    if not _plain(values) or (isinstance(values, np.ndarray) and values.dtype.kind in "fiu"):
        return _numeric(col, values, bad)
    return {col.features[0]: _fast_numbers(_rows(values), bad, col.number_format).reshape(-1, 1)}


def _fast_boolean(col: InputColumn, values, bad):
    if isinstance(values, np.ndarray) and values.dtype.kind == "b" and values.ndim == 1:
        return {col.features[0]: values.astype(np.float32).reshape(-1, 1)}
    return _boolean(col, values, bad)


def _fast_categorical(col: InputColumn, values, bad):
    if not _plain(values):
        return _categorical(col, values, bad)
    return {col.features[0]: _fast_categories(_rows(values), bad).reshape(-1, 1)}


def _fast_datetime(col: InputColumn, values, bad):
    """Datetime64 arrays at NumPy speed; other values read one by one, as on the careful path, then their parts
    computed at NumPy speed (the same fields and tables as :func:`datetime_parts`)."""
    parts = None
    if not _plain(values):
        return _datetime(col, values, bad)
    if isinstance(values, np.ndarray) and values.dtype.kind == "M":
        parts = datetime64_parts(values, col.parts)
    else:
        order = col.date_order
        dates = _convert_scalar(lambda v: to_datetime(v, order), None, _rows(values), bad)
        parts = datetime64_parts(_datetime64(dates), col.parts)
    if parts is None:
        return _datetime(col, values, bad)
    return {name: parts[:, j : j + 1] for j, name in enumerate(col.features)}


_US_PER_DAY = 86_400_000_000
_EPOCH_DAY = 719_163  # datetime(1970, 1, 1).toordinal()
_NAT = np.iinfo(np.int64).min


def _datetime64(dates: list) -> np.ndarray:
    """Datetimes (None for missing) as datetime64[us], by their day and time: NumPy's own conversion of
    datetime objects is ten times slower."""
    us = np.fromiter((_NAT if d is None else (d.toordinal() - _EPOCH_DAY) * _US_PER_DAY + d.microsecond
                      + (d.hour * 3600 + d.minute * 60 + d.second) * 1_000_000 for d in dates), np.int64, len(dates))
    return us.view("datetime64[us]")


def datetime64_parts(values: np.ndarray, parts: tuple[str, ...] = DATETIME_PARTS) -> np.ndarray | None:
    """The ``parts`` of a datetime64 array as float32 columns (NaN for NaT), as :func:`datetime_parts` gives
    them; None when a year is outside 1…9999, which only the careful path knows how to refuse.

    >>> stamps = np.array(["2024-03-01T12:30", "NaT"], dtype="datetime64[m]")
    >>> datetime64_parts(stamps, ("month", "hour", "year")).tolist()
    [[3.0, 12.0, 2024.0], [nan, nan, nan]]
    """
    us = values.astype("datetime64[us]")
    nat = np.isnat(us)
    days, time_of_day = np.divmod(us.view(np.int64), _US_PER_DAY)
    months = days.astype("datetime64[D]").astype("datetime64[M]").view(np.int64)
    years = months // 12 + 1970
    if (~nat).any() and (years[~nat].min() < 1 or years[~nat].max() > 9999):
        return None
    first_of_month = months.astype("datetime64[M]").astype("datetime64[D]").view(np.int64)
    first_of_year = days.astype("datetime64[D]").astype("datetime64[Y]").astype("datetime64[D]").view(np.int64)
    fields = (months % 12 + 1, days - first_of_month + 1, (days + 3) % 7,  # 1970-01-01 was a Thursday
              time_of_day // 3_600_000_000, time_of_day // 60_000_000 % 60, years, days - first_of_year + 1)
    out = np.empty((len(values), len(parts)), dtype=np.float32)
    for j, part in enumerate(parts):
        i, table = PART_TABLES[part]
        field = np.where(nat, 0, fields[i])  # NaT's fields are garbage: any index, overwritten just below
        out[:, j] = field if table is None else table[field]
    out[nat] = _NAN
    return out


_FAST = {"numeric": _fast_numeric, "boolean": _fast_boolean, "categorical": _fast_categorical,
         "datetime": _fast_datetime}


def few(items: Sequence, limit: int = 5, *, quote: bool = True, sep: str = ", ") -> str:
    """The first ``limit`` items (their repr when ``quote``), then a count of the rest.

    >>> few(["a", "b", "c", "d"], 2)
    "'a', 'b' and 2 more"
    >>> few(["x is 1", "y is 2"], 3, quote=False, sep="; ")
    'x is 1; y is 2'
    """
    shown = sep.join(repr(n) if quote else str(n) for n in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
