"""TFLite export: every .tflite is run by the real LiteRT interpreter and compared with the host pipeline.

Pipelines are built the way ``edgeml build`` builds them (edgeml.data.preprocess,
edgeml.models.learners, align_thresholds) on the real data sets, with fixed small
hyper-parameters and seeds instead of a search, so each test takes a second.
"""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert",
                    reason="the TFLite tests need ai-edge-litert (pip install 'edgeml-runtime[tflite]')")
pytest.importorskip("tflite", reason="the TFLite exporter needs the tflite package")

from conftest import AI4I_DROP, DATASETS
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.pipeline import Pipeline

from edgeml.errors import ExportError
from edgeml.export.onnx import align_thresholds
from edgeml.export.tflite.pipeline import to_tflite
from edgeml.export.tflite.trees import float32_below
from edgeml.models.estimators import (
    StandardizedElasticNet,
    StandardizedLogisticRegression,
    StandardizedMLPClassifier,
    StandardizedMLPRegressor,
    model_steps,
)
from edgeml.verify.metrics import classification_metrics, regression_metrics
from edgeml_runtime.litert import TfliteEngine, feeds_to_matrix, read_metadata

#: Data sets: (file, label, columns to drop, rows kept).
DATA = {
    "ai4i": ("ai4i2020.csv", "Machine failure", AI4I_DROP, None),          # binary, numeric + 1 categorical
    "ai4i_type": ("ai4i2020.csv", "Type", AI4I_DROP + ("Machine failure",), 4000),  # 3 classes
    "telco": ("telco-churn.csv", "Churn", ("customerID",), None),          # 16 categoricals, blank numbers
    "ccpp": ("ccpp.csv", "PE", (), None),                                    # regression
}


@cache
def prepared(key: str):
    """Schema, fitted preprocessing, encoded splits and labels of a data set, as ``edgeml build`` makes them."""
    from edgeml.data.ingest import read_table
    from edgeml.data.prepare import prepare

    name, label, drop, rows = DATA[key]
    frame = read_table(DATASETS / name).frame
    if rows:
        frame = frame.sample(rows, random_state=0)
    data = prepare(frame, label, drop=[d for d in drop if d in frame.columns])
    parts = ("train", "test")
    return (data.inputs, data.task, data.classes, data.preprocessor, {p: data.features[p] for p in parts},
            {p: data.y[p] for p in parts}, {p: data.feeds(p) for p in parts})


def fitted(key: str, model):
    inputs, task, classes, pre, features, y, feeds = prepared(key)
    model.fit(pre.transform(features["train"]), y["train"])
    return align_thresholds(Pipeline([("pre", pre), *model_steps(model)]))


def score(key: str, pipeline, precision: str, tmp_path):
    """Export, load in LiteRT through the runtime engine, score the test split; (host output, tflite output, export)."""
    inputs, task, classes, pre, features, y, feeds = prepared(key)
    exported = to_tflite(pipeline, inputs, task, classes, precision, calibration=feeds["train"])
    path = tmp_path / f"model.{precision}.tflite"
    path.write_bytes(exported.data)
    engine = TfliteEngine(path)
    out = engine.run(feeds["test"])
    if task == "classification":
        assert engine.output_names == ["label", "probabilities"]
        np.testing.assert_array_equal(out[0], np.argmax(out[1], axis=1))
        return pipeline.predict_proba(features["test"]), out[1], exported
    return pipeline.predict(features["test"]), out[0].ravel(), exported


def assert_same(host, got, task, tol=1e-4):
    if task == "classification":
        assert np.max(np.abs(host - got)) <= tol
        top2 = np.sort(host, axis=1)[:, -2:]
        tie = (top2[:, 1] - top2[:, 0]) <= tol
        mismatch = (np.argmax(host, axis=1) != np.argmax(got, axis=1)) & ~tie
        assert mismatch.sum() == 0
    else:
        np.testing.assert_allclose(got, host, rtol=tol, atol=tol * np.abs(host).mean())


