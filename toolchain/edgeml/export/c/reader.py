"""Read a bundle's ``model.onnx`` into a :class:`~edgeml.export.c.program.Program`, node by node.

The bundle is the contract: the C form is made from the ONNX model every
bundle ships (the fp32 reference the runtime scores and every other artifact
is checked against), not from a fitted Python model. It holds the whole
pipeline in standard operators with defined float32 semantics: ``Imputer``,
``OneHotEncoder`` and ``Scaler`` for the preprocessing, then
``TreeEnsembleClassifier``/``Regressor`` (node tables with float32
thresholds already exact for float32 inputs), ``LinearClassifier``/
``LinearRegressor``, or ``MatMul``/``Add`` and activations for an MLP, and a
log-scale label's inverse (``Exp``, ``Sub``, ``Add``). The TFLite artifacts
would do too, but not for every target (an x86-64 bundle has none), and an
int8 or fp16 file no longer holds the float32 model.

Only the nodes the chosen output needs are read (the probabilities of a
classifier, whose label C computes by ``edgeml_label``; the value of a
regressor), in graph order, each by its reader in :data:`NODE_READERS`; an
operator with no reader is an :class:`~edgeml.errors.ExportError` naming it.
Until a model operator takes them, tensors are tracked as columns
(:class:`Col`: which feature, imputed with what, one-hot of which code,
scaled how), then become :class:`~edgeml.export.c.program.Inputs`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeml.errors import ExportError
from edgeml.export.c import steps as st
from edgeml.export.c.forest import check_missing, forest_tables, onnx_forest
from edgeml.export.c.program import Inputs, Program, Trees
from edgeml_runtime.litert import Encoding
from edgeml_runtime.schema import InputSchema


@dataclass(frozen=True)
class Col:
    """One column of a tensor before the model: feature ``feature`` of the row, as a string category
    (``string``), a one-hot of ``code``, or a number imputed with ``fill`` (NaN: not imputed); then
    ``(v - offset) * scale`` when ``offset`` is set."""

    feature: int
    string: bool = False
    code: int | None = None
    fill: float = float("nan")
    offset: float | None = None
    scale: float | None = None


@dataclass(frozen=True)
class Buf:
    """A buffer of the program: ``id`` (0: the model inputs) and its width in floats."""

    id: int
    width: int


class _Reading:
    """The state of one read: the schema, the tensors' values so far, the steps written."""

    def __init__(self, schema: InputSchema):
        self.schema = schema
        self.features = tuple(schema.features)
        self.steps: list[st.Step] = []
        self.inputs: Inputs | None = None
        self.cols: tuple[Col, ...] | None = None
        self.family = ""

    def buffer(self, value, op: str) -> Buf:
        """``value`` as a buffer: columns become the model inputs (once)."""
        if isinstance(value, Buf):
            return value
        if not isinstance(value, tuple):
            raise ExportError(f"the ONNX {op} takes a constant where the C form expects the row's values")
        if self.inputs is None:
            self.inputs, self.cols = _inputs(value, self), value
        elif value != self.cols:
            raise ExportError(f"the ONNX {op} takes other preprocessed columns than the model before it; the C form "
                              "preprocesses a row once")
        return Buf(0, self.inputs.width)

    def add(self, step: st.Step) -> Buf:
        self.steps.append(step)
        return Buf(len(self.steps), step.width)


def read_onnx(model: onnx.ModelProto, schema: InputSchema, output: str) -> Program:
    """The program computing graph output ``output`` of ``model`` from the float row of ``schema``'s features."""
    graph = model.graph
    values: dict[str, object] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    reading = _Reading(schema)
    for name in (i.name for i in graph.input):
        if name not in values:
            values[name] = _input_column(name, reading)
    for node in _needed(graph, output):
        reader = NODE_READERS.get(node.op_type)
        if reader is None:
            raise ExportError(f"the ONNX model has a {node.op_type} node ({node.name or node.output[0]}), which the "
                              f"C form does not write (it reads {', '.join(sorted(NODE_READERS))}); "
                              "use `edgeml firmware --form tflm`")
        args = [values.get(i) for i in node.input]
        for out, value in zip(node.output, reader(node, args, reading), strict=False):
            if value is not None:
                values[out] = value
    result = reading.buffer(values[output], "output")
    if reading.inputs is None or not reading.family:
        raise ExportError("the ONNX model computes its output without a model operator; rebuild the bundle")
    return Program(reading.inputs, tuple(reading.steps), result.id, result.width, reading.family)


