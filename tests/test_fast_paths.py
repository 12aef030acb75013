"""The fast scoring paths give exactly what the careful per-value path gives: the same features, the same
predictions, the same row errors (row, column and message), the same drift counts.

The careful path (``FeatureEncoder(schema, careful=True)``) takes every value through the scalar
functions of :mod:`edgeml_runtime.cells`; it is the reference. The fast paths convert a column a block
of rows at a time, read lists of dicts a column at a time, and score one record on its own buffers.
"""

from __future__ import annotations

import csv
import math
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeml_runtime import Model, RowError
from edgeml_runtime import features as features_module
from edgeml_runtime.cells import ABSENT
from edgeml_runtime.errors import InputError
from edgeml_runtime.features import BLOCK_ROWS, FeatureEncoder
from edgeml_runtime.schema import InputColumn, InputSchema

SCHEMA = InputSchema((
    InputColumn("n", "numeric", ("n",)),
    InputColumn("c", "categorical", ("c",), categories=("H", "L", "M")),
    InputColumn("b", "boolean", ("b",)),
    InputColumn("t", "datetime", tuple(f"t__{p}" for p in ("month", "day", "dayofweek", "hour", "minute"))),
))


@contextmanager
def block_rows(rows: int):
    """Convert in blocks of ``rows`` (small blocks put block edges inside a short column)."""
    saved = features_module.BLOCK_ROWS
    features_module.BLOCK_ROWS = rows
    try:
        yield
    finally:
        features_module.BLOCK_ROWS = saved


def outcome(encode):
    """(feeds, errors) as plain comparable values, or the exception a conversion raised."""
    try:
        feeds, errors = encode()
    except Exception as exc:  # noqa: BLE001 (both paths must fail the same way, whatever the type)
        return type(exc), str(exc)
    plain = {}
    for name, arr in feeds.items():
        if arr.dtype.kind in "OU":
            assert all(type(v) is str for v in arr.ravel().tolist())
            plain[name] = ("text", arr.shape, arr.ravel().tolist())
        else:  # the bytes: NaN where NaN, -0.0 where -0.0
            plain[name] = (arr.dtype.str, arr.shape, np.ascontiguousarray(arr).tobytes())
    return plain, {i: (e.row, e.column, e.reason) for i, e in errors.items()}


# Values a device may be sent, per kind of column: good ones, missing ones, NA text and mistakes.
NA_TEXT = ["", " ", "NA", " n/a ", "#N/A", "null", "None", "?", "nan", "NaN"]
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.sampled_from([*NA_TEXT, "inf", "-inf", "1e39", " 3.5 ", "1_000", "twelve", "0x10", "١٢"]),
    st.sampled_from([None, True, False, 10**400, np.float64(2.5), np.float32(-1.5), np.int64(7), np.uint8(3),
                     np.float64("inf"), np.bool_(True), Decimal("1.5"), b"1.5", {"a": 1}, [1], ABSENT,
                     np.str_("4.5"), np.longdouble("1e300")]),
)
CATEGORIES = st.one_of(
    st.sampled_from(["H", "L", "M", "X", "", "  ", " L ", "\t", "never-seen"]),
    st.text(max_size=3),
    st.sampled_from([None, math.nan, 3, 2.5, True, np.str_("L"), np.str_("  "), b"L", {"a": 1}, [1], (1,), ABSENT]),
)
BOOLEANS = st.one_of(
    st.booleans(),
    st.sampled_from(["yes", "No", "1", "0", "true", "F", "maybe", *NA_TEXT]),
    st.sampled_from([None, math.nan, np.bool_(False), 1, 2, 0.0, ABSENT, [True]]),
)
DATETIMES = st.one_of(
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1)),
    st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(2100, 1, 1),
                 timezones=st.just(timezone(timedelta(hours=-5)))),
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1)).map(datetime.isoformat),
    st.sampled_from(["2024-03-01T12:30:00+01:00", "2024-03-01", "2024-03-01 12:30", "yesterday", *NA_TEXT]),
    st.sampled_from([None, math.nan, np.datetime64("2024-01-02T03:04:05.123456789"), np.datetime64("NaT"), 5,
                     ABSENT]),
)
VALUES = {"numeric": NUMBERS, "categorical": CATEGORIES, "boolean": BOOLEANS, "datetime": DATETIMES}