def drop(key, host, got):
    """The metric lost by the reduced-precision artifact (accuracy points, or relative RMSE increase)."""
    y = prepared(key)[5]["test"]
    if prepared(key)[1] == "classification":
        ref = classification_metrics(y, np.argmax(host, axis=1), host)["accuracy"]
        return ref - classification_metrics(y, np.argmax(got, axis=1), got)["accuracy"]
    return regression_metrics(y, got)["rmse"] / regression_metrics(y, host)["rmse"] - 1


def _lgbm(task):
    from lightgbm import LGBMClassifier, LGBMRegressor

    cls = LGBMClassifier if task == "classification" else LGBMRegressor
    return cls(n_estimators=60, num_leaves=15, random_state=0, verbose=-1)


def _xgb(task):
    from xgboost import XGBClassifier, XGBRegressor

    cls = XGBClassifier if task == "classification" else XGBRegressor
    return cls(n_estimators=60, max_depth=4, random_state=0, n_jobs=1)


MODELS = {
    "lgbm": _lgbm,
    "xgboost": _xgb,
    "rf": lambda t: (RandomForestClassifier if t == "classification" else RandomForestRegressor)(
        n_estimators=20, max_depth=8, random_state=0, n_jobs=1),
    "extra_tree": lambda t: (ExtraTreesClassifier if t == "classification" else ExtraTreesRegressor)(
        n_estimators=20, max_depth=8, random_state=0, n_jobs=1),
    "logistic": lambda t: StandardizedLogisticRegression(C=1.0, max_iter=500),
    "enet": lambda t: StandardizedElasticNet(alpha=0.01, l1_ratio=0.5),
    "mlp": lambda t: (StandardizedMLPClassifier if t == "classification" else StandardizedMLPRegressor)(
        hidden_layer_sizes=(64, 32), max_iter=60, random_state=0),
}

FP32_CASES = [
    ("ai4i", "lgbm"), ("ai4i", "xgboost"), ("ai4i", "rf"), ("ai4i", "extra_tree"), ("ai4i", "logistic"),
    ("ai4i", "mlp"),
    ("ai4i_type", "lgbm"), ("ai4i_type", "xgboost"), ("ai4i_type", "rf"), ("ai4i_type", "logistic"),
    ("ai4i_type", "mlp"),
    ("telco", "lgbm"), ("telco", "xgboost"), ("telco", "logistic"), ("telco", "mlp"),
    ("ccpp", "lgbm"), ("ccpp", "xgboost"), ("ccpp", "rf"), ("ccpp", "extra_tree"), ("ccpp", "enet"), ("ccpp", "mlp"),
]


@pytest.mark.parametrize(("key", "model"), FP32_CASES, ids=[f"{k}-{m}" for k, m in FP32_CASES])
def test_fp32_matches_host_pipeline(datasets, tmp_path, key, model):
    task = prepared(key)[1]
    pipeline = fitted(key, MODELS[model](task))
    host, got, exported = score(key, pipeline, "fp32", tmp_path)
    assert_same(host, got, task)
    assert exported.precision == "fp32"


FP16_CASES = [("ai4i", "lgbm"), ("ai4i", "xgboost"), ("ai4i", "rf"), ("ai4i", "extra_tree"), ("ai4i", "mlp"),
              ("ai4i_type", "lgbm"), ("ccpp", "lgbm"), ("ccpp", "rf"), ("ccpp", "mlp")]


@pytest.mark.parametrize(("key", "model"), FP16_CASES, ids=[f"{k}-{m}" for k, m in FP16_CASES])
def test_fp16_weights_lose_little(datasets, tmp_path, key, model):
    task = prepared(key)[1]
    pipeline = fitted(key, MODELS[model](task))
    host, got, exported = score(key, pipeline, "fp16", tmp_path)
    assert len(exported.data) < exported.details["bytes_fp32"]
    assert "DEQUANTIZE" in exported.ops
    assert drop(key, host, got) <= (0.005 if task == "classification" else 0.01)


