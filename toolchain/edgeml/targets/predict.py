"""Predicting what a fitted model's TFLite file costs without exporting it: its bytes, tensor arena and operators.

Exporting a trial's model for real (:func:`edgeml.export.tflite.pipeline.estimator_tflite`)
reads every node of a tree ensemble in Python, and a microcontroller target
then runs the file once in TFLite Micro: on a large forest that is a second
or more per trial, which a time-budgeted search pays in trials. The graph the
exporter writes, though, depends only on the model's *shape*: a tree
ensemble's trees, nodes, depth and largest tree (its
:class:`~edgeml.models.structure.Structure`), a dense model's layer sizes.
So the prediction builds the exporter's own graph (the same emitters:
preprocessing, :func:`~edgeml.export.tflite.traverse.emit_traversal` or
:func:`~edgeml.export.tflite.pipeline.emit_trees`, the dense layers, the
head) over constants of that shape filled with zeros, and reads off it:

* ``model_bytes``: the serialized file's length (the constants are the same
  sizes, the tensors and operators the same, so the flatbuffer is too);
* ``planned_bytes``: the graph's planned tensor memory
  (:meth:`~edgeml.export.tflite.graph.Graph.planned_bytes`);
* ``ops`` and ``tensor_types``: what :func:`edgeml.targets.opsets.problems`
  checks against the target's operator set;
* for TFLite Micro, the arena it would measure: the planned tensors plus
  :func:`tflm_arena`'s estimate of its own structures (a fixed part, a part
  per tensor and per operator, and the copy BATCH_MATMUL keeps of its
  right-hand side), fitted on TFLite Micro's reports for real exports
  (tests/test_predicted_cost.py checks the error on real models).

What the shape leaves out: trees that are a single leaf (folded into the
bias by the exporter, counted here as trees of one node: a few bytes each),
and the inverse a log-scale label appends (a few operators). Nothing here
runs TFLite Micro or reads a node's threshold.

Example:

>>> import numpy as np
>>> from sklearn.linear_model import LogisticRegression
>>> from edgeml.export.tflite.pipeline import estimator_tflite
>>> model = LogisticRegression().fit(np.eye(4), [0, 1, 0, 1])
>>> p = predict_tflite(model, 4, "classification", "fp32")
>>> real = estimator_tflite([("model", model)], 4, "classification", "fp32")
>>> p.model_bytes == len(real.data), p.planned_bytes == real.details["planned_bytes"], p.ops == real.ops
(True, True, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeml.errors import ExportError


@dataclass(frozen=True)
class PredictedTflite:
    """What the exporter would write for a model at one precision, predicted from its shape."""

    precision: str
    model_bytes: int  #: the model alone (the data set's preprocessing and metadata not included)
    planned_bytes: int
    ops: tuple[str, ...]
    tensor_types: tuple[str, ...]
    tensors: int
    operators: int
    matmul_rhs_bytes: int = 0  #: float32 bytes of BATCH_MATMUL's constant right-hand side (the GEMM tree form)
    form: str = ""  #: the tree form the exporter would pick ("traversal", "gemm"), "" for dense models
    planner_slack: int = 0  #: what TFLite Micro's greedy planner lays out beyond the ideal plan (a tree walk's)


def predict_tflite(model, n_features: int, task: str, precision: str,
                   structure=None) -> PredictedTflite:
    """What :func:`~edgeml.export.tflite.pipeline.estimator_tflite` would write for ``model`` (a searched model:
    an optional scaler, then the estimator) on ``n_features`` inputs at ``precision``, without writing it.

    ``structure`` (the model's :class:`~edgeml.models.structure.Structure`) saves reading it again. A precision
    the model's family is not written at is the exporter's own :class:`ExportError`.
    """
    from edgeml.export.tflite.pipeline import read_scaler
    from edgeml.models.estimators import model_steps
    from edgeml.models.families import TFLITE_PRECISIONS, family_of
    from edgeml.models.target import unwrap_target
    from edgeml_runtime.litert import Encoding

    if precision not in TFLITE_PRECISIONS:
        raise ExportError(f"TFLite precision {precision!r} is unknown; the exporter writes "
                          f"{', '.join(TFLITE_PRECISIONS)}")
    steps = model_steps(model)
    est = unwrap_target(steps[-1][1])
    family = family_of(est)
    if precision not in family.tflite_precisions:
        raise ExportError(family.tflite_refusal or f"{family.title} models are not exported to TFLite {precision}")
    pre = read_scaler(Encoding(list(range(n_features)), np.zeros(n_features, np.float32), []), steps[:-1])
    if family.kind == "trees":
        from edgeml.search.costmodel import structure_of

        return _trees(structure or structure_of(est), family.name, task, precision, pre)
    return _dense(est, task, precision, pre)


def _read(g, precision: str, form: str = "", matmul: int = 0, slack: int = 0) -> PredictedTflite:
    return PredictedTflite(precision, len(g.serialize()), g.planned_bytes(), tuple(g.op_names), g.tensor_types,
                           len(g.tensors), len(g.operators), matmul, form, slack)


def _trees(s, family: str, task: str, precision: str, pre) -> PredictedTflite:
    """A tree ensemble's graph over zero tables of its shape, in the form the exporter would pick."""
    from edgeml.export.tflite.graph import ARENA_ALIGNMENT, Graph
    from edgeml.export.tflite.pipeline import Weights, emit_head, emit_preprocess, emit_trees
    from edgeml.export.tflite.traverse import Traversal, emit_traversal
    from edgeml.export.tflite.trees import Ensemble

    k, head = _tree_outputs(s, family, task)
    compare = "LESS" if family == "xgboost" else "LESS_EQUAL"
    t, nodes, depth = max(1, s.n_trees), max(1, s.n_nodes), max(1, s.max_depth)
    leaves = max(1, s.max_tree_leaves or -(-s.n_leaves // t))
    form = preferred_form(t, nodes, depth, leaves, k)
    g = Graph()
    z = emit_preprocess(g, g.input("features", (pre.width,)), pre)
    weights = Weights(g, precision)
    if form == "traversal":
        arrays = Traversal(np.zeros(nodes, np.int32), np.zeros(nodes, np.float32), np.zeros(nodes, np.int32),
                           np.zeros((nodes, k), np.float32), np.zeros(t, np.int32), np.zeros(k, np.float32), depth,
                           compare, head)
        raw, matmul = emit_traversal(g, z, arrays, weights), 0
        slack = -(-4 * t // ARENA_ALIGNMENT) * ARENA_ALIGNMENT  # TFLM keeps one more [trees] tensor alive
    else:
        inner = leaves - 1
        ensemble = Ensemble(np.zeros((t, inner), np.int32), np.zeros((t, inner), np.float32),
                            np.zeros((t, inner, leaves), np.int8), np.zeros((t, leaves), np.float32),
                            np.zeros((t, leaves, k), np.float32), np.zeros(k, np.float32), compare, head, t)
        raw, matmul, slack = emit_trees(g, z, ensemble, weights), 4 * t * inner * leaves, 0
    g.output(emit_head(g, raw, head), "probabilities" if task == "classification" else "value")
    return _read(g, precision, form, matmul, slack)


def _tree_outputs(s, family: str, task: str) -> tuple[int, str]:
    """Outputs per leaf and the head, as the exporter's readers (:mod:`edgeml.export.tflite.trees`) make them:
    a forest's class shares, or one boosted score for two classes (a sigmoid) and one per class beyond."""
    if task != "classification":
        return 1, "identity"
    if family == "forest":
        return s.n_outputs, "none"
    return (1, "sigmoid2") if s.n_outputs <= 2 else (s.n_outputs, "softmax")


def _dense(est, task: str, precision: str, pre) -> PredictedTflite:
    """A linear model's or MLP's layers, at their sizes, with zero weights, as the exporter writes them (int8:
    on the encoded inputs, a binary head as two logits)."""
    from edgeml.export.tflite.dense import INPUT_QUANT, Dense, emit_dense, emit_dense_int8, read_dense, two_logits
    from edgeml.export.tflite.graph import Graph
    from edgeml.export.tflite.pipeline import Weights, emit_head, emit_preprocess

    layers, head = read_dense(est, task)
    layers = [Dense(np.zeros_like(d.weight), np.zeros_like(d.bias), d.act) for d in layers]
    g = Graph()
    name = "probabilities" if task == "classification" else "value"
    if precision == "int8":
        if head == "sigmoid2":
            layers, head = two_logits(layers), "softmax"
        x = g.input("features", (pre.width,), np.int8, quant=INPUT_QUANT)
        out, _ = emit_dense_int8(g, x, layers, head, np.zeros((1, pre.width)))
        g.output(out, name)
        return _read(g, precision)
    z = emit_preprocess(g, g.input("features", (pre.width,)), pre)
    g.output(emit_head(g, emit_dense(g, z, layers, Weights(g, precision)), head), name)
    return _read(g, precision)


def preferred_form(trees: int, nodes: int, depth: int, max_leaves: int, k: int) -> str:
    """The form :func:`edgeml.export.tflite.traverse.preferred_form` picks, from the ensemble's shape alone."""
    from edgeml.export.tflite import traverse as tr

    gemm = tr.GEMM_US + gemm_bytes(trees, max_leaves - 1, max_leaves, k) / tr.GEMM_BYTES_PER_US
    walk = tr.TRAVERSAL_US + depth * (tr.TRAVERSAL_LEVEL_US + tr.TRAVERSAL_TREE_LEVEL_US * trees)
    return "traversal" if walk <= gemm else "gemm"


def gemm_bytes(t: int, n_int: int, n_leaf: int, k: int) -> int:
    """:func:`edgeml.export.tflite.traverse.gemm_bytes` (fp32) from the shape: what the exporter compares."""
    from edgeml.export.tflite import traverse

    constants = [4 * t * n_int, 4 * t * n_int, 16, t * n_int * n_leaf, 8, 4 * t * n_leaf, t * n_leaf * k * 4, k * 4]
    return traverse._file_bytes(constants, 10)


#: TFLite Micro's own structures (the arena's "tail"), in bytes: a fixed part, per tensor, per operator, and per
#: byte of BATCH_MATMUL's right-hand side (TFLM keeps a transposed float32 copy). Non-negative least squares of the
#: relative error on TFLite Micro's reports for 15 real exports (forests, boosted trees, linear models and MLPs, fp32
#: and int8, on ai4i2020): 800, 52.2, 55.4 and 0.994, within 3.2 % of every tail; tests/test_predicted_cost.py
#: checks the whole arena on other models.
TFLM_TAIL = {"base": 800, "tensor": 52, "operator": 55, "matmul_rhs": 1.0}


#: Tensor types TFLite Micro's kernels refuse although the operator list has their operators, and what it says: its
#: DEQUANTIZE widens int8 only (tests/test_tflite_targets.py runs it on an fp16 file).
TFLM_REFUSED_TYPES = {"float16": "TensorFlow Lite Micro cannot run it (predicted): its DEQUANTIZE takes no float16 "
                                 "input, which fp16 weights need"}


def tflm_problems(p: PredictedTflite) -> list[str]:
    """What TFLite Micro would refuse in the file ``p`` predicts, beyond its operator list (empty when nothing)."""
    return [why for kind, why in TFLM_REFUSED_TYPES.items() if kind in p.tensor_types]


def tflm_arena(p: PredictedTflite) -> int:
    """The arena TFLite Micro would need for the file ``p`` predicts (head and tail, times the setup peak), in
    bytes."""
    tail = (TFLM_TAIL["base"] + TFLM_TAIL["tensor"] * p.tensors + TFLM_TAIL["operator"] * p.operators
            + TFLM_TAIL["matmul_rhs"] * p.matmul_rhs_bytes)
    from edgeml.export.tflite.micro import SETUP_PEAK

    return int(round((p.planned_bytes + p.planner_slack + tail) * SETUP_PEAK))


__all__ = ["PredictedTflite", "TFLM_REFUSED_TYPES", "TFLM_TAIL", "gemm_bytes", "predict_tflite", "preferred_form",
           "tflm_arena", "tflm_problems"]
