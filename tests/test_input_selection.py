"""Fewer inputs for small devices (:mod:`edgeml.search.inputs`): the raw inputs that do not help the validation
metric are dropped, the manifest says why, and the device reads only the inputs kept.

The issue's test is ai4i2020 with five columns of seeded noise, built for cortex-m7 (a microcontroller: the stage is
on by default there). The rule itself is tested on tables whose answer is known by construction.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import AI4I_DROP, build_bundle

from edgeml.config import BuildConfig, read_config_file, resolve
from edgeml.data.prepare import prepare, without_inputs
from edgeml.errors import DataError
from edgeml.search.importance import Importance, feature_columns
from edgeml.search.inputs import (
    REDUCED_TOLERANCE,
    largest_drop,
    no_worse,
    select,
    select_inputs_stage,
    selects_by_default,
)
from edgeml.search.validation import choose_validation
from edgeml.targets.profiles import load_target
from edgeml.verify.bundle_check import check_bundle
from edgeml_runtime import Model

NOISE = tuple(f"noise_{i}" for i in range(1, 6))
SENSORS = ("Air temperature [K]", "Rotational speed [rpm]", "Torque [Nm]", "Tool wear [min]")
LABEL = "Machine failure"


@pytest.fixture(scope="module")
def ai4i_noisy(datasets, tmp_path_factory):
    """ai4i2020 with five columns of seeded Gaussian noise (written as a device would log them: 3 decimals)."""
    frame = pd.read_csv(datasets / "ai4i2020.csv")
    rng = np.random.default_rng(12)
    for name in NOISE:
        frame[name] = rng.normal(size=len(frame)).round(3)
    path = tmp_path_factory.mktemp("noisy") / "ai4i-noise.csv"
    frame.to_csv(path, index=False)
    return path, frame


def _cv(data):
    return choose_validation(len(data.y["train"]) + len(data.y["valid"]), data.task)


# --- the issue's test: one build --------------------------------------------------------------------------------


def test_ai4i_plus_noise_for_cortex_m7_drops_the_noise_and_says_why(ai4i_noisy, tmp_path):
    path, frame = ai4i_noisy
    out = tmp_path / "noisy-1"
    build_bundle(out, data=str(path), label=LABEL, drop=AI4I_DROP[2:], target="cortex-m7",
                          estimators=("lgbm",), max_iter=1, validation="auto")
    m = json.loads((out / "manifest.json").read_text())
    inputs = [c["name"] for c in m["inputs"]]
    reasons = {d["name"]: d["reason"] for d in m["dropped"]}
    assert set(NOISE) <= set(reasons) and not set(NOISE) & set(inputs)
    for name in NOISE:
        assert reasons[name].startswith(f"does not help the validation {m['search']['metric']}: permutation "
                                        "importance ")
        assert "(mean ± sd over 5 folds, 5 shuffles each, 8,500 out-of-fold rows)" in reasons[name]
    assert set(SENSORS) <= set(inputs)
    assert reasons["UDI"].startswith("identifier")  # the schema's own drops are still listed
    assert check_bundle(out).passed  # edgeml verify: files, schema, every artifact's parity on the samples
    # the device reads only the kept inputs: rows holding nothing else score as the full test rows do
    test = frame.iloc[-300:]
    model = Model.load(out)
    kept = [{c: str(v) for c, v in row.items() if c in inputs} for row in test.to_dict("records")]
    full = [{c: str(v) for c, v in row.items() if c != LABEL} for row in test.to_dict("records")]
    assert all(set(row) == set(inputs) for row in kept)
    np.testing.assert_array_equal(model.predict(kept).labels, model.predict(full).labels)
    samples = json.loads((out / m["samples"]["path"]).read_text())
    assert set(samples["columns"]) == set(inputs)


# --- the rule, on tables whose answer is known --------------------------------------------------------------------


def test_ai4i_noise_a_forest_uses_is_dropped_and_every_sensor_kept(ai4i_noisy):
    """A random forest of full-depth trees splits on the noise too; shuffled on held-out rows it does not matter."""
    _, frame = ai4i_noisy
    data = prepare(frame, LABEL, drop=AI4I_DROP[2:])
    s = select(data, "rf", {"n_estimators": 6}, "roc_auc", _cv(data))
    assert set(NOISE) <= set(s.dropped) and set(SENSORS) <= set(s.kept)
    used = {i.column: i for i in s.importances}
    assert all(used[n].sd > 0 for n in NOISE)  # the forest does read them: shuffling moves its predictions
    assert all(used[n].mean < used[c].mean for n in NOISE for c in SENSORS)
    assert s.reduced > s.full - 0.01  # the held-out ROC AUC without them: as good, within the folds' noise


def _table(rows: int, seed: int, **columns) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({name: make(rng, rows) for name, make in columns.items()})


def test_a_column_that_decides_the_label_stays_and_pure_noise_goes():
    rng = np.random.default_rng(3)
    colour = rng.choice(["red", "green", "blue"], 600)
    frame = pd.DataFrame({"colour": colour, "noise": rng.normal(size=600), "stamp": pd.date_range(
        "2024-01-01", periods=600, freq="37min").strftime("%Y-%m-%d %H:%M"), "y": (colour == "red").astype(int)})
    data = prepare(frame, "y")
    groups = feature_columns(data)
    assert len(groups["colour"]) == 3 and len(groups["stamp"]) > 1  # judged as raw columns, not features
    s = select(data, "lrl2", {"C": 1.0}, "roc_auc", _cv(data))
    assert s.kept == ("colour",) and set(s.dropped) == {"noise", "stamp"}
    assert s.full == pytest.approx(1.0) and s.reduced == pytest.approx(1.0)
    reduced = without_inputs(data, s.dropped)
    assert reduced.inputs.names == ["colour"] and reduced.schema.dropped[-1].reason == s.dropped["stamp"]
    assert reduced.X["train"].shape == (len(data.y["train"]), 3)


def test_regression_noise_goes_with_a_tolerance_relative_to_the_error():
    frame = _table(500, 4, a=lambda r, n: r.normal(size=n), noise=lambda r, n: r.normal(size=n))
    frame["y"] = 1000.0 * frame["a"] + np.random.default_rng(5).normal(scale=50.0, size=500)
    data = prepare(frame, "y", task="regression")
    s = select(data, "enet", {"alpha": 1e-4, "l1_ratio": 0.5}, "rmse", _cv(data))
    assert s.kept == ("a",) and "does not help the validation rmse" in s.dropped["noise"]
    assert 40 < s.full < 60 and s.reduced <= s.full * (1 + REDUCED_TOLERANCE)


def test_under_a_holdout_the_spread_is_over_parts_of_the_validation_rows():
    frame = _table(800, 9, a=lambda r, n: r.normal(size=n), noise=lambda r, n: r.normal(size=n))
    frame["y"] = (frame["a"] + np.random.default_rng(10).normal(scale=0.5, size=800) > 0).astype(int)
    data = prepare(frame, "y")
    s = select(data, "lgbm", {"n_estimators": 20, "num_leaves": 8}, "f1",
               choose_validation(680, "classification", valid_rows=len(data.y["valid"]), in_time_order=True))
    assert (s.where, s.rows, s.kept) == ("validation", len(data.y["valid"]), ("a",))
    assert f"over 5 parts of the validation rows, 5 shuffles each, {s.rows} validation rows" in s.dropped["noise"]


def test_never_every_input_the_most_important_stays():
    frame = _table(400, 6, a=lambda r, n: r.normal(size=n), b=lambda r, n: r.normal(size=n),
                   c=lambda r, n: r.normal(size=n), y=lambda r, n: r.integers(0, 2, n))
    data = prepare(frame, "y")
    s = select(data, "lrl2", {"C": 1.0}, "roc_auc", _cv(data))
    assert len(s.kept) == 1 and len(s.dropped) == 2
    best = max(s.importances, key=lambda i: i.mean + 2 * i.sd)
    assert s.kept == (best.column,)
    with pytest.raises(DataError, match="would leave no input"):
        without_inputs(data, dict.fromkeys(data.inputs.names, "x"))


def test_a_worse_reduced_model_keeps_every_input_and_says_why():
    """Two signals both needed; with a tolerance no column clears, both are candidates, one must stay, and the
    model without the other is far worse: nothing is dropped, and the note says so."""
    frame = _table(600, 7, a=lambda r, n: r.normal(size=n), b=lambda r, n: r.normal(size=n))
    frame["y"] = (frame["a"] + frame["b"] > 0).astype(int)
    data = prepare(frame, "y")
    s = select(data, "lrl2", {"C": 1.0}, "roc_auc", _cv(data), tolerance=1.0)
    assert not s.dropped and s.reduced is None
    assert "did not help the validation roc_auc one by one" in s.note and s.note.endswith("it is kept")
    assert s.describe().startswith("inputs: every input kept (roc_auc 0.99")


def test_the_check_and_the_bisection():
    assert Importance("x", 0.01, 0.002, 5, 5).helps(0.001) and not Importance("x", 0.01, 0.006, 5, 5).helps(0.001)
    assert not Importance("x", 0.0008, 0.0001, 5, 5).helps(0.001)
    same = np.array([0.10, 0.12, 0.11, 0.09, 0.10])
    assert no_worse(same, same + 0.004, 0.005)[0] and not no_worse(same, same + 0.02, 0.005)[0]
    noisy = same + np.array([0.03, -0.03, 0.02, -0.02, 0.01])  # higher on average, but within its own spread
    assert no_worse(same, noisy, 0.0)[0]
    calls = []
    assert largest_drop(8, lambda k: calls.append(k) or k <= 5) == 5 and len(calls) <= 4


# --- when the stage runs ------------------------------------------------------------------------------------------


def test_on_by_default_for_microcontrollers_only(tmp_path):
    assert selects_by_default(load_target("cortex-m7"))
    assert not any(selects_by_default(load_target(t)) for t in ("x86-64", "rpi4", "android-arm64"))
    (tmp_path / "edgeml.toml").write_text("[build]\nselect_inputs = false\n")
    assert read_config_file(tmp_path / "edgeml.toml") == {"select_inputs": False}
    assert resolve({}, cwd=tmp_path).select_inputs is False
    assert resolve({"select_inputs": True}, cwd=tmp_path).select_inputs is True
    assert BuildConfig().select_inputs is None
    data = prepare(_table(200, 8, a=lambda r, n: r.normal(size=n), y=lambda r, n: r.integers(0, 2, n)), "y")
    off = BuildConfig(target="x86-64")
    assert select_inputs_stage(off, load_target("x86-64"), data, "result", None) == (data, "result")


def test_the_flags_reach_the_build_config():
    from edgeml.cli import build

    option = next(p for p in build.params if p.name == "select_inputs")
    assert (option.opts, option.secondary_opts) == (["--select-inputs"], ["--all-inputs"])
    parsed = {args: build.make_context("build", list(args)).params["select_inputs"]
              for args in ((), ("--select-inputs",), ("--all-inputs",))}
    assert parsed == {(): None, ("--select-inputs",): True, ("--all-inputs",): False}