INT8_CASES = [("ai4i", "mlp"), ("ai4i_type", "mlp"), ("telco", "mlp"), ("ccpp", "mlp"),
              ("ai4i", "logistic"), ("ai4i_type", "logistic"), ("telco", "logistic"), ("ccpp", "enet")]


@pytest.mark.parametrize(("key", "model"), INT8_CASES, ids=[f"{k}-{m}" for k, m in INT8_CASES])
def test_int8_is_full_integer_and_loses_a_measured_little(datasets, tmp_path, key, model):
    from ai_edge_litert.interpreter import Interpreter

    task = prepared(key)[1]
    pipeline = fitted(key, MODELS[model](task))
    host, got, exported = score(key, pipeline, "int8", tmp_path)
    assert exported.details["quantization"]["calibration_rows"] > 0
    if model == "mlp":
        assert len(exported.data) < exported.details["bytes_fp32"]
    # Integer in, integer out, integer weights: nothing float for an integer-only accelerator.
    interpreter = Interpreter(model_content=exported.data)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    float_tensors = [t["name"] for t in interpreter.get_tensor_details() if t["dtype"] == np.float32]
    assert float_tensors == []
    assert set(exported.ops) <= {"FULLY_CONNECTED", "SOFTMAX", "TANH", "LOGISTIC"}
    # Allowances of the default profile: 1 accuracy point, 2% RMSE.
    assert drop(key, host, got) <= (0.01 if task == "classification" else 0.02)


def test_int8_regression_far_from_zero_keeps_its_resolution(datasets, tmp_path):
    """ccpp's output is ~420-495 MW: centred on its range, the int8 output steps by ~0.3 MW, not ~1.9."""
    inputs, task, classes, pre, features, y, feeds = prepared("ccpp")
    host, got, exported = score("ccpp", fitted("ccpp", MODELS["enet"](task)), "int8", tmp_path)
    assert 420 < exported.metadata["outputs"]["value"]["offset"] < 495
    assert abs(drop("ccpp", host, got)) <= 0.002


def test_int8_encoding_matches_the_float_graph_on_odd_codes():
    """An unknown (-1) or NaN category code matches no category, as EQUAL does in the float graph."""
    from edgeml_runtime.litert import Encoding

    enc = Encoding([0], np.array([5.0], np.float32), [(1, 0), (1, 1)])
    X = np.array([[1.0, np.nan], [np.nan, -1.0], [2.0, 0.0]], np.float32)
    assert enc.apply(X).tolist() == [[1.0, 0.0, 0.0], [5.0, 0.0, 0.0], [2.0, 1.0, 0.0]]


def test_int8_gives_every_input_the_whole_int8_range(datasets):
    """Each encoded input spans [-1, 1] on the calibration rows, so it uses all 255 levels, whatever its scale."""
    from edgeml.export.tflite.dense import int8_encoding
    from edgeml.export.tflite.pipeline import read_preprocess

    inputs, task, classes, pre, features, y, feeds = prepared("ccpp")
    pipeline = fitted("ccpp", MODELS["enet"](task))
    X = feeds_to_matrix(feeds["train"], {}, inputs.features)
    Z = int8_encoding(read_preprocess(pipeline, inputs), X).apply(X)
    np.testing.assert_allclose(Z.min(axis=0), -1, atol=1e-5)
    np.testing.assert_allclose(Z.max(axis=0), 1, atol=1e-5)


@pytest.mark.parametrize("model", ["lgbm", "xgboost", "rf", "extra_tree"])
def test_trees_refuse_int8_and_say_why(datasets, model):
    pipeline = fitted("ai4i", MODELS[model]("classification"))
    with pytest.raises(ExportError, match="tree ensembles are not exported in int8.*use fp32"):
        to_tflite(pipeline, *prepared("ai4i")[:3], "int8", calibration=prepared("ai4i")[6]["train"])


