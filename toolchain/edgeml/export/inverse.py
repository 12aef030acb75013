"""The inverse of a label transform, appended to the end of every exported graph, so each artifact outputs the label.

A regressor that learnt ``z = log1p(y - offset)``
(:class:`edgeml.models.target.LogTarget`) is exported as the wrapped
regressor followed by ``y = expm1(z) + offset``: in ONNX ``Exp``, ``Sub 1``
and ``Add offset`` (:func:`append_onnx`, ONNX has no ``Expm1``), in TFLite
``EXP``, ``SUB`` and ``ADD`` (:func:`emit_tflite`; an int8 model's output is
dequantized to float32 first). The ``Add`` is left out for an offset of 0.
Every node added here is named with :data:`NODE_PREFIX`, so that the fp16
conversion can take them off (:func:`detach_onnx`) and append them again
after it, in float32: a salary of 100,000 is out of float16's range
(65,504), and ``exp`` of fp16's 3 significant digits of ``z`` would be
errors of a few percent.

``exp`` turns an absolute error of ``z`` into a relative error of ``y``;
:func:`edgeml.verify.parity.value_tolerance` widens the parity tolerance
accordingly (docs/bundle.md, "Parity").

Example:

>>> import onnx
>>> from onnx import TensorProto, helper
>>> graph = helper.make_graph([helper.make_node("Identity", ["x"], ["variable"], name="id")], "g",
...                           [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
...                           [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])])
>>> model = append_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)]), ("log1p", 10.0))
>>> [n.op_type for n in model.graph.node], model.graph.output[0].name
(['Identity', 'Exp', 'Sub', 'Add'], 'variable')
>>> core, inverse = detach_onnx(model)
>>> [n.op_type for n in core.graph.node], inverse
(['Identity'], ('log1p', 10.0))
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeml.errors import ExportError
from edgeml.models.target import target_inverse, unwrap_target

#: The name prefix of every node and tensor this module adds.
NODE_PREFIX = "target_inverse_"
#: The transforms an exporter can invert, by the name :func:`edgeml.models.target.target_inverse` gives.
KINDS = ("log1p",)


def split(estimator) -> tuple[object, tuple[str, float] | None]:
    """The estimator an exporter converts, and the inverse to append after it (``None`` for a model of the label).

    >>> from sklearn.linear_model import LinearRegression
    >>> from edgeml.models.target import LogTarget
    >>> inner = LinearRegression()
    >>> split(LogTarget.of(inner, 2.0))[0] is inner, split(LogTarget.of(inner, 2.0))[1], split(inner)[1]
    (True, ('log1p', 2.0), None)
    """
    inverse = target_inverse(estimator)
    if inverse is not None and inverse[0] not in KINDS:
        raise ExportError(f"the label transform {inverse[0]!r} cannot be inverted inside an artifact (edgeml "
                          f"inverts {', '.join(KINDS)}); search without it")
    return unwrap_target(estimator), inverse


def describe(inverse: tuple[str, float]) -> str:
    """What an artifact's ``transform.done`` says about the inverse.

    >>> describe(("log1p", 0.0))
    'the label was learnt as log1p(y); the graph ends with its inverse expm1(z), in float32'
    """
    _, offset = inverse
    learnt, back = (f"log1p(y - {offset:g})", f"expm1(z) + {offset:g}") if offset else ("log1p(y)", "expm1(z)")
    return f"the label was learnt as {learnt}; the graph ends with its inverse {back}, in float32"


def append_onnx(model: onnx.ModelProto, inverse: tuple[str, float]) -> onnx.ModelProto:
    """``model`` (one regression output) with ``Exp``, ``Sub 1`` and ``Add offset`` after its output, in place.

    The output keeps its name, type and shape: what the model computed
    before is renamed ``target_inverse_z``.
    """
    graph = model.graph
    if len(graph.output) != 1:
        raise ExportError(f"a log-scale regressor's ONNX model should have one output, it has "
                          f"{[o.name for o in graph.output]}")
    out = graph.output[0]
    dtype = helper.tensor_dtype_to_np_dtype(out.type.tensor_type.elem_type)
    z = f"{NODE_PREFIX}z"
    for node in graph.node:
        node.output[:] = [z if name == out.name else name for name in node.output]
        node.input[:] = [z if name == out.name else name for name in node.input]
    _, offset = inverse
    graph.initializer.append(numpy_helper.from_array(np.array(1.0, dtype), f"{NODE_PREFIX}one"))
    last = out.name if not offset else f"{NODE_PREFIX}expm1"
    graph.node.extend([
        helper.make_node("Exp", [z], [f"{NODE_PREFIX}exp"], name=f"{NODE_PREFIX}exp"),
        helper.make_node("Sub", [f"{NODE_PREFIX}exp", f"{NODE_PREFIX}one"], [last], name=f"{NODE_PREFIX}sub_one"),
    ])
    if offset:
        graph.initializer.append(numpy_helper.from_array(np.array(offset, dtype), f"{NODE_PREFIX}offset"))
        graph.node.append(helper.make_node("Add", [last, f"{NODE_PREFIX}offset"], [out.name],
                                           name=f"{NODE_PREFIX}add_offset"))
    return model


def detach_onnx(model: onnx.ModelProto) -> tuple[onnx.ModelProto, tuple[str, float] | None]:
    """A copy of ``model`` without the nodes :func:`append_onnx` added, and the inverse they computed (``None`` when
    there are none): what a converter that must not touch the inverse works on, before appending it again."""
    nodes = [n for n in model.graph.node if n.name.startswith(NODE_PREFIX)]
    if not nodes:
        return model, None
    core = onnx.ModelProto()
    core.CopyFrom(model)
    graph, out = core.graph, core.graph.output[0].name
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    offset = float(inits.get(f"{NODE_PREFIX}offset", 0.0))
    kept = [n for n in graph.node if not n.name.startswith(NODE_PREFIX)]
    for node in kept:
        node.output[:] = [out if name == f"{NODE_PREFIX}z" else name for name in node.output]
    del graph.node[:]
    graph.node.extend(kept)
    others = [i for i in graph.initializer if not i.name.startswith(NODE_PREFIX)]
    del graph.initializer[:]
    graph.initializer.extend(others)
    return core, ("log1p", offset)


def emit_tflite(g, value, inverse: tuple[str, float]):
    """``EXP``, ``SUB 1`` and ``ADD offset`` after the float32 tensor ``value`` of graph ``g``
    (:class:`edgeml.export.tflite.graph.Graph`); the label's tensor."""
    _, offset = inverse
    shape = value.shape
    e = g.op("EXP", [value], shape, name=f"{NODE_PREFIX}exp")
    y = g.op("SUB", [e, g.const(f"{NODE_PREFIX}one", np.ones(1, np.float32))], shape, name=f"{NODE_PREFIX}expm1")
    if offset:
        y = g.op("ADD", [y, g.const(f"{NODE_PREFIX}offset", np.array([offset], np.float32))], shape,
                 name=f"{NODE_PREFIX}add_offset")
    return y


__all__ = ["KINDS", "NODE_PREFIX", "append_onnx", "describe", "detach_onnx", "emit_tflite", "split"]