def _input_column(name: str, reading: _Reading) -> tuple[Col, ...]:
    if name not in reading.features:
        raise ExportError(f"the ONNX model takes {name!r}, which is not among the manifest's inputs "
                          f"({', '.join(reading.features[:5])}...); rebuild the bundle")
    f = reading.features.index(name)
    column = next(c for c in reading.schema.columns if name in c.features)
    return (Col(f, string=column.kind == "categorical"),)


def _needed(graph, output: str) -> list:
    """The nodes ``output`` depends on, in graph (topological) order."""
    producer = {o: n for n in graph.node for o in n.output}
    wanted, todo = set(), [output]
    while todo:
        name = todo.pop()
        node = producer.get(name)
        if node is not None and id(node) not in wanted:
            wanted.add(id(node))
            todo += list(node.input)
    return [n for n in graph.node if id(n) in wanted]


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _inputs(cols: tuple[Col, ...], reading: _Reading) -> Inputs:
    """Columns as :class:`Inputs`: the numbers first, then the one-hot codes, all scaled or none."""
    if any(c.string for c in cols):
        raise ExportError("a category reaches the model without one-hot encoding; the C form takes codes only "
                          "through a OneHotEncoder: rebuild the bundle")
    numbers = [c for c in cols if c.code is None]
    if cols[:len(numbers)] != tuple(numbers):
        raise ExportError("the ONNX preprocessing puts one-hot columns before numbers; the C form takes the "
                          "numbers first (as edgeml's preprocessing writes them): rebuild the bundle")
    scaled = [c.offset is not None for c in cols]
    if any(scaled) and not all(scaled):
        raise ExportError("the ONNX preprocessing scales some model inputs and not others; rebuild the bundle")
    mean = np.array([c.offset for c in cols], np.float32) if all(scaled) else None
    inv = np.array([c.scale for c in cols], np.float32) if all(scaled) else None
    enc = Encoding([c.feature for c in numbers], np.array([c.fill for c in numbers], np.float32),
                   [(c.feature, c.code) for c in cols[len(numbers):]], mean, inv)
    codes = {i: tuple(col.categories) for col in reading.schema.columns if col.kind == "categorical"
             for i in [reading.features.index(col.features[0])]}
    return Inputs(enc, reading.features, codes)


# --- the preprocessing ----------------------------------------------------------------------------------


def _cols(value, op: str) -> tuple[Col, ...]:
    if not isinstance(value, tuple):
        raise ExportError(f"the ONNX {op} node comes after the model inputs are made; the C form preprocesses "
                          "the row's columns only")
    return value


def _concat(node, args, reading):
    if all(isinstance(a, tuple) for a in args):
        return [sum(args, ())]
    bufs = [reading.buffer(a, "Concat") for a in args]
    return [reading.add(st.Concat(tuple(b.id for b in bufs), tuple(b.width for b in bufs)))]


def _gather(node, args, reading):
    cols, index = _cols(args[0], "Gather"), args[1]
    if _attrs(node).get("axis", 0) != 1 or not isinstance(index, np.ndarray):
        raise ExportError("the ONNX Gather does not pick columns by constant positions; rebuild the bundle")
    return [tuple(cols[int(i)] for i in np.atleast_1d(index))]


def _imputer(node, args, reading):
    cols, a = _cols(args[0], "Imputer"), _attrs(node)
    fills = list(a.get("imputed_value_floats", []))
    if not np.isnan(a.get("replaced_value_float", np.nan)) or len(fills) not in (1, len(cols)):
        raise ExportError("the ONNX Imputer replaces something other than NaN; the C form imputes missing numbers")
    fills = fills * len(cols) if len(fills) == 1 else fills
    for c in cols:
        if c.string or c.code is not None or not np.isnan(c.fill):
            raise ExportError("the ONNX Imputer takes a category or an imputed number; rebuild the bundle")
    return [tuple(replace(c, fill=float(np.float32(f))) for c, f in zip(cols, fills, strict=True))]