def objects(values) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        arr[i] = v
    return arr


@st.composite
def column(draw, kind: str, n: int):
    """``n`` values of one kind in a list, a tuple, an object array, or a typed NumPy array."""
    typed = {
        "numeric": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**62), 2**62)),
        "categorical": st.text(max_size=3),
        "boolean": st.booleans(),
        "datetime": st.one_of(st.datetimes(), st.none()),  # years 1 to 9999, or NaT
    }[kind]
    if draw(st.integers(0, 3)) == 0:  # NumPy's own dtype: float64 or int64, text, bool, datetime64
        values = draw(st.lists(typed, min_size=n, max_size=n))
        if kind != "datetime":
            return np.array(values)
        unit = draw(st.sampled_from(["us", "ms", "s", "m", "h", "D", "M"]))
        return np.array(values, dtype="datetime64[us]").astype(f"datetime64[{unit}]")
    values = draw(st.lists(VALUES[kind], min_size=n, max_size=n))
    return draw(st.sampled_from([list, tuple, objects]))(values)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_and_careful_conversion_agree(data):
    n = data.draw(st.integers(0, 30), label="rows")
    columns = {c.name: data.draw(column(c.kind, n), label=c.name) for c in SCHEMA.columns}
    first_row = data.draw(st.integers(1, 5000), label="first_row")
    careful = outcome(lambda: FeatureEncoder(SCHEMA, careful=True).encode(columns, n, first_row=first_row))
    with block_rows(data.draw(st.sampled_from([1, 2, 3, 8, BLOCK_ROWS]), label="block rows")):
        fast = outcome(lambda: FeatureEncoder(SCHEMA).encode(columns, n, first_row=first_row))
    assert fast == careful


def test_conversion_agrees_across_real_block_edges():
    rng = np.random.default_rng(5)
    n = 3 * BLOCK_ROWS + 17
    numbers = [f"{x:.3f}" for x in rng.normal(20, 5, n)]
    categories = [str(c) for c in rng.choice(["H", "L", "M"], n)]
    bad = [0, BLOCK_ROWS - 1, BLOCK_ROWS, 2 * BLOCK_ROWS + 5, n - 1]
    for i, (number, category) in zip(bad, [("twelve", None), ("1e39", "  "), (None, 3), ("NA", [1]), ("", "")],
                                     strict=True):
        numbers[i], categories[i] = number, category
    columns = {"n": numbers, "c": categories, "b": ["yes"] * n, "t": ["2024-05-06T07:08:09"] * n}
    fast = outcome(lambda: FeatureEncoder(SCHEMA).encode(columns, n))
    assert fast == outcome(lambda: FeatureEncoder(SCHEMA, careful=True).encode(columns, n))
    assert sorted(fast[1]) == [0, BLOCK_ROWS - 1, 2 * BLOCK_ROWS + 5]
    assert fast[1][BLOCK_ROWS - 1] == (BLOCK_ROWS, "n", "'1e39' is not a finite 32-bit number")


@pytest.mark.parametrize("unit", ["ns", "us", "s", "m", "h", "D", "M", "Y"])
def test_datetime64_columns_agree_at_the_ends_of_the_calendar(unit):
    for values in (["1969-12-31T23:59:59.999999", "1970-01-01", "1900-02-28T01:02", "2000-02-29T23:59", "NaT"],
                   ["0001-01-01T00:00", "9999-12-31T23:59:59"], ["10000-01-01"], ["-0001-01-01"]):
        try:
            column = np.array(values, dtype=f"datetime64[{unit}]")
        except (ValueError, OverflowError):  # e.g. year 1 in nanoseconds
            continue
        columns = {"n": [1] * len(column), "c": ["L"] * len(column), "b": [True] * len(column), "t": column}
        fast = outcome(lambda: FeatureEncoder(SCHEMA).encode(columns, len(column)))  # noqa: B023
        assert fast == outcome(lambda: FeatureEncoder(SCHEMA, careful=True).encode(columns, len(column)))  # noqa: B023


