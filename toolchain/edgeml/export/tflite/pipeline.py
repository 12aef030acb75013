"""Export a fitted host pipeline, preprocessing included, to a TFLite (LiteRT) model — without TensorFlow.

The model takes one input, ``features`` [n, F] float32: the manifest's
model features in order, numbers as floats (NaN for missing), categorical
columns as integer codes — the position of the value in the column's
``categories``, -1 for one the model does not know (strings cannot enter a
TFLite graph; :mod:`edgeml_runtime.litert` does this mapping on the device,
from the code tables stored in the file). It returns ``probabilities``
[n, K] (classification) or ``value`` [n, 1] (regression).

Everything is builtin TFLite operators: median imputation
(``SELECT_V2(NOT_EQUAL(x, x), median, x)``), one-hot encoding (``EQUAL``
against each column's codes, ``CAST``), scaling (``SUB``, ``MUL``), then
linear and logistic models and MLPs (``FULLY_CONNECTED`` and activations)
or tree ensembles, in whichever of two forms is expected to answer sooner
(:func:`.traverse.preferred_form`): the GEMM formulation
(:mod:`.trees`: ``GATHER``, ``LESS_EQUAL``/``LESS``,
``BATCH_MATMUL``, ``EQUAL``, ``FULLY_CONNECTED``), for trees with few nodes
but long paths, or a level-by-level walk of node tables (:mod:`.traverse`:
``GATHER``, ``GREATER``, ``ADD``, ``SUM``), whose size grows with the node
count instead of its square. A regressor of a label learnt on a log scale
ends with the inverse, ``EXP``, ``SUB`` and ``ADD`` in float32
(:mod:`edgeml.export.inverse`; at int8 after a ``DEQUANTIZE``), so every
file outputs the label. The input names, the code tables and the outputs'
meaning are written into the flatbuffer's metadata (``edgeml``, JSON), so a
C++ or Android consumer needs nothing else.

Precisions (:data:`edgeml.models.families.TFLITE_PRECISIONS`): ``fp32``; ``fp16`` (weights stored as
float16 and widened by ``DEQUANTIZE``; tree thresholds stay float32, as a
rounded threshold would flip decisions); ``int8``, full-integer, for linear
models and MLPs: int8 input, weights, activations and output, int32 biases,
ranges calibrated on training rows — what the Edge TPU and microcontrollers
run. A NaN has no int8 value, so an int8 model takes the *encoded* inputs
(imputed, one-hot, each scaled to [-1, 1] by its calibrated range, see
:class:`edgeml_runtime.litert.Encoding`) and the metadata carries the
encoding; the per-feature ranges are folded into the first layer, so every
feature gets all 255 levels (:mod:`.dense`). Which precisions a model is written
at is its model family's (:data:`edgeml.models.families.TREES_NOT_INT8` says why tree
ensembles are refused in int8).

Example::

    exported = to_tflite(pipeline, schema, "classification", classes=(0, 1), precision="fp32")
    Path("model.tflite").write_bytes(exported.data)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
from sklearn.pipeline import Pipeline

from edgeml.errors import ExportError
from edgeml.export.inverse import emit_tflite as emit_inverse
from edgeml.export.inverse import split
from edgeml.export.tflite.dense import (
    INPUT_QUANT,
    centre_output,
    emit_dense,
    emit_dense_int8,
    fold_encoding,
    int8_encoding,
    read_dense,
    two_logits,
)
from edgeml.export.tflite.graph import Graph, Quant, Tensor
from edgeml.export.tflite.metadata import describe, schema_tables
from edgeml.export.tflite.traverse import emit_traversal, preferred_form, traversal_arrays
from edgeml.export.tflite.trees import Ensemble, pack_forest, read_forest
from edgeml.models.families import TFLITE_PRECISIONS, family_of
from edgeml_runtime.litert import METADATA_KEY, Encoding, feeds_to_matrix
from edgeml_runtime.schema import InputSchema


@dataclass(frozen=True)
class TfliteExport:
    """The ``.tflite`` bytes and what they hold (also written into the file as metadata)."""

    data: bytes
    metadata: dict
    precision: str
    family: str
    ops: tuple[str, ...]
    details: dict = field(default_factory=dict)
    tensor_types: tuple[str, ...] = ()


# --- reading the pipeline ---------------------------------------------------------------------------


def read_preprocess(pipeline: Pipeline, schema: InputSchema) -> Encoding:
    """The preprocessing of ``pipeline`` (ColumnTransformer, optional StandardScaler) as arrays over input columns."""
    features = schema.features
    position = {f: i for i, f in enumerate(features)}
    by_feature = {c.features[0]: c for c in schema.columns if c.kind == "categorical"}
    numeric, median, onehot = [], [], []
    for name, trans, cols in pipeline.steps[0][1].transformers_:
        if trans == "drop" or name == "remainder":
            continue
        cols = list(cols)
        missing = [c for c in cols if c not in position]
        if missing:
            raise ExportError(f"the pipeline's {name!r} step reads feature(s) {missing[:3]} that the input schema "
                              f"does not have (it has {features[:5]}...); rebuild the pipeline from this schema")
        kind = type(trans).__name__
        if kind == "SimpleImputer":
            if trans.strategy not in ("median", "mean", "constant", "most_frequent") or trans.add_indicator:
                raise ExportError(f"SimpleImputer(strategy={trans.strategy!r}, add_indicator={trans.add_indicator}) "
                                  "is not supported by the TFLite exporter; use edgeml's median imputer")
            for c, stat in zip(cols, trans.statistics_, strict=False):
                if np.isnan(stat) and not trans.keep_empty_features:
                    continue  # scikit-learn drops a column that was empty in training
                numeric.append(position[c])
                median.append(0.0 if np.isnan(stat) else float(stat))
        elif kind == "OneHotEncoder":
            if trans.drop_idx_ is not None or getattr(trans, "_infrequent_enabled", False):
                raise ExportError("OneHotEncoder with drop= or infrequent categories is not supported by the TFLite "
                                  "exporter; use edgeml's encoder (explicit categories, handle_unknown='ignore')")
            for c, cats in zip(cols, trans.categories_, strict=False):
                table = list(by_feature[c].categories) if c in by_feature else []
                for cat in cats:
                    if cat not in table:
                        raise ExportError(f"category {cat!r} of feature {c!r} is not in the schema's categories "
                                          f"{table[:5]}; the encoder and the schema disagree, rebuild the pipeline")
                    onehot.append((position[c], table.index(cat)))
        else:
            raise ExportError(f"preprocessing step {kind} ({name!r}) is not supported by the TFLite exporter; it "
                              "takes SimpleImputer on numbers and OneHotEncoder on categories")
    return read_scaler(Encoding(numeric, np.array(median, np.float32), onehot), pipeline.steps[1:-1])


def read_scaler(encoding: Encoding, steps) -> Encoding:
    """``encoding`` with the optional StandardScaler of ``steps`` (the pipeline between preprocessing and model)."""
    from sklearn.preprocessing import StandardScaler

    for _, step in steps:
        if not isinstance(step, StandardScaler):
            raise ExportError(f"pipeline step {type(step).__name__} is not supported by the TFLite exporter; "
                              "between preprocessing and the model it takes one StandardScaler")
        width = encoding.width
        mean = (step.mean_ if step.with_mean else np.zeros(width)).astype(np.float32)
        inv_scale = (1.0 / step.scale_ if step.with_std else np.ones(width)).astype(np.float32)
        encoding = replace(encoding, mean=mean, inv_scale=inv_scale)
    return encoding


def _estimator(pipeline: Pipeline):
    est = pipeline.steps[-1][1]
    if isinstance(est, Pipeline):  # a StandardizedModel left wrapped
        raise ExportError("the pipeline's last step is itself a Pipeline; "
                          "flatten it with edgeml.models.estimators.model_steps")
    return est


# --- graph emission ---------------------------------------------------------------------------------


class Weights:
    """Makes weight constants at one precision: fp32 as is, fp16 stored half and widened by DEQUANTIZE."""

    def __init__(self, g: Graph, precision: str):
        self.g, self.half = g, precision == "fp16"

    def __call__(self, name: str, value: np.ndarray) -> Tensor:
        value = np.asarray(value, np.float32)
        if not self.half:
            return self.g.const(name, value)
        h = self.g.const(f"{name}_fp16", value.astype(np.float16))
        return self.g.op("DEQUANTIZE", [h], value.shape, name=name, batched=False)

    def exact_int8(self, name: str, value: np.ndarray) -> Tensor:
        """A constant of small integers (tree paths: -1, 0, +1), stored int8 and widened exactly."""
        q = self.g.const(f"{name}_int8", value.astype(np.int8), quant=Quant(np.ones(1), np.zeros(1)))
        return self.g.op("DEQUANTIZE", [q], value.shape, name=name, batched=False)


def emit_preprocess(g: Graph, x: Tensor, pre: Encoding) -> Tensor:
    parts = []
    if pre.numeric:
        num = x
        if pre.numeric != list(range(x.shape[0])):
            num = g.op("GATHER", [x, g.const("numeric_columns", np.array(pre.numeric, np.int32))],
                       (len(pre.numeric),), name="numeric", axis=1)
        missing = g.op("NOT_EQUAL", [num, num], num.shape, np.bool_, name="is_missing")
        parts.append(g.op("SELECT_V2", [missing, g.const("median", pre.median), num], num.shape, name="imputed"))
    if pre.onehot:
        cols, codes = zip(*pre.onehot, strict=False)
        k = len(cols)
        picked = g.op("GATHER", [x, g.const("category_columns", np.array(cols, np.int32))], (k,),
                      name="category_codes", axis=1)
        hit = g.op("EQUAL", [picked, g.const("category_code", np.array(codes, np.float32))], (k,), np.bool_,
                   name="is_category")
        parts.append(g.op("CAST", [hit], (k,), name="onehot"))
    z = parts[0] if len(parts) == 1 else g.op("CONCATENATION", parts, (pre.width,), name="encoded", Axis=1)
    if pre.mean is not None:
        z = g.op("SUB", [z, g.const("scaler_mean", pre.mean)], (pre.width,), name="centred")
        z = g.op("MUL", [z, g.const("scaler_inv_scale", pre.inv_scale)], (pre.width,), name="scaled")
    return z


def emit_trees(g: Graph, z: Tensor, e: Ensemble, weights: Weights) -> Tensor:
    t, n_int = e.feature.shape
    n_leaf, k = e.values.shape[1], e.values.shape[2]
    picked = g.op("GATHER", [z, g.const("tree_features", e.feature.ravel())], (t * n_int,), name="tree_inputs", axis=1)
    go = g.op(e.compare, [picked, g.const("tree_thresholds", e.threshold.ravel())], (t * n_int,), np.bool_,
              name="goes_left")
    go = g.op("CAST", [go], (t * n_int,), name="goes_left_f")
    go = g.op("RESHAPE", [go, g.const("per_tree_shape", np.array([-1, t, 1, n_int], np.int32))], (t, 1, n_int),
              name="goes_left_per_tree")
    paths = weights.exact_int8("tree_paths", e.paths)
    reached = g.op("BATCH_MATMUL", [go, paths], (t, 1, n_leaf), name="path_score")
    reached = g.op("RESHAPE", [reached, g.const("leaves_shape", np.array([-1, t * n_leaf], np.int32))],
                   (t * n_leaf,), name="path_score_flat")
    hit = g.op("EQUAL", [reached, g.const("tree_lefts", e.lefts.ravel())], (t * n_leaf,), np.bool_, name="leaf_hit")
    hit = g.op("CAST", [hit], (t * n_leaf,), name="leaf_onehot")
    values = e.values.reshape(t * n_leaf, k).T
    return g.op("FULLY_CONNECTED", [hit, weights("leaf_values", values), weights("base_score", e.bias)], (k,),
                name="raw_score")


def emit_head(g: Graph, raw: Tensor, head: str) -> Tensor:
    if head == "sigmoid2":
        p = g.op("LOGISTIC", [raw], (1,), name="p1")
        q = g.op("SUB", [g.const("one", np.ones(1, np.float32)), p], (1,), name="p0")
        return g.op("CONCATENATION", [q, p], (2,), name="probabilities", Axis=1)
    if head == "softmax":
        return g.op("SOFTMAX", [raw], raw.shape, name="probabilities")
    return raw


# --- the exporter -----------------------------------------------------------------------------------


def compile_graph(pre: Encoding, est, task: str, precision: str, X_cal: np.ndarray | None,
                  n_inputs: int) -> tuple[Graph, Encoding | None, dict]:
    """The graph of ``pre`` then ``est`` at ``precision``; for int8 also the encoding the caller must apply.

    What is written is the model family's (:func:`edgeml.models.families.family_of`): its kind picks the
    graph (trees, or dense layers for linear models and MLPs), its precisions what may be written.
    """
    if precision not in TFLITE_PRECISIONS:
        raise ExportError(f"TFLite precision {precision!r} is unknown; the exporter writes "
                          f"{', '.join(TFLITE_PRECISIONS)}")
    est, inverse = split(est)
    family = family_of(est)
    if precision not in family.tflite_precisions:
        raise ExportError(family.tflite_refusal or f"{family.title} models are not exported to TFLite {precision}")
    g = Graph()
    details: dict = {"family": family.kind}
    if precision == "int8":
        enc = _emit_int8(g, pre, est, task, X_cal, details, inverse)
        return g, enc, details
    x = g.input("features", (n_inputs,))
    z = emit_preprocess(g, x, pre)
    raw, head = MODEL_EMITTERS[family.kind](g, z, est, task, Weights(g, precision), details)
    out = emit_head(g, raw, head)
    g.output(out if inverse is None else emit_inverse(g, out, inverse),
             "probabilities" if task == "classification" else "value")
    return g, None, details


def _emit_int8(g: Graph, pre: Encoding, est, task: str, X_cal: np.ndarray | None, details: dict,
               inverse: tuple[str, float] | None = None) -> Encoding:
    """A full-integer dense model on the encoded inputs; the encoding the caller must apply.

    With a label transform's ``inverse`` the int8 output is dequantized, its centring offset added back and the
    inverse applied in float32 (``exp`` of int8 steps would be steps of the label's log): the output is float32.
    """
    if X_cal is None or not len(X_cal):
        raise ExportError("int8 TFLite needs calibration rows: pass feeds from the training split "
                          "(calibration=encode_frame(split.train, schema, ...))")
    layers, head = read_dense(est, task)
    enc = int8_encoding(pre, X_cal)
    layers = fold_encoding(layers, pre, enc)
    if head == "sigmoid2":
        layers, head = two_logits(layers), "softmax"
    x = g.input("features", (enc.width,), np.int8, quant=INPUT_QUANT)
    Zq = np.clip(np.round(enc.apply(X_cal) * 127), -128, 127) / 127  # what the int8 input can hold
    if head == "identity":
        layers, details["output_offset"] = centre_output(layers, Zq)
    out, details["quantization"] = emit_dense_int8(g, x, layers, head, Zq)
    if inverse is not None:
        z = g.op("DEQUANTIZE", [out], out.shape, name="log_value")
        z = g.op("ADD", [z, g.const("output_offset", np.array([details.pop("output_offset")], np.float32))],
                 out.shape, name="log_value_centred")
        out = emit_inverse(g, z, inverse)
    g.output(out, "probabilities" if task == "classification" else "value")
    return enc


def _emit_forest(g: Graph, z: Tensor, est, task: str, weights: Weights, details: dict) -> tuple[Tensor, str]:
    """A tree ensemble, in whichever form is expected to answer sooner (:func:`.traverse.preferred_form`)."""
    forest = read_forest(est, task)
    form = preferred_form(forest)
    if form == "traversal":
        arrays = traversal_arrays(forest)
        details["trees"] = {"form": form, "trees": arrays.trees, "nodes": arrays.nodes, "depth": arrays.depth,
                            "compare": arrays.compare}
        return emit_traversal(g, z, arrays, weights), arrays.head
    ensemble = pack_forest(forest)
    details["trees"] = {"form": form, "trees": ensemble.trees, "max_internal_nodes": int(ensemble.feature.shape[1]),
                        "max_leaves": int(ensemble.lefts.shape[1]), "compare": ensemble.compare}
    return emit_trees(g, z, ensemble, weights), ensemble.head


def _emit_dense_model(g: Graph, z: Tensor, est, task: str, weights: Weights, details: dict) -> tuple[Tensor, str]:
    layers, head = read_dense(est, task)
    return emit_dense(g, z, layers, weights), head


#: Family kind -> what writes a model of that kind after the preprocessing (float precisions).
MODEL_EMITTERS = {"trees": _emit_forest, "linear": _emit_dense_model, "mlp": _emit_dense_model}


def to_tflite(pipeline: Pipeline, schema: InputSchema, task: str, classes=(), precision: str = "fp32",
              calibration: Mapping[str, np.ndarray] | None = None, static_batch: bool = False) -> TfliteExport:
    """Compile ``pipeline`` into a ``.tflite`` model at ``precision``; what cannot be exported is an
    :class:`ExportError`.

    ``calibration`` (int8 only) holds training-split feeds as
    ``FeatureEncoder.encode`` returns them (feature name -> (n, 1) array).
    ``static_batch`` writes a batch of exactly one row (see :meth:`Graph.serialize`).
    """
    est = _estimator(pipeline)
    inverse = split(est)[1]
    pre = read_preprocess(pipeline, schema)
    features = schema.features
    X_cal = None
    if calibration is not None and precision == "int8":
        X_cal = feeds_to_matrix(calibration, schema_tables(schema), features)[:CALIBRATION_ROWS]
    g, enc, details = compile_graph(pre, est, task, precision, X_cal, len(features))
    metadata = describe(schema, task, classes, precision, details["family"], type(split(est)[0]).__name__, enc,
                        details.get("output_offset"), inverse)
    data = g.serialize({METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()}, static_batch=static_batch)
    details["planned_bytes"] = g.planned_bytes()
    if precision != "fp32":
        full = to_tflite(pipeline, schema, task, classes, "fp32").data
        if precision == "fp16" and len(data) >= len(full):
            raise ExportError(f"TFLite {precision} would not make this {type(est).__name__} model smaller "
                              f"({len(data):,} bytes vs {len(full):,} in fp32): its weights are too few for the "
                              "conversion operators to pay off; use fp32")
        details["bytes_fp32"] = len(full)
    return TfliteExport(data, metadata, precision, details.pop("family"), tuple(g.op_names), details,
                        g.tensor_types)


def estimator_tflite(steps, n_features: int, task: str, precision: str,
                     X_cal: np.ndarray | None = None) -> TfliteExport:
    """The model alone (``steps``: an optional StandardScaler, then the estimator) on ``n_features`` numbers.

    What the search measures each trial with on a TFLite target: the size,
    operators and tensor memory of the model without the data set's
    preprocessing in front (:func:`overhead_bytes` measures what that adds).
    """
    steps = list(steps)
    pre = read_scaler(Encoding(list(range(n_features)), np.zeros(n_features, np.float32), []), steps[:-1])
    est = steps[-1][1]
    cal = None if X_cal is None else np.asarray(X_cal, np.float32)[:CALIBRATION_ROWS]
    g, _, details = compile_graph(pre, est, task, precision, cal, n_features)
    data = g.serialize()
    details["planned_bytes"] = g.planned_bytes()
    details["input_width"] = g.tensors[g.inputs[0]].shape[0]
    return TfliteExport(data, {}, precision, details.pop("family"), tuple(g.op_names), details, g.tensor_types)


def overhead_bytes(pre, schema: InputSchema, task: str, classes, precision: str,
                   calibration: Mapping[str, np.ndarray] | None = None) -> int:
    """What the data set's preprocessing and metadata add to any model's TFLite file at ``precision``.

    :func:`estimator_tflite` measures the model alone; the file a device gets
    also holds the preprocessing (fp32, fp16) or its description (int8), and
    the code tables. Measured once, with a linear model of zeros, as the
    difference between the two files.
    """
    from sklearn.linear_model import LinearRegression, LogisticRegression

    width = read_preprocess(Pipeline([("pre", pre), ("model", "passthrough")]), schema).width
    if task == "classification":
        k = len(classes)
        est = LogisticRegression()
        est.coef_, est.intercept_ = np.zeros((1 if k == 2 else k, width)), np.zeros(1 if k == 2 else k)
        est.classes_ = np.arange(k)
    else:
        est = LinearRegression()
        est.coef_, est.intercept_ = np.zeros(width), 0.0
    pipeline = Pipeline([("pre", pre), ("model", est)])
    full = to_tflite(pipeline, schema, task, classes, precision, calibration)
    X_cal = None
    if precision == "int8" and calibration is not None:
        X = feeds_to_matrix(calibration, schema_tables(schema), schema.features)[:CALIBRATION_ROWS]
        X_cal = read_preprocess(pipeline, schema).apply(X)
    bare = estimator_tflite([("model", est)], width, task, precision, X_cal)
    return max(0, len(full.data) - len(bare.data))


#: Training rows used to calibrate int8 ranges.
CALIBRATION_ROWS = 2000


__all__ = ["CALIBRATION_ROWS", "MODEL_EMITTERS", "TfliteExport", "Weights", "compile_graph", "emit_head",
           "emit_preprocess", "emit_trees", "estimator_tflite", "overhead_bytes", "read_preprocess", "read_scaler",
           "to_tflite"]
