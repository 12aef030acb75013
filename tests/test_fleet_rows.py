"""What a received message becomes (:mod:`edgeml.fleet.rows`): every bad value named by column and key.

``prepare`` checks a window's counts all at once (the fast path) and, when
one is bad, goes through them one by one (the slow path) to name it; these
tests hold the names, their order, and the rows of both paths equal. The
messages are real drift windows (``fleet_helpers``), read back by ``decode``.
"""

from __future__ import annotations

import copy
import json
from collections import OrderedDict

import pytest
from fleet_helpers import DRIFT, window

from edgeml.fleet.rows import prepare

_RANGE = "it must be a whole number from 0 to 9223372036854775807"


def _window() -> dict:
    return copy.deepcopy(window("pi-07", 1, 0)[1])


def _set(message: dict, path: str, value) -> dict:
    """``message`` with the value at a dotted path (``columns.x1.counts``) replaced."""
    *parents, last = path.split(".")
    part = message
    for key in parents:
        part = part[key]
    part[last] = value
    return message


@pytest.mark.parametrize(("path", "value", "reason"), [
    ("columns.x1.counts", [1, True], f"columns['x1'].counts[1] is True; {_RANGE}"),
    ("columns.x0.counts", [1.0, 2], f"columns['x0'].counts[0] is 1.0; {_RANGE}"),
    ("columns.x2.counts", [3, None], f"columns['x2'].counts[1] is None; {_RANGE}"),
    ("columns.x2.counts", [-1], f"columns['x2'].counts[0] is -1; {_RANGE}"),
    ("columns.x0.counts", ["7"], f"columns['x0'].counts[0] is '7'; {_RANGE}"),
    ("columns.x0.counts", [2**63], f"columns['x0'].counts[0] is 9223372036854775808; {_RANGE}"),
    ("columns.x0.counts", [[1]], f"columns['x0'].counts[0] is [1]; {_RANGE}"),
    ("columns.x0.counts", [], "columns['x0'].counts is [], not a non-empty list of counts"),
    ("columns.x0.counts", "12", "columns['x0'].counts is '12', not a non-empty list of counts"),
    ("columns.x1.missing", -1, f"columns['x1'].missing is -1; {_RANGE}"),
    ("columns.x1.below_range", 2.5, f"columns['x1'].below_range is 2.5; {_RANGE}"),
    ("columns.x2.above_range", False, f"columns['x2'].above_range is False; {_RANGE}"),
    ("columns.x1", [1], "columns['x1'] is list, not a JSON object"),
    ("columns", [], "columns is list, not a JSON object"),
    ("output.counts", [1, -2], f"output.counts[1] is -2; {_RANGE}"),
    ("output.missing", 2**64, f"output.missing is 18446744073709551616; {_RANGE}"),
    ("output", 3, "output is int, not a JSON object"),
    ("model.bundle_sha256", "AB" * 32, "model.bundle_sha256 is 'ABAB"),
    ("model.bundle_sha256", "ab" * 32 + "\n", f"model.bundle_sha256 is {'ab' * 32 + chr(10)!r}, not a bundle"),
])
def test_a_bad_value_is_named_by_its_column_and_key(path, value, reason):
    m = prepare(DRIFT, _set(_window(), path, value), 0.0)
    assert m.row == {} and m.reason.startswith(f"{DRIFT}: {reason}"), m.reason


def test_the_first_bad_value_is_named_columns_before_the_output_before_the_key():
    message = _set(_set(_window(), "columns.x2.missing", -1), "output", 3)
    assert prepare(DRIFT, message, 0.0).reason == f"{DRIFT}: columns['x2'].missing is -1; {_RANGE}"
    message = _set(_set(_window(), "output.counts", [True]), "session", -1)
    assert prepare(DRIFT, message, 0.0).reason == f"{DRIFT}: output.counts[0] is True; {_RANGE}"
    message = _set(_set(_window(), "columns.x0.counts", [1, 2, 3.5]), "columns.x1.counts", [-1])
    assert prepare(DRIFT, message, 0.0).reason == f"{DRIFT}: columns['x0'].counts[2] is 3.5; {_RANGE}"


def test_a_count_past_53_bits_takes_the_slow_path_and_is_kept_exactly():
    big = 2**63 - 1  # the fast path's orjson check refuses integers past 53 bits; the slow path takes them
    message = _set(_set(_window(), "columns.x1.counts", [big, 0, 2**53]), "output.missing", 2**60)
    m = prepare(DRIFT, message, 0.0)
    assert m.reason is None
    assert json.loads(m.row["counts"])["columns"]["x1"]["counts"] == [big, 0, 2**53]
    assert json.loads(m.row["counts"])["output"]["missing"] == 2**60


def test_the_fast_and_the_slow_path_make_the_same_row():
    fast = prepare(DRIFT, _window(), 0.0)
    message = _window()
    message["columns"]["x1"] = OrderedDict(message["columns"]["x1"])  # a Mapping, not a dict: the slow path
    slow = prepare(DRIFT, message, 0.0)
    assert fast.reason is slow.reason is None and fast.row == slow.row
    counts, statistics = json.loads(fast.row["counts"]), json.loads(fast.row["statistics"])
    assert list(counts["columns"]["x0"]) == [k for k in ("kind", "counts", "missing", "below_range", "above_range")
                                             if k in _window()["columns"]["x0"]]
    assert "counts" not in statistics["columns"]["x0"] and {"psi", "js", "status"} <= set(statistics["columns"]["x0"])
    assert counts["output"]["counts"] == _window()["output"]["counts"]