# The same matrix on a real bundle: each form of input against the careful path, for every engine.

EDGE_ROWS = [0, 1, BLOCK_ROWS - 1, BLOCK_ROWS, BLOCK_ROWS + 1, 2 * BLOCK_ROWS - 1, 2 * BLOCK_ROWS]


def pick(rng, options):
    return options[int(rng.integers(len(options)))]


def _bad_numbers(r, i, rng):
    r[pick(rng, NUMERIC)] = ["twelve", "1e39", 10**400, float("inf"), True, {"a": 1}, Decimal("2")][i % 7]


def _missing(r, i, rng):
    col = pick(rng, [*NUMERIC, "machine_type", "timestamp"])
    if i % 3 == 2:
        r.pop(col)
    else:
        r[col] = [None, ""][i % 3]


def _na_text(r, i, rng):
    r[pick(rng, [*NUMERIC, "timestamp"])] = ["NA", " n/a ", "#N/A", "null", "?", "nan"][i % 6]


def _unknown_categories(r, i, rng):
    r[pick(rng, ["machine_type", "machine_id"])] = ["never-seen", "  ", "", None, 3, float("nan"), " L "][i % 7]


def _datetimes(r, i, rng):
    r["timestamp"] = ["2024-03-01T12:30:00+01:00", "2024-03-01", datetime(2024, 5, 6, 7, 8), "yesterday", None,
                      "2024-02-30", 17][i % 7]


def _typed(r, i, rng):
    for col in NUMERIC:
        if r.get(col) not in (None, ""):
            r[col] = float(r[col]) if i % 2 else int(float(r[col]))


def _extra_column(r, i, rng):
    r["serial"] = f"X-{i}"


SCENARIOS = {
    "clean": [],
    "bad numbers": [_bad_numbers],
    "missing values": [_missing],
    "NA text": [_na_text],
    "unknown categories": [_unknown_categories],
    "datetimes": [_datetimes],
    "typed values": [_typed],
    "everything": [_typed, _bad_numbers, _missing, _na_text, _unknown_categories, _datetimes, _extra_column],
}
NUMERIC = ["air_temp_c", "process_temp_c", "rpm", "torque_nm", "vibration_mm_s", "tool_wear_min"]


@pytest.fixture(scope="module")
def base_rows(demo_rows):
    with open(demo_rows, newline="") as f:
        rows = list(csv.DictReader(f))
    return [dict(rows[i % len(rows)]) for i in range(2 * BLOCK_ROWS + 300)]


def scenario_rows(base_rows, name: str) -> list[dict]:
    rows = [dict(r) for r in base_rows]
    rng = np.random.default_rng(sorted(SCENARIOS).index(name))
    targets = sorted({*EDGE_ROWS, *rng.choice(len(rows), 60, replace=False).tolist()})
    for k, i in enumerate(targets):
        for change in SCENARIOS[name]:
            change(rows[i], k, rng)
    return rows


@pytest.fixture(scope="module", params=["model.onnx", "model.tflite"])
def models(request, demo_bundle):
    """(the model as it runs, the same model with the careful encoder)."""
    if not (demo_bundle / request.param).is_file():
        pytest.skip(f"the demo bundle has no {request.param}")
    fast = Model.load(demo_bundle, artifact=request.param)
    careful = Model.load(demo_bundle, artifact=request.param)
    careful.encoder = FeatureEncoder(careful.manifest.schema, careful=True)
    return fast, careful


def as_columns(rows: list[dict], names) -> dict[str, list]:
    """The careful reading of records: each column's values, ABSENT where a record lacks the key."""
    return {name: [r.get(name, ABSENT) for r in rows] for name in names}


def numpy_columns(rows: list[dict], schema) -> dict[str, np.ndarray]:
    """A mapping of NumPy columns: numbers as float64 where each reads as one, text as text, else objects."""
    out = {}
    for col in schema.columns:
        values = [r.get(col.name, ABSENT) for r in rows]
        out[col.name] = objects(values)
        if col.kind == "numeric" and set(map(type, values)) <= {float, int, str}:
            try:  # inf and 1e39 stay: the array path's own errors
                out[col.name] = np.array([float(v) for v in values], dtype=np.float64)
            except (ValueError, OverflowError):  # NA text, text that is no number, an int beyond float64
                pass
        elif col.kind != "numeric" and set(map(type, values)) == {str}:
            out[col.name] = np.array(values)
    return out


