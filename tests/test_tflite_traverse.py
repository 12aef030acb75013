"""Gather-based tree traversal in TFLite: every graph runs in the real LiteRT interpreter and matches the host model.

Each model is fitted on a real data set's preprocessed training split
(``prepared`` in test_tflite.py, as ``edgeml build`` makes it); its graph is
``features`` [n, D] (the preprocessed inputs) -> :func:`emit_traversal` ->
the output head, and the host model scores the same float32 rows.
"""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert",
                    reason="the TFLite tests need ai-edge-litert (pip install 'edgeml-runtime[tflite]')")
pytest.importorskip("tflite", reason="the TFLite exporter needs the tflite package")

from ai_edge_litert.interpreter import Interpreter
from sklearn.ensemble import (
    ExtraTreesRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from test_tflite import prepared

from edgeml.errors import ExportError
from edgeml.export.tflite.graph import Graph
from edgeml.export.tflite.pipeline import Weights, emit_head, emit_trees
from edgeml.export.tflite.traverse import (
    emit_traversal,
    gemm_bytes,
    preferred_form,
    traversal_arrays,
    traversal_bytes,
)
from edgeml.export.tflite.trees import Forest, Node, pack_forest, read_forest


def _lgbm(kind, **params):
    import lightgbm

    return getattr(lightgbm, kind)(random_state=0, verbose=-1, **params)


def _xgb(kind, **params):
    import xgboost

    return getattr(xgboost, kind)(random_state=0, n_jobs=1, **params)


#: case -> (data set, model factory).
CASES = {
    "rf-depth12-binary": ("ai4i", lambda: RandomForestClassifier(n_estimators=50, max_depth=12, random_state=0)),
    "rf-unlimited-multiclass": ("ai4i_type", lambda: RandomForestClassifier(n_estimators=30, random_state=0)),
    "rf-depth10-regression": ("ccpp", lambda: RandomForestRegressor(n_estimators=50, max_depth=10, random_state=0)),
    "extra-trees-regression": ("ccpp", lambda: ExtraTreesRegressor(n_estimators=30, max_depth=14, random_state=0)),
    "lgbm-binary": ("ai4i", lambda: _lgbm("LGBMClassifier", n_estimators=60, num_leaves=31)),
    "lgbm-multiclass": ("ai4i_type", lambda: _lgbm("LGBMClassifier", n_estimators=40, num_leaves=15)),
    "xgboost-binary": ("ai4i", lambda: _xgb("XGBClassifier", n_estimators=60, max_depth=6)),
    "xgboost-regression": ("ccpp", lambda: _xgb("XGBRegressor", n_estimators=60, max_depth=6)),
}


class Case(NamedTuple):
    model: object
    forest: Forest
    Z: np.ndarray  # the test split's preprocessed rows, float32
    task: str


@cache
def case(name: str) -> Case:
    """A case's model fitted on its data set's training split, read into a Forest, and the test rows."""
    key, make = CASES[name]
    _, task, _, pre, features, y, _ = prepared(key)
    model = make().fit(pre.transform(features["train"]), y["train"])
    Z = np.asarray(pre.transform(features["test"]), np.float32)
    return Case(model, read_forest(model, task), Z, task)


def tflite_file(forest: Forest, width: int, form: str = "traversal", precision: str = "fp32") -> bytes:
    """features [n, width] -> the trees in ``form`` -> head -> output, as a .tflite file."""
    g = Graph()
    z = g.input("features", (width,))
    weights = Weights(g, precision)
    if form == "traversal":
        arrays = traversal_arrays(forest)
        raw = emit_traversal(g, z, arrays, weights)
    else:
        raw = emit_trees(g, z, pack_forest(forest), weights)
    g.output(emit_head(g, raw, forest.head), "output")
    return g.serialize()


def run(data: bytes, Z: np.ndarray) -> np.ndarray:
    """The file's output for the rows ``Z``, in the LiteRT interpreter (batch resized to ``len(Z)``)."""
    interpreter = Interpreter(model_content=data, num_threads=1)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, list(Z.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, np.ascontiguousarray(Z, np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()


@pytest.mark.parametrize("name", list(CASES))
def test_traversal_matches_host_model(datasets, name):
    c = case(name)
    data = tflite_file(c.forest, c.Z.shape[1])
    got = run(data, c.Z)
    if c.task == "classification":
        assert np.max(np.abs(got - c.model.predict_proba(c.Z))) <= 1e-5
        np.testing.assert_array_equal(c.model.classes_[np.argmax(got, axis=1)], c.model.predict(c.Z))
    else:
        np.testing.assert_allclose(got.ravel(), c.model.predict(c.Z), rtol=1e-6)
    # One row through the same file (the batch dimension is dynamic) gives that row's answer.
    np.testing.assert_allclose(run(data, c.Z[:1]), got[:1], rtol=1e-6)


@pytest.mark.parametrize("name", ["rf-unlimited-multiclass", "lgbm-multiclass", "xgboost-regression"])
def test_numpy_references_of_both_forms_agree_with_the_graph(datasets, name):
    forest, Z = case(name).forest, case(name).Z
    arrays = traversal_arrays(forest)
    raw = arrays.raw(Z)
    np.testing.assert_allclose(raw, pack_forest(forest).raw(Z), rtol=1e-5, atol=1e-6)
    g = Graph()
    g.output(emit_traversal(g, g.input("features", (Z.shape[1],)), arrays, Weights(g, "fp32")), "raw")
    np.testing.assert_allclose(run(g.serialize(), Z), raw, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("name", "ratio"), [("rf-depth10-regression", 20), ("rf-depth12-binary", 5)])
def test_deep_forest_is_much_smaller_and_both_sizes_are_predicted(datasets, name, ratio):
    """The GEMM form pads every tree to the largest and grows with internal nodes × leaves; traversal with nodes."""
    forest, Z = case(name).forest, case(name).Z
    traversal = tflite_file(forest, Z.shape[1], "traversal")
    gemm = tflite_file(forest, Z.shape[1], "gemm")
    assert len(traversal) * ratio < len(gemm)
    np.testing.assert_array_equal(run(gemm, Z[:200]), run(traversal, Z[:200]))
    for predicted, data in ((traversal_bytes(forest), traversal), (gemm_bytes(forest), gemm)):
        assert abs(predicted - len(data)) <= 0.03 * len(data) + 1024


@pytest.mark.parametrize("name", ["lgbm-binary", "rf-unlimited-multiclass", "xgboost-regression"])
def test_size_predictions_hold_for_shallow_and_fp16_files(datasets, name):
    forest, Z = case(name).forest, case(name).Z
    for precision in ("fp32", "fp16"):
        for form, predict in (("traversal", traversal_bytes), ("gemm", gemm_bytes)):
            size = len(tflite_file(forest, Z.shape[1], form, precision))
            assert abs(predict(forest, precision) - size) <= 0.03 * size + 1024, (form, precision)


@pytest.mark.parametrize(("name", "form"), [("rf-depth10-regression", "traversal"), ("rf-depth12-binary", "traversal"),
                                          ("xgboost-binary", "traversal"), ("lgbm-binary", "gemm")])
def test_the_preferred_form_follows_the_benchmark(datasets, name, form):
    """Deep forests and depth-limited boosting walk sooner; leaf-wise LightGBM (deep, few nodes) multiplies sooner."""
    assert preferred_form(case(name).forest) == form


@pytest.mark.parametrize("name", ["lgbm-multiclass", "rf-depth12-binary"])
def test_fp16_halves_leaf_values_and_keeps_decisions_exact(datasets, name):
    forest, Z = case(name).forest, case(name).Z
    full = tflite_file(forest, Z.shape[1], precision="fp32")
    half = tflite_file(forest, Z.shape[1], precision="fp16")
    assert len(half) < len(full)
    interpreter = Interpreter(model_content=half)
    dtypes = {t["name"]: t["dtype"] for t in interpreter.get_tensor_details()}
    assert dtypes["node_thresholds"] == np.float32 and dtypes["leaf_values_fp16"] == np.float16
    got, exact = run(half, Z), run(full, Z)
    assert np.max(np.abs(got - exact)) <= 1e-3
    top2 = np.sort(exact, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2e-3  # a leaf value rounded to float16 may swap a near tie
    np.testing.assert_array_equal(np.argmax(got, axis=1)[clear], np.argmax(exact, axis=1)[clear])


# --- small hand-made forests (no data sets needed) ----------------------------------------------------


def stump(threshold: float, low: float, high: float, feature: int = 0) -> tuple[Node, ...]:
    return (Node(feature, threshold, 1, 2), Node(value=(low,)), Node(value=(high,)))


@pytest.mark.parametrize(("compare", "at_threshold"), [("LESS_EQUAL", 1.0), ("LESS", 3.0)])
def test_a_row_on_the_threshold_goes_where_its_library_sends_it(compare, at_threshold):
    # Unbalanced tree: the right branch is two levels deeper, so a row on the short branch idles at its leaf.
    deep = (Node(0, 0.5, 1, 2), Node(value=(1.0,)), Node(1, 0.25, 3, 4), Node(value=(3.0,)),
            Node(1, 0.75, 5, 6), Node(value=(5.0,)), Node(value=(7.0,)))
    forest = Forest((deep, ((Node(value=(10.0,)),))), 1, (0.5,), compare, "identity")
    arrays = traversal_arrays(forest)
    assert (arrays.trees, arrays.depth, arrays.nodes) == (1, 3, 7)
    Z = np.array([[0.5, 0.0], [0.9, 0.25], [0.9, 0.5], [0.9, 0.75], [0.9, 0.9], [0.1, 0.9]], np.float32)
    got = run(tflite_file(forest, 2), Z).ravel()
    left_on_tie = compare == "LESS_EQUAL"
    expected = [1.0 if left_on_tie else 3.0, 3.0 if left_on_tie else 5.0, 5.0, 5.0 if left_on_tie else 7.0, 7.0, 1.0]
    np.testing.assert_array_equal(got, np.array(expected, np.float32) + 10.5)
    assert got[0] == at_threshold + 10.5
    np.testing.assert_array_equal(arrays.raw(Z).ravel(), got)
    np.testing.assert_array_equal(pack_forest(forest).raw(Z).ravel(), got)


def test_children_sit_next_to_each_other_and_leaves_point_at_themselves():
    arrays = traversal_arrays(Forest((stump(0.0, 1.0, 2.0), stump(1.0, 3.0, 4.0, feature=2)), 1, (0.0,),
                                     "LESS_EQUAL", "identity"))
    np.testing.assert_array_equal(arrays.roots, [0, 3])
    np.testing.assert_array_equal(arrays.left, [1, 1, 2, 4, 4, 5])
    np.testing.assert_array_equal(arrays.feature, [0, 0, 0, 2, 0, 0])
    assert np.isnan(arrays.threshold[[1, 2, 4, 5]]).all()
    np.testing.assert_array_equal(arrays.values.ravel(), [0, 1, 2, 0, 3, 4])


def test_a_forest_of_single_leaves_is_refused_with_the_fix():
    forest = Forest(((Node(value=(1.0,)),),), 1, (0.0,), "LESS", "identity")
    with pytest.raises(ExportError, match="every tree of the ensemble is a single leaf.*train it with more data"):
        traversal_arrays(forest)
