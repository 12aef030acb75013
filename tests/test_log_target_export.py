"""A regressor that learnt a log-scale label ships artifacts that output the label itself, every format and precision.

A :class:`~edgeml.models.target.LogTarget` around each regressor family is
fitted on the real IT-salary survey (yearly salaries from 10,001 EUR to one
typed as 10^11: a long tail) and bundled by :func:`edgeml.build.write_bundle`
for x86-64 and rpi4 (ONNX, ``.ort``, int8 ONNX, TFLite), android-arm64
(TFLite fp32, fp16, int8), jetson-nano (fp16 ONNX) and cortex-m7 (TFLite run
in TensorFlow Lite Micro, and its firmware compiled). Every artifact is
scored through ``edgeml_runtime`` on the test rows: fp32 within the recorded
tolerance of the host pipeline (widened by what ``exp`` amplifies,
:func:`edgeml.verify.parity.log_value_tolerance`), and every one on the
label's scale, not its log. An artifact whose graph lacks the inverse fails
verification, the build's and the device's.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import numpy as np
import onnx
import pytest

pytest.importorskip("ai_edge_litert", reason="the TFLite artifacts need ai-edge-litert (pip install "
                                             "'edgeml-runtime[tflite]')")

from lightgbm import LGBMRegressor
from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor
from xgboost import XGBRegressor

from edgeml import bundle
from edgeml.build import host_pipeline, write_bundle
from edgeml.data.ingest import read_table
from edgeml.data.prepare import prepare
from edgeml.errors import VerificationError
from edgeml.export.inverse import NODE_PREFIX, detach_onnx
from edgeml.export.onnx import estimator_bytes
from edgeml.export.tflite.pipeline import estimator_tflite
from edgeml.models.estimators import StandardizedElasticNet, StandardizedMLPRegressor, model_steps
from edgeml.models.target import LogTarget, forward
from edgeml.targets.profiles import load_target
from edgeml.verify.metrics import host_output
from edgeml.verify.parity import VALUE_RTOL, log_value_tolerance, require_parity, verify_artifact
from edgeml_runtime import Model
from edgeml_runtime.bundle import read_manifest
from edgeml_runtime.errors import BundleError
from edgeml_runtime.samples import score_rows

LABEL = "Yearly brutto salary (without bonus and stocks) in EUR"
COLUMNS = ("Age", "Gender", "City", "Seniority level", "Total years of experience", "Company size",
           "Main language at work", LABEL)
#: Small models of every regressor family (a few shallow trees; one layer, wide enough for int8 ONNX to pay off).
FAMILIES = {
    "lgbm": lambda: LGBMRegressor(n_estimators=20, num_leaves=7, verbose=-1, random_state=0, n_jobs=1),
    "xgboost": lambda: XGBRegressor(n_estimators=20, max_depth=3, random_state=0, n_jobs=1),
    "rf": lambda: RandomForestRegressor(n_estimators=8, max_depth=5, random_state=0),
    "extra_tree": lambda: ExtraTreesRegressor(n_estimators=8, max_depth=5, random_state=0),
    "enet": lambda: StandardizedElasticNet(alpha=0.01, l1_ratio=0.5),
    "mlp": lambda: StandardizedMLPRegressor(hidden_layer_sizes=(64,), max_iter=60, random_state=0),
}
#: Each family for the targets whose artifacts its exporters write differently (ONNX and its derivatives, TFLite at
#: three precisions); rpi4 (Arm's int8 QDQ fusions, offline optimization) for a tree ensemble and the MLP;
#: cortex-m7 (TensorFlow Lite Micro, firmware) for a tree ensemble (fp32) and the elastic net (int8 too).
TARGETS = {"x86-64": tuple(FAMILIES), "android-arm64": tuple(FAMILIES), "rpi4": ("lgbm", "mlp"),
           "cortex-m7": ("lgbm", "enet")}
SEARCH = {"learners": [], "metric": "none (trained directly, not searched)", "best_learner": "", "best_config": {},
          "best_valid_loss": None, "best_model_bytes": None, "best_predicted_latency_ms": None,
          "budgets": {"max_model_bytes": None, "latency_budget_ms": None, "max_arena_bytes": None},
          "trials": 0, "seconds": 0.0, "trial_log": [], "frontier": []}


@pytest.fixture(scope="module")
def salaries(datasets):
    table = read_table(datasets / "it-salary-2020.csv")
    frame = table.frame[[c for c in table.frame.columns if c.strip() in COLUMNS]]
    return table, prepare(frame, LABEL, seed=0, keep_label_outliers=True)  # the 10^11 typo stresses exp


def _bundle(out, table, data, learner: str, model, target):
    pipeline = host_pipeline(data, model)
    write_bundle(out, pipeline, data, target, name="salary", version="1", search={**SEARCH, "best_learner": learner},
                 provenance=bundle.provenance_record(table, data, 0, learner, model, {}))
    return pipeline


@pytest.fixture(scope="module")
def models(salaries):
    """learner -> a LogTarget around it fitted on train+validation (one thread each: the test machine is shared)."""
    from threadpoolctl import threadpool_limits

    _, data = salaries
    X, y = data.fit_matrix()
    with threadpool_limits(1):
        return {learner: LogTarget(make(), 0.0).fit(X, y) for learner, make in FAMILIES.items()}


@pytest.fixture(scope="module")
def bundles(salaries, models, tmp_path_factory):
    """(learner, target) -> (bundle folder, host pipeline), for :data:`TARGETS`."""
    table, data = salaries
    root = tmp_path_factory.mktemp("log-target")
    return {(learner, name): (root / f"{learner}-{name}",
                              _bundle(root / f"{learner}-{name}", table, data, learner, models[learner],
                                      load_target(name)))
            for name, learners in TARGETS.items() for learner in learners}


def _rows(data) -> dict:
    return {name: data.split.test[name].tolist() for name in data.inputs.names}


def test_the_table_has_a_long_tail(salaries):
    _, data = salaries
    y = data.y["train"]
    assert y.min() > 10_000 and y.max() > 1e10 and np.median(y) < 100_000  # what the tests below rely on


@pytest.mark.parametrize("learner", FAMILIES)
def test_every_artifact_outputs_the_label_within_the_recorded_tolerance(bundles, salaries, learner):
    _, data = salaries
    for name in (name for name, learners in TARGETS.items() if learner in learners):
        out, pipeline = bundles[(learner, name)]
        host = host_output(pipeline, data.features["test"], "regression")
        manifest = read_manifest(out)
        expected = log_value_tolerance(host, 0.0)
        assert expected.rtol > 10 * VALUE_RTOL  # exp amplifies: z up to ~12 for salaries of ~150,000
        median = float(np.median(data.y["test"]))
        for check in manifest.verification:
            assert check.passed and check.tolerance == expected, (name, check)
            got = score_rows(out, check.artifact, _rows(data)).values
            # On the label's scale, not its log (~11): the median prediction near the median salary.
            assert median / 3 < float(np.median(got)) < 3 * median, (name, check.artifact)
            art = next(a for a in manifest.artifacts if a.path == check.artifact)
            if art.precision == "fp32":
                assert np.abs(got - host).max() <= expected.allowed, (name, check.artifact)
            else:
                assert check.metric_drop.within
        shipped = {a.path for a in manifest.artifacts}
        assert shipped >= {"model.onnx", "model.tflite", *(("model.ort",) if name in ("x86-64", "rpi4") else ())}
        Model.load(out)  # the device's self-test on the sample rows, at the recorded tolerance


def test_every_graph_ends_with_the_inverse(bundles):
    made = {a.path for a in read_manifest(bundles[("mlp", "x86-64")][0]).artifacts}
    assert made >= {"model.int8.onnx", "model.int8.ort", "model.int8.tflite"}  # every int8 path is exercised
    for (learner, name), (out, _) in bundles.items():
        manifest = read_manifest(out)
        for art in manifest.artifacts:
            if art.format == "onnx":
                model = onnx.load(out / art.path)
                ops = {n.op_type for n in model.graph.node if n.name.startswith(NODE_PREFIX)}
                assert ops == {"Exp", "Sub"}, (learner, name, art.path)
                if art.precision == "int8":  # quantized MatMuls, then the inverse on dequantized floats
                    assert any(n.op_type == "DequantizeLinear" for n in model.graph.node)
            elif art.format == "ort":
                config = (out / art.path.replace(".ort", ".required_operators.config")).read_text()
                assert "Exp" in config and "Sub" in config, (learner, name, art.path)
            else:
                assert "EXP" in art.transform.operators, (learner, name, art.path)
            if art.transform is not None:  # a derived artifact says what was done
                assert any("expm1(z)" in step for step in art.transform.done)


def test_int8_tflite_dequantizes_before_exp(bundles, salaries):
    from edgeml_runtime.litert import TfliteEngine

    out, _ = bundles[("mlp", "android-arm64")]
    engine = TfliteEngine(out / "model.int8.tflite")
    assert engine.interpreter.get_input_details()[0]["dtype"] == np.int8
    assert engine.interpreter.get_output_details()[0]["dtype"] == np.float32
    assert engine.metadata["outputs"]["value"]["inverse"] == {"learnt": "log1p", "offset": 0.0, "in_graph": True}
    assert "offset" not in engine.metadata["outputs"]["value"]  # the centring offset is added inside the graph
    assert "model.fp16.tflite" in {a.path for a in read_manifest(out).artifacts}


def test_the_fp16_onnx_keeps_the_inverse_in_float32(salaries, models, tmp_path):
    """fp16 would overflow a salary over 65,504 and round z to 3 digits: the inverse stays float32."""
    table, data = salaries
    _bundle(tmp_path / "jetson", table, data, "mlp", models["mlp"], load_target("jetson-nano"))
    model = onnx.load(tmp_path / "jetson" / "model.fp16.onnx")
    inits = {i.name: i.data_type for i in model.graph.initializer}
    assert inits[f"{NODE_PREFIX}one"] == onnx.TensorProto.FLOAT
    assert "model.fp16.onnx" in {a.path for a in read_manifest(tmp_path / "jetson").artifacts}


def test_an_offset_is_added_back(salaries, tmp_path):
    table, data = salaries
    offset = 5000.0
    X, y = data.fit_matrix()
    model = LogTarget(FAMILIES["enet"](), offset).fit(X, y)
    pipeline = _bundle(tmp_path / "offset", table, data, "enet", model, load_target("android-arm64"))
    host = host_output(pipeline, data.features["test"], "regression")
    manifest = read_manifest(tmp_path / "offset")
    for check in manifest.verification:
        assert check.passed and check.tolerance == log_value_tolerance(host, offset)
    got = score_rows(tmp_path / "offset", "model.tflite", _rows(data)).values
    assert np.abs(got - host).max() <= manifest.verification[0].tolerance.allowed and got.min() > offset


def test_the_cortex_m7_firmware_registers_exp(bundles, tmp_path):
    from edgeml.export.tflite.firmware import HEADER, SOURCE, write_firmware
    from edgeml.export.tflite.micro import available

    cc = shutil.which("cc") or shutil.which("gcc")
    for learner in TARGETS["cortex-m7"]:
        out, _ = bundles[(learner, "cortex-m7")]
        manifest = read_manifest(out)
        tflite = [a for a in manifest.artifacts if a.format == "tflite"]
        assert {a.precision for a in tflite} == ({"int8", "fp32"} if learner == "enet" else {"fp32"})
        for art in tflite:
            micro = art.transform.to_dict()["tflite_micro"]
            assert micro["ran"] == available() and "EXP" in art.transform.operators
            folder = tmp_path / learner / art.precision
            write_firmware(out, folder, artifact=art.path)
            header = (folder / HEADER).read_text()
            assert "(resolver).AddExp();" in header and "the output is the label itself" in header
            assert "#define EDGEML_OUTPUT_INT8 0" in header and "edgeml_output" not in header
            if cc is not None:
                main = ('#include "edgeml_model.h"\nint main(void) { return (int)(edgeml_model_len == 0) '
                        '+ EDGEML_OUTPUT_INT8; }\n')
                (folder / "main.c").write_text(main)
                subprocess.run([cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", str(folder / "main.c"),
                                str(folder / SOURCE), "-lm", "-o", str(folder / "exe")], check=True)
                assert subprocess.run([str(folder / "exe")]).returncode == 0


def _replaced(src, dest, path: str, data: bytes):
    """A copy of the bundle with artifact ``path`` replaced by ``data``, re-hashed as a rebuilt artifact would be."""
    copy = shutil.copytree(src, dest)
    (copy / path).write_bytes(data)
    manifest = json.loads((copy / "manifest.json").read_text())
    entry = next(a for a in manifest["artifacts"] if a["path"] == path)
    entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return copy


def _without_inverse(src, dest):
    """A copy of the bundle whose model.onnx stops before the inverse: it outputs z, the log."""
    model, inverse = detach_onnx(onnx.load(src / "model.onnx"))
    assert inverse == ("log1p", 0.0)
    return _replaced(src, dest, "model.onnx", model.SerializeToString())


def test_an_artifact_missing_the_inverse_fails_verification(bundles, salaries, tmp_path):
    _, data = salaries
    out, pipeline = bundles[("lgbm", "x86-64")]
    host = host_output(pipeline, data.features["test"], "regression")
    broken = _without_inverse(out, tmp_path / "broken")
    assert float(np.max(score_rows(broken, "model.onnx", _rows(data)).values)) < 30  # the log of a salary
    parity = verify_artifact(broken, "model.onnx", data.split.test, host, "regression", (),
                            inverse=("log1p", 0.0)).parity
    assert not parity.passed
    with pytest.raises(VerificationError, match="model.onnx does not match the host pipeline"):
        require_parity(parity)
    with pytest.raises(BundleError, match="model.onnx does not score the bundle's sample rows as it did at build"):
        Model.load(broken, artifact="model.onnx")
    # The right inverse with the wrong offset fails too: 1,000 EUR is beyond what float32 rounding explains.
    shifted = verify_artifact(out, "model.onnx", data.split.test, host + 1000.0, "regression", (),
                              inverse=("log1p", 0.0)).parity
    assert not shifted.passed and shifted.max_abs_diff == pytest.approx(1000.0, rel=1e-3)


def test_a_tflite_file_missing_the_inverse_fails_verification(bundles, salaries, tmp_path):
    from sklearn.pipeline import Pipeline

    from edgeml.export.tflite.pipeline import to_tflite

    _, data = salaries
    out, pipeline = bundles[("enet", "android-arm64")]
    host = host_output(pipeline, data.features["test"], "regression")
    *before, (name, last) = pipeline.steps
    bare = to_tflite(Pipeline([*before, (name, last.regressor_)]), data.inputs, "regression")
    assert "EXP" not in bare.ops
    broken = _replaced(out, tmp_path / "broken", "model.tflite", bare.data)
    parity = verify_artifact(broken, "model.tflite", data.split.test, host, "regression", (),
                             inverse=("log1p", 0.0)).parity
    assert not parity.passed and parity.max_abs_diff > 0.5 * float(np.max(host))


def test_the_tolerance_follows_what_exp_amplifies():
    """z off by VALUE_RTOL × max|z| (float32's sum of leaves) moves y by about that fraction of y: within it."""
    z = np.log1p(np.array([10_000.0, 70_000.0, 150_000.0]))
    host = np.expm1(z)
    tolerance = log_value_tolerance(host, 0.0)
    worst = np.expm1(z + VALUE_RTOL * np.abs(z).max()) - host
    assert np.abs(worst).max() < tolerance.allowed
    assert np.abs(np.log1p(host) - host).max() > 1000 * tolerance.allowed  # no inverse: far outside


def test_the_search_measures_a_log_target_with_its_inverse(salaries, models):
    """What the device-aware search measures per trial (the model alone) includes the inverse."""
    _, data = salaries
    X, y = data.fit_matrix()
    model = models["enet"]
    plain = FAMILIES["enet"]().fit(X, forward(y))
    exp = estimator_tflite(model_steps(model), X.shape[1], "regression", "int8", X[:200])
    assert "EXP" in exp.ops and "DEQUANTIZE" in exp.ops
    assert "EXP" not in estimator_tflite(model_steps(plain), X.shape[1], "regression", "int8", X[:200]).ops
    assert estimator_bytes(model, X.shape[1], "regression") > estimator_bytes(plain, X.shape[1], "regression")


def test_the_edge_tpu_says_why_a_log_target_is_not_made(salaries, models):
    """The Edge TPU runs integer tensors and has no EXP: the int8 file is not made, and the reason says why."""
    from edgeml.export.onnx import to_onnx
    from edgeml.export.registry import CompileOptions, ExportSource, NotApplicable, compile_artifact

    _, data = salaries
    pipeline = host_pipeline(data, models["enet"])
    source = ExportSource(to_onnx(pipeline, data.inputs, "regression", name="salary"), pipeline, data.inputs,
                          "regression")
    options = CompileOptions.from_target(load_target("coral-edgetpu"), data.calibration)
    with pytest.raises(NotApplicable, match=r"EXP.* not in the edgetpu set.*learnt on a log scale"):
        compile_artifact(source, "tflite", "int8", options)