def scored(predict, *args, **kwargs):
    """``predict(*args, **kwargs)`` as plain comparable values, or the row error it raised."""
    try:
        p = predict(*args, **kwargs)
    except RowError as exc:
        return "raised", exc.row, exc.column, exc.reason
    return (p.labels.tolist(), None if p.probabilities is None else p.probabilities.tobytes(), p.rows.tolist(),
            [(e.row, e.column, e.reason) for e in p.errors], p.ignored_columns)


@pytest.mark.parametrize("on_error", ["skip", "fail"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("form", ["list of dicts", "numpy columns", "columns of lists"])
def test_batch_forms_score_like_the_careful_path(models, base_rows, scenario, form, on_error):
    fast, careful = models
    names = fast.manifest.schema.names
    rows = scenario_rows(base_rows, scenario)
    if form == "list of dicts":
        got = scored(fast.predict, rows, on_error=on_error, first_row=3)
        want = scored(careful.predict, as_columns(rows, names), on_error=on_error, first_row=3)
        want = want if want[0] == "raised" else (*want[:4], tuple(k for k in rows[0] if k not in names))
    else:
        columns = numpy_columns(rows, fast.manifest.schema) if form == "numpy columns" else as_columns(rows, names)
        got = scored(fast.predict, columns, on_error=on_error, first_row=3)
        want = scored(careful.predict, columns, on_error=on_error, first_row=3)
    assert got == want
    clean = ("clean", "typed values", "unknown categories", "NA text")
    assert (got[0] == "raised") == (on_error == "fail" and scenario not in clean)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_one_record_scores_like_the_careful_path(models, base_rows, scenario):
    fast, careful = models
    names = fast.manifest.schema.names
    rows = scenario_rows(base_rows, scenario)
    picked = sorted({*EDGE_ROWS, *range(0, len(rows), 97)} | {i for i, r in enumerate(rows) if r != base_rows[i]})
    for i in picked[:150]:
        got = scored(fast.predict, [rows[i]], on_error="skip", row_numbers=[i + 1])
        want = scored(careful.predict, as_columns([rows[i]], names), on_error="skip", row_numbers=[i + 1])
        assert got == (*want[:4], tuple(k for k in rows[i] if k not in names)), f"row {i}: {rows[i]}"
        if all(map(np.isscalar, rows[i].values())):  # one dict of values, not a mapping of columns
            assert scored(fast.predict, rows[i], on_error="skip", first_row=i + 1) == got


def test_column_no_record_has_is_named_the_same_way(models, base_rows):
    fast, careful = models
    rows = [{k: v for k, v in r.items() if k != "rpm"} for r in base_rows]
    with pytest.raises(InputError, match="missing column") as got:
        fast.predict(rows)
    columns = {k: v for k, v in as_columns(rows, fast.manifest.schema.names).items() if k != "rpm"}
    with pytest.raises(InputError, match="missing column") as want:
        careful.predict(columns)
    assert str(got.value) == str(want.value) and "'rpm'" in str(got.value)


def test_drift_monitor_counts_the_same(models, base_rows):
    fast, careful = models
    names = fast.manifest.schema.names
    rows = scenario_rows(base_rows, "everything")
    windows = []
    for model, batch in ((fast, rows), (careful, as_columns(rows, names))):
        model.monitor = model.drift_monitor(clock=lambda: 1000.0)
        try:
            model.predict(batch, on_error="skip")
            for r in rows[:40]:
                model.predict([r], on_error="skip")
            windows.append([*model.monitor.poll(), model.monitor.flush()])
        finally:
            model.monitor = None
    # the engine's seconds differ from run to run; the rows it timed do not
    timed = [[w.pop("latency", {}).get("rows") for w in run] for run in windows]
    assert timed[0] == timed[1]
    assert windows[0] == windows[1]
    assert sum(w["rows"] for w in windows[0]) == len(rows) + 40 - sum(w["bad_rows"] for w in windows[0])
