"""Drift monitoring on the device, on real bundles and real rows: windows, statistics, shifts, payloads."""

from __future__ import annotations

import csv
import json
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import AI4I_DROP, build_bundle, run_env
from test_runtime_cli import ISOLATION

from edgeml_runtime import BundleError, Model, RowError
from edgeml_runtime.drift import (
    CHUNK_ROWS,
    STATISTICS,
    DriftMonitor,
    DriftSettings,
    statistic,
    statistics_from_counts,
)
from edgeml_runtime.protocol import VerdictRule

T0 = 1_700_000_000.0


class Clock:
    """A clock the test moves by hand: no sleeping, no wall-clock dependence."""

    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def _rows(path, n, seed):
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    return random.Random(seed).sample(rows, n)


@pytest.fixture(scope="module")
def ai4i(datasets, tmp_path_factory):
    out = tmp_path_factory.mktemp("drift") / "ai4i-1"
    build_bundle(out, data=str(datasets / "ai4i2020.csv"), label="Machine failure", drop=AI4I_DROP,
                 estimators=("lgbm",))
    return Model.load(out)


@pytest.fixture(scope="module")
def ai4i_rows(datasets):
    return _rows(datasets / "ai4i2020.csv", 3000, seed=1)


def _monitor(model, clock=None, min_rows=100, **settings):
    return model.drift_monitor(DriftSettings(rule=VerdictRule(min_rows=min_rows), **settings), clock=clock or Clock())


def _window(model, rows, **settings):
    model.monitor = _monitor(model, window_rows=len(rows) + 1, **settings)
    try:
        model.predict(rows, on_error="skip")
        return model.monitor.flush()
    finally:
        model.monitor = None


def _shifted(rows, column, by):
    return [dict(r, **{column: str(float(r[column]) + by)}) for r in rows]


def test_unshifted_rows_are_not_flagged(ai4i, ai4i_rows):
    window = _window(ai4i, ai4i_rows[:1000])
    assert window["rows"] == 1000 and window["bad_rows"] == 0
    # six input columns and the output: seven tests at 0.01 / 7
    assert window["verdict"] == {"status": "ok", "drifted_columns": [], "share": 0.0, "tests": 7,
                                 "level": 0.00142857}
    for name, col in window["columns"].items():
        assert col["psi"] < 0.1 and col["status"] == "ok", (name, col)
        assert 0 <= col["p_value"] <= 1
        assert sum(col["counts"]) + col["missing"] == 1000
    assert window["output"]["status"] in ("ok", "moderate") and sum(window["output"]["counts"]) == 1000


def test_a_shifted_column_is_significant_and_the_verdict_reflects_it(ai4i, ai4i_rows):
    rows = ai4i_rows[:1000]
    torque = np.array([float(r["Torque [Nm]"]) for r in rows])
    shifted = _shifted(rows, "Torque [Nm]", 3 * torque.std())
    window = _window(ai4i, shifted)
    col = window["columns"]["Torque [Nm]"]
    assert col["status"] == "significant" and col["psi"] > 1 and col["js"] > 0.5
    assert col["above_range"] > 0 and col["below_range"] == 0
    others = [c for name, c in window["columns"].items() if name != "Torque [Nm]"]
    assert all(c["status"] == "ok" for c in others)
    # one column of six: listed, but below the dataset-level share of 0.3
    assert col["p_value"] < 1e-100  # 1,000 rows, most beyond the training range
    assert window["verdict"] == {"status": "ok", "drifted_columns": ["Torque [Nm]"],
                                 "share": pytest.approx(1 / 6, abs=1e-6), "tests": 7, "level": 0.00142857}

    # A second one (every machine now of an unknown type): 2 of 6 columns, drift.
    both = [dict(r, Type="X") for r in shifted]
    window = _window(ai4i, both)
    assert window["columns"]["Type"]["counts"] == [0, 0, 0, 1000]  # H, L, M, other
    assert window["verdict"]["status"] == "drift"
    assert window["verdict"]["drifted_columns"] == ["Type", "Torque [Nm]"]


def test_one_row_path_counts_exactly_like_a_batch(ai4i, ai4i_rows):
    rows = ai4i_rows[: CHUNK_ROWS * 2 + 37]  # several chunks and a partial one
    batch = _window(ai4i, rows)
    ai4i.monitor = _monitor(ai4i, window_rows=len(rows) + 1)
    try:
        for r in rows:
            ai4i.predict([r])
        single = ai4i.monitor.flush()
    finally:
        ai4i.monitor = None
    # every row was timed on both paths; the seconds are the engine's own and differ
    assert single.pop("latency")["rows"] == batch.pop("latency")["rows"] == len(rows)
    assert single == batch