def test_fp16_is_refused_when_it_would_not_be_smaller(datasets):
    inputs, task, classes, pre, features, y, feeds = prepared("telco")
    pipeline = fitted("telco", MODELS["logistic"](task))
    with pytest.raises(ExportError, match="TFLite fp16 would not make this .* model smaller.*use fp32"):
        to_tflite(pipeline, inputs, task, classes, "fp16")


def test_unknown_precision_and_unsupported_estimator_fail_clearly(datasets):
    from sklearn.svm import SVC

    inputs, task, classes, pre, features, y, feeds = prepared("ai4i")
    pipeline = fitted("ai4i", MODELS["logistic"](task))
    with pytest.raises(ExportError, match="precision 'int4' is unknown; the exporter writes fp32, fp16, int8"):
        to_tflite(pipeline, inputs, task, classes, "int4")
    with pytest.raises(ExportError, match="int8 TFLite needs calibration rows"):
        to_tflite(pipeline, inputs, task, classes, "int8")
    svc = Pipeline([("pre", pre), ("model", SVC().fit(pre.transform(features["train"][:300]), y["train"][:300]))])
    with pytest.raises(ExportError, match=r"no model family for SVC \(sklearn\.svm\._classes\.SVC\); it knows"):
        to_tflite(svc, inputs, task, classes)


def test_metadata_lets_a_consumer_without_python_use_the_file(datasets, tmp_path):
    inputs, task, classes, pre, features, y, feeds = prepared("telco")
    exported = to_tflite(fitted("telco", MODELS["logistic"](task)), inputs, task, classes)
    meta = json.loads(read_metadata(exported.data))
    assert meta == exported.metadata
    assert [c["feature"] for c in meta["input"]["columns"]] == inputs.features
    contract = next(c for c in meta["input"]["columns"] if c["column"] == "Contract")
    assert contract["codes"] == list(next(c for c in inputs.columns if c.name == "Contract").categories)
    assert meta["outputs"] == {"probabilities": {"tensor": "probabilities", "classes": list(classes)}}


def test_category_codes_match_the_host_encoding_including_unknown_and_missing(datasets, tmp_path):
    """Strings become codes on the device: unseen and missing categories score like the host's "none known"."""
    inputs, task, classes, pre, features, y, feeds = prepared("telco")
    pipeline = fitted("telco", MODELS["lgbm"](task))
    path = tmp_path / "m.tflite"
    path.write_bytes(to_tflite(pipeline, inputs, task, classes).data)
    test = features["test"].iloc[:200].copy()
    test["Contract"] = ["Decade-long", "", *test["Contract"].iloc[2:]]  # unknown, missing, known
    test.loc[test.index[:5], "TotalCharges"] = np.nan
    engine_feeds = {c: test[c].to_numpy().reshape(-1, 1) for c in test.columns}
    got = TfliteEngine(path).run(engine_feeds)[1]
    np.testing.assert_allclose(got, pipeline.predict_proba(test), atol=1e-4)


def test_feeds_to_matrix_and_engine_errors(tmp_path):
    from edgeml_runtime.errors import EngineError

    with pytest.raises(EngineError, match="feed 'b' is missing"):
        feeds_to_matrix({"a": np.zeros((2, 1))}, {}, ["a", "b"])
    path = tmp_path / "x.tflite"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(EngineError, match="no 'edgeml' metadata"):
        TfliteEngine(path)


def test_float32_thresholds_keep_every_decision():
    rng = np.random.default_rng(0)
    t = rng.normal(size=2000) * 10
    x = t.astype(np.float32)
    for xv, tv in zip(np.concatenate([x, np.nextafter(x, np.float32(np.inf))]), np.concatenate([t, t]), strict=False):
        assert (float(xv) <= tv) == (xv <= float32_below(tv))
