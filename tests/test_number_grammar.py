"""One number grammar, the runtime's, on the host and on the device.

Python's ``float()`` reads ``1_551`` and Arabic-Indic ``١٢``; pandas does not.
The device used ``float()``, the host's column-kind rules pandas, so one text
was a number on one side and text on the other. Now both read text with
:func:`edgeml_runtime.cells.to_number` (ASCII digits, no ``_``), and the
hypothesis tests hold host and device, scalar and block paths, and a reference
regular expression to the same answer for every generated string.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeml.data.kinds import Judged, judge_column, parse_numbers
from edgeml_runtime.cells import BadValue, to_number
from edgeml_runtime.features import FeatureEncoder, read_numbers
from edgeml_runtime.schema import InputColumn, InputSchema

F32_MAX = float(np.finfo(np.float32).max)
#: The grammar as a regular expression: float()'s, in ASCII, without '_' (nan is a missing value).
NUMBER = re.compile(r"[ \t\n\r\f\v]*[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)[ \t\n\r\f\v]*",
                    re.IGNORECASE | re.ASCII)
_PIECES = st.sampled_from(["1", "0", "9", "5", "_", ".", "e", "E", "+", "-", " ", "\t", "١", "٢", "٣", "１", "۵",
                           "\u00a0", "\u2003", "inf", "nan", "x", ",", "1_551"])
TEXTS = st.lists(_PIECES, max_size=7).map("".join)


def device(text):
    """What the device reads (text or a number): a float, 'missing', or 'bad'."""
    try:
        f = to_number(text)
    except BadValue:
        return "bad"
    return "missing" if math.isnan(f) else f


def host(text: str):
    """What the host's column-kind rules read for this value: parse_numbers over a column of it and "1"."""
    parsed = parse_numbers(pd.Series([text, "1"], dtype=object), share=1.0)
    if parsed is None:
        return "bad"
    return float(parsed.iloc[0]) if len(parsed) == 2 else "missing"


def reference(text: str):
    if not NUMBER.fullmatch(text):
        return "missing" if text.strip().lower() in {"", "na", "nan", "null", "none", "n/a", "#n/a", "?"} else "bad"
    f = float(text)
    if math.isnan(f):
        return "missing"
    return f if -F32_MAX <= f <= F32_MAX else "bad"


@settings(max_examples=700, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(TEXTS)
def test_host_device_and_the_grammar_agree_on_every_string(text):
    """700 strings: the device, the host and the reference grammar read each one the same way."""
    assert device(text) == host(text) == reference(text), text


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(TEXTS, st.floats(allow_nan=False, width=32), st.integers(-10**6, 10**6)), max_size=40))
def test_the_block_path_reads_as_the_scalar_path(values):
    """300 mixed columns: the fast block conversion (host and device) equals to_number value by value."""
    x, bad = read_numbers(values)
    for i, v in enumerate(values):
        want = device(v)
        got = "bad" if i in bad else ("missing" if math.isnan(x[i]) else float(x[i]))
        assert got == want, (i, v)


@pytest.mark.parametrize("value", ["1_551", "١٢", "１２", "3.5\u00a0", "1e39"])
def test_the_device_refuses_them_as_a_row_error(value):
    schema = InputSchema((InputColumn("temp", "numeric", ("temp",)),))
    feeds, errors = FeatureEncoder(schema).encode({"temp": ["21.5", value]}, 2)
    assert feeds["temp"].ravel().tolist()[0] == 21.5 and list(errors) == [1]
    hint = "finite 32-bit" if value == "1e39" else "write numbers with ASCII digits, without '_'"
    assert hint in errors[1].reason and repr(value) in errors[1].reason


def test_a_column_with_a_few_such_values_reads_them_as_missing_on_both_sides():
    """3 of 63 values are no plain number: the column is numeric by the text grammar (90 %), those 3 values
    missing on the host and on the device alike (before, the column became a categorical)."""
    mostly = pd.Series([f"{i % 7}.5" for i in range(60)] + ["1_551", "2_003", "٣"], name="temp", dtype=object)
    judged = judge_column(mostly)
    assert judged.kind == "numeric" and judged.number_format is not None
    assert "3 values that are no number become missing: '1_551', '2_003', '٣'" in judged.notes[0]
    column = InputColumn("temp", "numeric", ("temp",), number_format=judged.number_format)
    feeds, errors = FeatureEncoder(InputSchema((column,))).encode({"temp": mostly.tolist()}, len(mostly))
    assert not errors and np.isnan(feeds["temp"].ravel()[60:]).all()
    plain = pd.Series([f"{i % 7}.5" for i in range(60)] + ["1551", "2003", "3"], name="temp", dtype=object)
    assert judge_column(plain) == Judged("numeric")
