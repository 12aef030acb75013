"""A build per target profile on real data: the artifacts each profile asks for, all verified and runnable."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import AI4I_DROP, build_bundle

from edgeml.export.artifacts import wanted
from edgeml.targets.profiles import list_targets, load_target
from edgeml_runtime import EngineError, Model
from edgeml_runtime.device import Capabilities, rank

PROFILES = [p.name for p in list_targets()]


@pytest.mark.slow
@pytest.mark.parametrize("profile", PROFILES)
def test_build_per_profile_ships_or_explains_every_artifact(datasets, tmp_path, profile):
    target = load_target(profile)
    learners = tuple(e for e in ("mlp", "lrl2", "lgbm") if e in target.estimators)
    out = tmp_path / "b"
    build_bundle(out, data=str(datasets / "ai4i2020.csv"), label="Machine failure", drop=AI4I_DROP[2:],
                 target=profile, estimators=learners, max_iter=3)
    m = json.loads((out / "manifest.json").read_text())
    shipped = {(a["format"], a["precision"]) for a in m["artifacts"]}
    explained = {(n["format"], n["precision"]) for n in m["not_shipped"]}
    assert ("onnx", "fp32") in shipped
    for pair in wanted(target):
        assert pair in shipped or pair in explained, pair
    assert all(n["reason"] for n in m["not_shipped"])
    assert len(m["verification"]) == len(m["artifacts"])
    assert all(v["passed"] for v in m["verification"])
    # The budgets the search judged hold limits only; the speed factor its latencies were predicted at is the target's.
    assert set(m["search"]["budgets"]) == {"max_model_bytes", "latency_budget_ms", "max_arena_bytes", "tflite_ops"}
    assert m["target"]["budgets"]["speed_factor"] == target.budgets.speed_factor
    log = m["search"]["trial_log"]
    assert log and all({"learner", "loss", "model_bytes", "latency_ms", "feasible"} <= set(t) for t in log)
    chosen = m["search"]["best_model_bytes"], m["search"]["best_predicted_latency_ms"]
    budgets = m["search"]["budgets"]
    assert budgets["max_model_bytes"] is None or chosen[0] <= budgets["max_model_bytes"]
    assert budgets["latency_budget_ms"] is None or chosen[1] <= budgets["latency_budget_ms"]
    # Real rows: an int8 input saturates at the calibration range, as it should, so made-up values would mislead.
    import pandas as pd

    sample = pd.read_csv(datasets / "ai4i2020.csv", nrows=50)
    rows = {c["name"]: sample[c["name"]].tolist() for c in m["inputs"]}
    baseline = Model.load(out, artifact="model.onnx").predict(rows).probabilities
    for a in m["artifacts"]:
        if a["precision"] == "fp16":
            continue  # needs a GPU provider to run as fp16; verified on the CPU at build time
        got = Model.load(out, artifact=a["path"]).predict(rows).probabilities
        tolerance = 1e-4 if a["precision"] == "fp32" else 0.05
        np.testing.assert_allclose(got, baseline, atol=tolerance)


def test_runtime_prefers_what_the_device_runs_well(demo_bundle):
    from edgeml_runtime.manifest import Artifact

    arts = [Artifact("model.onnx", "onnx", "fp32", 1, "a"), Artifact("model.ort", "ort", "fp32", 1, "b"),
            Artifact("model.int8.onnx", "onnx", "int8", 1, "c"), Artifact("model.fp16.onnx", "onnx", "fp16", 1, "d")]
    cpu = Capabilities(("CPUExecutionProvider",), int8_dot=False)
    assert [a.path for a in rank(arts, cpu)] == ["model.onnx", "model.ort", "model.int8.onnx"]
    assert [a.path for a in rank(arts, cpu, "int8")] == ["model.int8.onnx"]
    with pytest.raises(EngineError, match="no fp16 artifact|has no"):
        rank(arts[:2], cpu, "fp16")
    with pytest.raises(EngineError, match="no int8 artifact"):
        Model.load(demo_bundle, precision="int8")