def test_window_closes_after_n_rows_in_batches_and_single_rows(ai4i, ai4i_rows):
    clock = Clock()
    ai4i.monitor = monitor = _monitor(ai4i, clock, window_rows=100, min_rows=10)
    try:
        ai4i.predict(ai4i_rows[:250])  # splits into 100 + 100, 50 stay open
        assert [w["rows"] for w in monitor.poll()] == [100, 100] and monitor.rows == 50
        for r in ai4i_rows[250:310]:
            ai4i.predict([r])
        [window] = monitor.poll()
        assert window["rows"] == 100 and monitor.rows == 10
        assert monitor.poll() == []
    finally:
        ai4i.monitor = None


def test_window_closes_after_t_seconds_with_an_injected_clock(ai4i, ai4i_rows):
    clock = Clock()
    ai4i.monitor = monitor = _monitor(ai4i, clock, window_seconds=60, min_rows=1)
    try:
        for r in ai4i_rows[:20]:
            ai4i.predict([r])
        clock.t += 59.9
        assert monitor.poll() == []
        clock.t += 0.1
        [window] = monitor.poll()
        assert window["rows"] == 20
        assert (window["start"], window["end"]) == ("2023-11-14T22:13:20.000Z", "2023-11-14T22:14:20.000Z")
        clock.t += 3600  # idle: nothing to report, and the next window starts afresh
        assert monitor.poll() == [] and monitor.flush() is None
        ai4i.predict([ai4i_rows[0]])
        clock.t += 30
        assert monitor.poll() == []
        assert monitor.flush()["start"] == "2023-11-14T23:14:20.000Z"
    finally:
        ai4i.monitor = None


def test_bad_rows_are_counted_with_the_first_errors(ai4i, ai4i_rows):
    rows = [dict(r) for r in ai4i_rows[:200]]
    for i in range(0, 70, 10):
        rows[i]["Torque [Nm]"] = "n/a?"
    del rows[3]["Type"]
    window = _window(ai4i, rows, max_errors=3)
    assert window["rows"] == 192 and window["bad_rows"] == 8
    assert window["errors"] == [
        "row 1, column 'Torque [Nm]': could not read 'n/a?' as a number",
        "row 4, column 'Type': the record has no such field (send null for a missing value)",
        "row 11, column 'Torque [Nm]': could not read 'n/a?' as a number",
    ]
    # the one-row path: a bad record falls back to the general path and is still counted
    ai4i.monitor = monitor = _monitor(ai4i)
    try:
        assert len(ai4i.predict([rows[0]], on_error="skip")) == 0
        ai4i.predict([rows[1]])
        monitor.update({}, None, [RowError(7, None, "not JSON")])  # a record that never reached the model
        window = monitor.flush()
        assert (window["rows"], window["bad_rows"]) == (1, 2)
        assert window["errors"][-1] == "row 7: not JSON"
    finally:
        ai4i.monitor = None


def test_counts_add_up_across_windows(ai4i, ai4i_rows):
    rows = _shifted(ai4i_rows[:2000], "Tool wear [min]", 40.0)
    whole = _window(ai4i, rows, min_rows=1)
    ai4i.monitor = monitor = _monitor(ai4i, window_rows=700, min_rows=1)
    try:
        ai4i.predict(rows)
        parts = [*monitor.poll(), monitor.flush()]
    finally:
        ai4i.monitor = None
    assert [p["rows"] for p in parts] == [700, 700, 600]
    reference = ai4i.manifest.reference.to_dict()
    for name, col in whole["columns"].items():
        counts = [sum(c) for c in zip(*(p["columns"][name]["counts"] for p in parts), strict=False)]
        missing = sum(p["columns"][name]["missing"] for p in parts)
        assert counts == col["counts"] and missing == col["missing"]
        assert statistics_from_counts(reference["columns"][name], counts, missing) == {"psi": col["psi"],
                                                                                      "js": col["js"]}
    out = [sum(c) for c in zip(*(p["output"]["counts"] for p in parts), strict=False)]
    assert statistics_from_counts(reference["output"], out) == {"psi": whole["output"]["psi"],
                                                               "js": whole["output"]["js"]}
    assert whole["columns"]["Tool wear [min]"]["status"] == "significant"