def _onehot(node, args, reading):
    cols, a = _cols(args[0], "OneHotEncoder"), _attrs(node)
    cats = [c.decode("utf-8") for c in a.get("cats_strings", [])]
    out = []
    for c in cols:
        column = next(col for col in reading.schema.columns if reading.features[c.feature] in col.features)
        table = list(column.categories)
        unknown = [v for v in cats if v not in table]
        if not c.string or unknown or not cats:
            raise ExportError(f"the ONNX OneHotEncoder of {reading.features[c.feature]!r} has categories "
                              f"{unknown[:3] or cats[:3]} that the manifest's inputs do not; rebuild the bundle")
        out += [Col(c.feature, code=table.index(v)) for v in cats]
    return [tuple(out)]


def _scaler(node, args, reading):
    cols, a = _cols(args[0], "Scaler"), _attrs(node)
    offset, scale = list(a.get("offset", [0.0])), list(a.get("scale", [1.0]))
    offset = offset * len(cols) if len(offset) == 1 else offset
    scale = scale * len(cols) if len(scale) == 1 else scale
    if any(c.offset is not None for c in cols):
        raise ExportError("the ONNX model scales its inputs twice; rebuild the bundle")
    return [tuple(replace(c, offset=float(np.float32(o)), scale=float(np.float32(s)))
                  for c, o, s in zip(cols, offset, scale, strict=True))]


def _same(node, args, reading):
    """Reshape (a row stays a row), Identity and Cast to float: the value itself."""
    if node.op_type == "Cast" and _attrs(node).get("to") != onnx.TensorProto.FLOAT:
        raise ExportError("the ONNX output needs a Cast to a type other than float; the C form computes floats")
    return [args[0]]


# --- the model ------------------------------------------------------------------------------------------


def _const_operand(node, args, reading) -> tuple[Buf, np.ndarray, bool]:
    """The buffer and the constant of a binary operator, and whether the constant comes first."""
    first, second = args
    if isinstance(first, np.ndarray) and not isinstance(second, np.ndarray):
        return reading.buffer(second, node.op_type), first.astype(np.float32).ravel(), True
    if isinstance(second, np.ndarray):
        return reading.buffer(first, node.op_type), second.astype(np.float32).ravel(), False
    raise ExportError(f"the ONNX {node.op_type} combines two computed tensors; the C form takes one constant")


def _matmul(node, args, reading):
    x = reading.buffer(args[0], "MatMul")
    w = args[1]
    if not isinstance(w, np.ndarray) or w.ndim != 2 or w.shape[0] != x.width:
        raise ExportError("the ONNX MatMul does not multiply by a constant matrix; rebuild the bundle")
    reading.family = reading.family or "mlp"
    return [reading.add(st.Dense((x.id,), np.ascontiguousarray(w.T.astype(np.float32))))]


def _elementwise(node, args, reading):
    x, c, first = _const_operand(node, args, reading)
    if c.size not in (1, x.width):
        raise ExportError(f"the ONNX {node.op_type} broadcasts a constant of {c.size} values over {x.width}")
    op = node.op_type
    if op == "Sub":
        step = st.Const((x.id,), x.width, "sub_from", c) if first else st.Const((x.id,), x.width, "add", -c)
    else:  # Add and Mul are commutative in IEEE arithmetic
        step = st.Const((x.id,), x.width, {"Add": "add", "Mul": "mul"}[op], c)
    return [reading.add(step)]


def _unary(node, args, reading):
    x = reading.buffer(args[0], node.op_type)
    function = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "logistic", "Exp": "exp"}[node.op_type]
    return [reading.add(st.Unary((x.id,), x.width, function))]


def _softmax(node, args, reading):
    x = reading.buffer(args[0], "Softmax")
    return [reading.add(st.Softmax((x.id,), x.width))]


