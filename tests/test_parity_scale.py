"""Regression parity follows the output's scale: float32 sums of many leaves are off by the rounding of the leaves.

An hourly count, most hours 0 and the busy ones in the tens of thousands, is
fitted by LightGBM (100 trees) on rows of the real ccpp table and bundled
through the real exporters (ONNX, TFLite fp32 and fp16). The old rule,
|got - want| / max(1, |want|) <= 1e-4, refused this correct model (a row near 0
carries the rounding of leaves in the tens of thousands). The tolerance a
build applies is recorded in the manifest, and the device's self-test and
``edgeml verify`` apply the recorded one: a leaf moved beyond it fails, a
tighter recorded tolerance refuses outputs the recorded one accepts.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from lightgbm import LGBMRegressor

from edgeml import bundle
from edgeml.build import host_pipeline, write_bundle
from edgeml.data.ingest import read_table
from edgeml.data.prepare import prepare
from edgeml.errors import VerificationError
from edgeml.targets.profiles import load_target
from edgeml.verify.bundle_check import check_bundle
from edgeml.verify.metrics import host_output
from edgeml.verify.parity import PROBA_TOLERANCE, VALUE_RTOL, require_parity, verify_artifact
from edgeml_runtime import Model
from edgeml_runtime.bundle import read_manifest
from edgeml_runtime.errors import BundleError
from edgeml_runtime.manifest_artifacts import RelativeTolerance
from edgeml_runtime.samples import score_rows

SEARCH = {"learners": ["lgbm"], "metric": "none (trained directly, not searched)", "best_learner": "lgbm",
          "best_config": {}, "best_valid_loss": None, "best_model_bytes": None, "best_predicted_latency_ms": None,
          "budgets": {"max_model_bytes": None, "latency_budget_ms": None, "max_arena_bytes": None},
          "trials": 0, "seconds": 0.0, "trial_log": [], "frontier": []}


@pytest.fixture(scope="module")
def rentals(datasets, tmp_path_factory):
    """A bundle of an hourly count (0 for over half the rows, up to ~90,000) from 2,000 ccpp rows: the folder,
    the prepared data and the host pipeline."""
    import dataclasses

    frame = read_table(datasets / "ccpp.csv").frame.head(2000).copy()
    frame["rentals"] = np.round(np.clip((frame.pop("PE") - 455) * 2500, 0, None)).astype(int)
    where = tmp_path_factory.mktemp("rentals")
    frame.to_csv(where / "rentals.csv", index=False)
    table = read_table(where / "rentals.csv")
    data = prepare(table.frame, "rentals", seed=0)
    model = LGBMRegressor(n_estimators=100, num_leaves=31, verbose=-1, random_state=0)
    model.fit(data.X["train"], data.y["train"])
    pipeline = host_pipeline(data, model)
    target = dataclasses.replace(load_target("rpi4"), formats=("onnx", "tflite"), precisions=("fp32", "fp16"))
    out = where / "rentals-1"
    write_bundle(out, pipeline, data, target, name="rentals", version="1", search=SEARCH,
                 provenance=bundle.provenance_record(table, data, 0, "lgbm", model, {}))
    return out, data, pipeline


def _test_rows(data) -> dict:
    return {name: data.split.test[name].tolist() for name in data.inputs.names}


def _host(data, pipeline) -> np.ndarray:
    return host_output(pipeline, data.features["test"], "regression")


def test_a_count_in_the_tens_of_thousands_builds_and_records_its_tolerance(rentals):
    out, data, pipeline = rentals
    host = _host(data, pipeline)
    assert (data.y["train"] == 0).mean() > 0.5 and host.max() > 50_000  # what this test relies on
    got = score_rows(out, "model.onnx", _test_rows(data)).values
    diff = np.abs(got - host)
    assert np.max(diff / np.maximum(1.0, np.abs(host))) > 2e-4  # the rule this replaced refused the model
    manifest = read_manifest(out)
    recorded = json.loads((out / "manifest.json").read_text())["verification"]
    scale = float(np.max(np.abs(host)))
    assert VALUE_RTOL == 2**-15  # 256 float32 epsilons
    assert [v["tolerance"] for v in recorded] == [{"kind": "relative", "rtol": 2**-15, "scale": scale}] * 3
    onnx_check = manifest.verification[0]
    assert onnx_check.artifact == "model.onnx" and onnx_check.passed
    assert onnx_check.max_abs_diff == pytest.approx(diff.max()) and 0 < diff.max() <= scale * 2**-15
    # fp16 is judged by what it loses (its metric drop), not by float32's rounding: its leaves are float16.
    fp16 = next(v for v in manifest.verification if v.artifact == "model.fp16.tflite")
    assert fp16.max_abs_diff > fp16.tolerance.allowed and fp16.metric_drop.within and fp16.passed
    assert [a.path for a in manifest.artifacts] == ["model.onnx", "model.tflite", "model.fp16.tflite"]
    report = check_bundle(out)
    assert report.passed, [c.detail for c in report.checks if c.status == "fail"]
    for a in manifest.artifacts:
        Model.load(out, artifact=a.path)  # the device's self-test, at the recorded tolerance


def _move_leaves(src: Path, dest: Path, delta: float) -> Path:
    """A copy of the bundle whose model.onnx has every leaf of its first tree moved by ``delta`` (re-hashed in
    the manifest, as a rebuilt artifact would be): each row's value moves by ``delta``."""
    copy = shutil.copytree(src, dest)
    model = onnx.load(copy / "model.onnx")
    trees = next(n for n in model.graph.node if n.op_type == "TreeEnsembleRegressor")
    attrs = {a.name: a for a in trees.attribute}
    moved = [w + delta if t == 0 else w
             for t, w in zip(attrs["target_treeids"].ints, attrs["target_weights"].floats, strict=True)]
    attrs["target_weights"].floats[:] = moved
    data = model.SerializeToString()
    (copy / "model.onnx").write_bytes(data)
    _edit_manifest(copy, lambda m: m["artifacts"][0].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest()))
    return copy