def test_windows_are_valid_json_even_without_statistics(ai4i, ai4i_rows):
    all_bad = [dict(r, **{"Air temperature [K]": "hot"}) for r in ai4i_rows[:5]]
    window = _window(ai4i, all_bad)
    assert window["rows"] == 0 and window["bad_rows"] == 5
    assert all(c["psi"] is None and c["js"] is None and c["status"] is None for c in window["columns"].values())
    assert window["verdict"]["status"] is None
    blank = [dict(r, **{"Air temperature [K]": ""}) for r in ai4i_rows[:300]]  # all missing: imputed, still scored
    window = _window(ai4i, blank)
    assert window["columns"]["Air temperature [K]"]["missing"] == 300
    assert window["columns"]["Air temperature [K]"]["status"] == "significant"
    for w in (window, _window(ai4i, ai4i_rows[:3])):
        json.loads(json.dumps(w, allow_nan=False))
    few = _window(ai4i, ai4i_rows[:3])  # below min_rows: statistics, but no judgement
    assert few["columns"]["Type"]["psi"] is not None and few["verdict"]["status"] is None


def test_regression_output_and_fleet_statistics(datasets, tmp_path):
    out = tmp_path / "ccpp-1"
    build_bundle(out, data=str(datasets / "ccpp.csv"), label="PE", estimators=("lgbm",))
    model = Model.load(out)
    rows = _rows(datasets / "ccpp.csv", 1000, seed=2)
    window = _window(model, rows)
    assert window["output"]["kind"] == "numeric" and sum(window["output"]["counts"]) == 1000
    assert window["verdict"]["status"] == "ok" and window["output"]["status"] == "ok"
    hot = _window(model, _shifted(rows, "AT", 15.0))  # a heat wave: inputs and predicted output both move
    assert "AT" in hot["verdict"]["drifted_columns"] and hot["output"]["status"] == "significant"


def test_boolean_columns_on_a_real_bundle(datasets, tmp_path):
    out = tmp_path / "telco-1"
    build_bundle(out, data=str(datasets / "telco-churn.csv"), label="Churn", estimators=("lgbm",), max_iter=2)
    model = Model.load(out)
    rows = _rows(datasets / "telco-churn.csv", 1000, seed=3)
    assert _window(model, rows)["verdict"]["status"] == "ok"
    flipped = [dict(r, PhoneService="No" if r["PhoneService"] == "Yes" else "Yes") for r in rows]
    col = _window(model, flipped)["columns"]["PhoneService"]
    assert col["kind"] == "boolean" and col["status"] == "significant" and len(col["counts"]) == 2


def test_monitoring_does_not_change_predictions(ai4i, ai4i_rows):
    plain = ai4i.predict(ai4i_rows[:50])
    ai4i.monitor = monitor = _monitor(ai4i)
    try:
        watched = ai4i.predict(ai4i_rows[:50])
        one = ai4i.predict([ai4i_rows[0]])
    finally:
        ai4i.monitor = None
    np.testing.assert_array_equal(plain.probabilities, watched.probabilities)
    assert one.labels[0] == plain.labels[0]
    ai4i.predict(ai4i_rows[:50])
    ai4i.predict([ai4i_rows[0]])
    assert monitor.rows == 51, "a detached monitor is no longer updated"


def test_reset_forgets_the_window(ai4i, ai4i_rows):
    monitor = _monitor(ai4i, window_rows=10)
    ai4i.monitor = monitor
    try:
        ai4i.predict(ai4i_rows[:25])
    finally:
        ai4i.monitor = None
    assert monitor.reset().rows == 0 and monitor.poll() == [] and monitor.flush() is None


def test_bundle_without_reference_says_rebuild(demo_bundle, tmp_path):
    copy = shutil.copytree(demo_bundle, tmp_path / "old")
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["reference"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"manifest.json: reference is missing; rebuild the bundle"):
        Model.load(copy)


def test_datetime_columns_are_not_monitored(demo_bundle):
    monitor = Model.load(demo_bundle).drift_monitor()
    assert "timestamp" not in monitor.monitored and "air_temp_c" in monitor.monitored


def test_statistics_registry_refuses_to_overwrite():
    with pytest.raises(ValueError, match="'psi' is already registered"):
        statistic("psi")(lambda expected, actual: 0.0)
    assert list(STATISTICS) == ["psi", "js"]