def _trees(node, args, reading):
    x = reading.buffer(args[0], node.op_type)
    forest, how = onnx_forest(node, x.width)
    check_missing(how["tracks"], reading.inputs.may_be_nan if x.id == 0 else lambda j: True)
    reading.family = "trees"
    bias = np.array(forest.bias, np.float32)
    scores = reading.add(Trees((x.id,), forest_tables(forest), bias, how["aggregate"] == "AVERAGE"))
    if how["aggregate"] not in ("SUM", "AVERAGE"):
        raise ExportError(f"the ONNX tree ensemble aggregates with {how['aggregate']}; the C form sums or averages")
    if node.op_type == "TreeEnsembleRegressor":
        if forest.head != "NONE":
            raise ExportError(f"the ONNX tree regressor ends with {forest.head}; the C form writes NONE only")
        return [scores]
    if forest.k == 1:
        if np.any(bias != 0):
            raise ExportError("the ONNX binary tree classifier has base values; the C form does not write them")
        mode = ("complement" if how["weights_positive"] else
                {"LOGISTIC": "logistic", "NONE": "negate"}.get(forest.head))
        if mode is None:
            raise ExportError(f"the ONNX binary tree classifier ends with {forest.head}; rebuild the bundle")
        return [None, reading.add(st.TwoClass((scores.id,), mode))]
    return [None, _post(forest.head, scores, reading)]


def _post(transform: str, scores: Buf, reading) -> Buf:
    """ONNX Runtime's post transform of a classifier's scores."""
    if transform == "NONE":
        return scores
    if transform == "SOFTMAX":
        return reading.add(st.Softmax((scores.id,), scores.width))
    if transform == "LOGISTIC":
        return reading.add(st.Unary((scores.id,), scores.width, "logistic"))
    raise ExportError(f"the ONNX classifier ends with {transform}; the C form writes NONE, LOGISTIC and SOFTMAX")


def _linear(node, args, reading):
    x = reading.buffer(args[0], node.op_type)
    a = _attrs(node)
    coef = np.array(a["coefficients"], np.float32)
    rows = coef.size // x.width
    coef = coef.reshape(rows, x.width)
    bias = np.array(a.get("intercepts", [0.0] * rows), np.float32)
    transform = a.get("post_transform", b"NONE").decode()
    reading.family = "linear"
    if node.op_type == "LinearRegressor":
        if transform != "NONE":
            raise ExportError(f"the ONNX LinearRegressor ends with {transform}; the C form writes NONE only")
        return [reading.add(st.Dense((x.id,), coef, bias))]
    if rows == 2 and np.array_equal(coef[0], -coef[1]) and bias[0] == -bias[1] and transform == "LOGISTIC":
        # a binary model as two opposite rows: one dot product, the other score is its negation (exactly)
        s = reading.add(st.Dense((x.id,), coef[1:], bias[1:]))
        return [None, reading.add(st.TwoClass((s.id,), "logistic"))]
    if rows < 2:
        raise ExportError("the ONNX LinearClassifier has one row of coefficients; rebuild the bundle")
    return [None, _post(transform, reading.add(st.Dense((x.id,), coef, bias)), reading)]


#: ONNX operator -> its reader: ``(node, argument values, reading) -> output values`` (None: not computed).
NODE_READERS: dict[str, Callable] = {
    "Concat": _concat, "Gather": _gather, "Imputer": _imputer, "OneHotEncoder": _onehot, "Scaler": _scaler,
    "Reshape": _same, "Identity": _same, "Cast": _same, "Flatten": _same,
    "MatMul": _matmul, "Add": _elementwise, "Sub": _elementwise, "Mul": _elementwise,
    "Relu": _unary, "Tanh": _unary, "Sigmoid": _unary, "Exp": _unary, "Softmax": _softmax,
    "TreeEnsembleClassifier": _trees, "TreeEnsembleRegressor": _trees,
    "LinearClassifier": _linear, "LinearRegressor": _linear,
}

__all__ = ["NODE_READERS", "read_onnx"]