def _edit_manifest(folder: Path, edit) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def test_a_leaf_moved_beyond_the_scaled_tolerance_fails_the_build_check_and_the_device(rentals, tmp_path):
    out, data, pipeline = rentals
    allowed = read_manifest(out).verification[0].tolerance.allowed
    moved = _move_leaves(out, tmp_path / "moved", 4 * allowed)  # about 1e-4 of the largest value: small
    parity = verify_artifact(moved, "model.onnx", data.split.test, _host(data, pipeline), "regression", ()).parity
    assert not parity.passed and parity.max_abs_diff == pytest.approx(4 * allowed, rel=0.01)
    with pytest.raises(VerificationError, match=r"model.onnx does not match the host pipeline on 300 test rows: "
                                                r"0 label mismatch\(es\), largest difference .* \(allowed "
                                                r"[0-9.]+ = 3.05e-05 of the scale [0-9.]+\)"):
        require_parity(parity)
    with pytest.raises(BundleError, match="model.onnx does not score the bundle's sample rows as it did at build"):
        Model.load(moved, artifact="model.onnx")
    failed = [c for c in check_bundle(moved).checks if c.status == "fail"]
    assert [(c.kind, c.subject) for c in failed] == [("parity", "model.onnx")]
    assert "value: got" in failed[0].detail and "allowed difference" in failed[0].detail


def test_the_device_applies_the_tolerance_the_manifest_records(rentals, tmp_path):
    out, _, _ = rentals
    tolerance = read_manifest(out).verification[0].tolerance
    moved = _move_leaves(out, tmp_path / "moved", tolerance.allowed / 2)  # within: far beyond 1e-4 of a 0
    Model.load(moved, artifact="model.onnx")
    assert check_bundle(moved).passed

    def tighten(manifest):
        manifest["verification"][0]["tolerance"]["rtol"] = tolerance.rtol / 4

    _edit_manifest(moved, tighten)
    assert read_manifest(moved).verification[0].tolerance == RelativeTolerance(rtol=tolerance.rtol / 4,
                                                                                scale=tolerance.scale)
    with pytest.raises(BundleError, match=r"model.onnx does not score the bundle's sample rows as it did at build "
                                          r"time \(model.onnx: \d+ difference\(s\) on \d+ rows: rows\[\d+\] value"):
        Model.load(moved, artifact="model.onnx")
    failed = [c for c in check_bundle(moved).checks if c.status == "fail"]
    assert [(c.kind, c.subject) for c in failed] == [("parity", "model.onnx")]
    assert "= 7.63e-06 of the scale" in failed[0].detail


def test_classification_stays_as_strict_as_before(demo_bundle, tmp_path):
    """Probabilities within 1e-4 absolute, as before: 5e-5 off is accepted, 2e-4 off refused."""
    recorded = json.loads((demo_bundle / "manifest.json").read_text())["verification"]
    assert PROBA_TOLERANCE.to_dict() == {"kind": "absolute", "atol": 1e-4}
    assert [v["tolerance"] for v in recorded] == [{"kind": "absolute", "atol": 1e-4}] * len(recorded)
    for off, loads in ((5e-5, True), (2e-4, False)):
        copy = shutil.copytree(demo_bundle, tmp_path / f"off-{off}")
        samples = json.loads((copy / "samples.json").read_text())
        row = samples["expected"]["model.onnx"]["probabilities"][3]
        row[0] += off
        data = json.dumps(samples).encode()
        (copy / "samples.json").write_bytes(data)
        _edit_manifest(copy, lambda m, data=data: m["samples"].update(bytes=len(data),
                                                                      sha256=hashlib.sha256(data).hexdigest()))
        if loads:
            Model.load(copy, artifact="model.onnx")
        else:
            with pytest.raises(BundleError, match=r"rows\[3\] probabilities\[0\] .*\(allowed difference 0.0001\)"):
                Model.load(copy, artifact="model.onnx")