def test_settings_are_checked():
    from edgeml_runtime.errors import SettingsError

    with pytest.raises(SettingsError, match=r"^window_rows = 0: must be a whole number of rows, at least 1"):
        DriftSettings(window_rows=0)
    with pytest.raises(SettingsError, match=r"^window_seconds = inf: must be a finite number of seconds above 0"):
        DriftSettings(window_seconds=float("inf"))
    with pytest.raises(SettingsError, match=r"^psi_moderate = 0.3: must satisfy 0 < psi_moderate <= psi_significant, "
                                            r"with psi_significant = 0.2;"):
        DriftSettings(rule=VerdictRule(psi_moderate=0.3, psi_significant=0.2))
    with pytest.raises(SettingsError, match=r"^psi_moderate = 0: must satisfy 0 < psi_moderate"):
        VerdictRule(psi_moderate=0)  # the one bound, here as in the settings: 0 < psi_moderate
    with pytest.raises(SettingsError, match=r"^rule = \{'min_rows': 1\}: must be a VerdictRule"):
        DriftSettings(rule={"min_rows": 1})


def test_monitor_refuses_a_reference_it_cannot_read(ai4i):
    reference = dict(ai4i.manifest.reference.to_dict(), format=99)
    with pytest.raises(BundleError, match="format 99"):
        DriftMonitor(reference, ai4i.manifest.schema)


# The runtime's own isolation script, with a monitor attached, updated one row and many rows at a time, and flushed.
MONITORED = ISOLATION.replace("m.predict(rows)\n",
                              "m.monitor = m.drift_monitor()\nm.predict(rows)\nm.predict(rows[:1])\n"
                              "json.dumps(m.monitor.flush(), allow_nan=False)\n")


def test_monitoring_keeps_the_runtime_light(demo_bundle, demo_rows):
    assert MONITORED != ISOLATION, "test_runtime_cli.ISOLATION changed: update MONITORED"
    r = subprocess.run([sys.executable, "-c", MONITORED, str(demo_bundle), str(demo_rows)], capture_output=True,
                       text=True, env=run_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []


def test_the_fleet_recipe_in_the_docs_reaches_the_verdict_of_one_device(ai4i, ai4i_rows):
    """docs/drift.md's fleet recipe, run as written on a birth built by the device's own builders."""
    import re
    from pathlib import Path
    from types import SimpleNamespace

    from edgeml_runtime.agent import birth_description
    from edgeml_runtime.payloads import dumps
    from edgeml_runtime.protocol import DeviceTopics, describe_model, envelopes

    doc = (Path(__file__).resolve().parents[1] / "docs" / "drift.md").read_text()
    (recipe,) = re.findall(r"<!-- tested: tests/test_drift.py::test_the_fleet_recipe[^>]*-->\n```python\n(.*?)```",
                           doc, re.S)
    rows = ai4i_rows[:900]
    settings = DriftSettings(window_rows=300, rule=VerdictRule(psi_significant=0.2, min_rows=500))
    device = DeviceTopics("plant-a", "pi-07")
    birth = envelopes.birth(device, bd_seq=1, time="2026-01-01T00:00:00.000Z", runtime={"version": "0"},
                            description=birth_description(describe_model(ai4i), settings))
    ai4i.monitor = ai4i.drift_monitor(settings, clock=Clock())
    try:
        ai4i.predict(rows, on_error="skip")
        windows = json.loads(json.dumps(ai4i.monitor.poll()))  # as a controller receives them
    finally:
        ai4i.monitor = None
    assert [w["rows"] for w in windows] == [300, 300, 300]
    assert [w["verdict"]["status"] for w in windows] == [None] * 3  # each below min_rows: no device can judge

    space = {"message": SimpleNamespace(topic=device.birth, payload=dumps(birth)), "windows": windows,
             "manifest": {"reference": ai4i.manifest.reference.to_dict()}}
    exec(recipe, space)
    assert space["rule"] == settings.rule
    ai4i.monitor = ai4i.drift_monitor(DriftSettings(window_rows=len(rows) + 1, rule=settings.rule), clock=Clock())
    try:
        ai4i.predict(rows, on_error="skip")
        single = ai4i.monitor.flush()  # one device that saw all 900 rows
    finally:
        ai4i.monitor = None
    judged = space["judged"]
    assert judged["verdict"]["status"] is not None and judged["verdict"] == single["verdict"]
    assert judged["columns"] == {n: {k: c[k] for k in ("psi", "js", "p_value", "status")}
                                 for n, c in single["columns"].items()}
