"""The artifacts made from the fp32 ONNX model — reduced precisions, ``.ort``, offline-optimised ONNX — as makers
in the one registry (:mod:`edgeml.export.registry`), registered at the bottom of this module.

Each maker is a precision step followed by a format step. What cannot
honestly be made raises :class:`~edgeml.export.registry.NotApplicable`
instead of writing a file that would not help or would not run:

* **fp16** (``onnxconverter-common``, inputs and outputs kept fp32) converts
  the graph's numeric core — MatMul, Add, activations: an MLP's weights —
  and leaves the ``ai.onnx.ml`` preprocessing, linear and tree-ensemble
  operators in fp32, which they must be: ``TreeEnsembleClassifier`` and
  ``TreeEnsembleRegressor`` (ai.onnx.ml opset ≤ 3) hold their thresholds as
  float32 attributes, and ``LinearClassifier`` its coefficients. A model
  with no numeric core (trees, linear models) is not applicable. The inverse
  of a log-scale label (``Exp``, ``Sub``, ``Add``: :mod:`edgeml.export.inverse`)
  is taken off before the conversion and appended after it, in fp32.
* **int8** uses onnxruntime's quantizer on MatMul/Gemm weights: static QDQ
  quantization (weights per channel, activations calibrated on feeds from
  the training split) when calibration feeds are given, dynamic otherwise.
  onnxruntime cannot quantize tree ensembles nor the ``ai.onnx.ml`` linear
  operators: not applicable. Tree ensembles stay fp32; their size is
  reduced through the search (fewer, shallower trees under the profile's
  ``max_model_bytes``). Only MatMul and Gemm are quantized: a log-scale
  label's inverse after them runs on float values. An int8 model that
  would not be smaller than fp32 (a linear model's handful of weights) is
  not applicable either.
* **ort** is onnxruntime's own format, with the ``required_operators.config``
  a minimal onnxruntime build is compiled from, optimized offline at the
  profile's level (:mod:`edgeml.export.ort`).
* **onnx** is the model itself, optimized offline when the profile asks
  (``ort_optimization``).

A reduced-precision artifact may score differently from fp32: the verify
stage compares their test metrics (:func:`edgeml.verify.metrics.metric_drop`).
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import onnx

from edgeml.export.inverse import append_onnx, detach_onnx
from edgeml.export.ort import optimize_offline, quiet_logs, to_ort
from edgeml.export.registry import CompiledArtifact, CompileOptions, ExportSource, NotApplicable, register_artifact

#: Operators whose float weights and activations fp16 converts (the "numeric core"); everything else stays fp32.
FP16_OPS = frozenset({"MatMul", "Gemm", "Add", "Sub", "Mul", "Div", "Relu", "Sigmoid", "Tanh", "Softmax", "Identity"})
#: Operators onnxruntime's quantizer turns into int8.
INT8_OPS = ("MatMul", "Gemm")
#: Operators that hold a model's parameters but that no onnxruntime quantizer or fp16 converter handles.
ML_MODEL_OPS = {
    "TreeEnsembleClassifier": "a tree ensemble",
    "TreeEnsembleRegressor": "a tree ensemble",
    "TreeEnsemble": "a tree ensemble",
    "LinearClassifier": "a linear model",
    "LinearRegressor": "a linear model",
    "SVMClassifier": "a support vector machine",
    "SVMRegressor": "a support vector machine",
}
TREES_STAY_FP32 = ("tree ensembles stay fp32: the ai.onnx.ml TreeEnsemble operators (opset <= 3) hold thresholds "
                   "and leaf values as float32, and onnxruntime quantizes neither; their size is reduced through the "
                   "search instead (fewer, shallower trees under the profile's max_model_bytes)")


# --- precisions ---------------------------------------------------------------------------------


def to_fp16(model: onnx.ModelProto) -> tuple[onnx.ModelProto, tuple[str, ...], dict]:
    """fp16 weights and arithmetic in the graph's numeric core; preprocessing and inputs/outputs stay fp32."""
    from onnxconverter_common import float16

    core = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")]
    if not core:
        raise NotApplicable("onnx", "fp16", _no_core_reason(model, "fp16"))
    # A label transform's inverse is taken off and appended to the converted model: it stays float32 (exp of
    # fp16 values, labels over 65,504), and blocked nodes at the end of the graph would make its output fp16.
    model, inverse = detach_onnx(model)
    # Blocking by node name, not op type: the converter walks nodes it adds, and would block its own Casts.
    keep = [n.name for n in model.graph.node if n.op_type not in FP16_OPS]
    with _quiet():
        half = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=[], node_block_list=keep)
    _outputs_fp32(half)
    if inverse is not None:
        half = append_onnx(half, inverse)
    onnx.checker.check_model(half)
    converted = sorted({n.op_type for n in model.graph.node if n.op_type in FP16_OPS})
    return half, (f"converted {', '.join(converted)} to fp16 with onnxconverter-common (inputs and outputs "
                  "stay fp32; preprocessing operators stay fp32)",), {"fp16_ops": converted}


def _outputs_fp32(model: onnx.ModelProto) -> None:
    """Cast every float16 graph output back to float32, in place. ``keep_io_types`` leaves an output fp16 when
    the node before it is blocked (a regressor's final Reshape): a value over 65,504 would be infinite."""
    half = [o for o in model.graph.output if o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16]
    for out in half:
        inner = f"{out.name}_fp16"
        for node in model.graph.node:
            node.output[:] = [inner if name == out.name else name for name in node.output]
            node.input[:] = [inner if name == out.name else name for name in node.input]
        model.graph.node.append(onnx.helper.make_node("Cast", [inner], [out.name], name=f"{out.name}_to_fp32",
                                                      to=onnx.TensorProto.FLOAT))
        out.type.tensor_type.elem_type = onnx.TensorProto.FLOAT


def to_int8(model: onnx.ModelProto, calibration: Mapping[str, np.ndarray] | None = None, *,
            calibration_rows: int = 1000,
            calibration_batch: int = 100) -> tuple[onnx.ModelProto, tuple[str, ...], dict]:
    """int8 MatMul/Gemm weights: static QDQ with calibration feeds, dynamic without; else :class:`NotApplicable`."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    weights = _weight_bytes(model)
    if not weights:
        raise NotApplicable("onnx", "int8", _no_core_reason(model, "int8"))
    notes = []
    with tempfile.TemporaryDirectory(prefix="edgeml-int8-") as tmp, _quiet():
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, src)
        method = "dynamic"
        if calibration is not None:
            reader = _FeedsReader(calibration, calibration_rows, calibration_batch)
            try:
                quantize_static(src, dst, reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=list(INT8_OPS),
                                per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
                method = "static"
            except Exception as exc:  # the quantizer raises many kinds; fall back to what needs no calibration
                notes.append(f"static quantization failed ({type(exc).__name__}: {exc}); used dynamic instead")
        if method == "dynamic":
            quantize_dynamic(src, dst, op_types_to_quantize=list(INT8_OPS), per_channel=True,
                             weight_type=QuantType.QInt8)
        quantized = onnx.load(dst)
    before, after = model.ByteSize(), quantized.ByteSize()
    if after >= before:
        raise NotApplicable("onnx", "int8", f"int8 would not make the model smaller ({after:,} bytes vs {before:,} "
                                            f"in fp32): its MatMul/Gemm weights are only {weights:,} bytes")
    ops = sorted({n.op_type for n in model.graph.node if n.op_type in INT8_OPS})
    if method == "static":
        notes.insert(0, f"static QDQ int8 quantization of {', '.join(ops)} with onnxruntime: weights per channel "
                        f"(int8), activations calibrated (min-max, uint8) on {reader.rows:,} training rows")
    else:
        notes.insert(0, f"dynamic int8 quantization of {', '.join(ops)} weights with onnxruntime "
                        "(activations quantized per call)")
    details = {"quantization": {"method": method, "ops": ops, "weight_type": "int8", "per_channel": True,
                                "activation_type": "uint8" if method == "static" else "dynamic",
                                "calibration_rows": reader.rows if method == "static" else 0,
                                "bytes_fp32": before, "bytes_int8": after}}
    return quantized, tuple(notes), details


def _fp32(model: onnx.ModelProto) -> tuple[onnx.ModelProto, tuple[str, ...], dict]:
    return model, ("fp32, as exported",), {}


PRECISION_STEPS: dict[str, Callable] = {"fp32": _fp32, "fp16": to_fp16, "int8": to_int8}


# --- formats ------------------------------------------------------------------------------------


def _onnx_format(model, precision, done, details, options: CompileOptions) -> CompiledArtifact:
    if options.optimization == "none":
        return CompiledArtifact(model.SerializeToString(), "onnx", precision, done, details)
    data = optimize_offline(model, options.optimization, options.arch)
    return CompiledArtifact(data, "onnx", precision,
                            (*done, f"graph optimized offline by onnxruntime at level '{options.optimization}'"),
                            {**details, "optimization": options.optimization})


def _ort_format(model, precision, done, details, options: CompileOptions) -> CompiledArtifact:
    import onnxruntime as ort

    level = "extended" if options.optimization == "none" else options.optimization
    data, config = to_ort(model, level, options.arch)
    operators = sorted(line.split(";")[0] + ";" + line.split(";")[1] for line in config.decode().splitlines()
                       if line and not line.startswith("#"))
    return CompiledArtifact(
        data, "ort", precision,
        (*done, f"converted to onnxruntime's .ort format (onnxruntime {ort.__version__}, graph optimized at level "
                f"'{level}'), with required_operators.config for a minimal onnxruntime build"),
        {**details, "optimization": level, "ort_version": ort.__version__, "required_operators": operators},
        extra_files={"required_operators.config": config},
    )


FORMAT_STEPS: dict[str, Callable] = {"onnx": _onnx_format, "ort": _ort_format}


def _compose(fmt: str, precision: str):
    def make(source: ExportSource, options: CompileOptions) -> CompiledArtifact:
        step, model = PRECISION_STEPS[precision], source.onnx
        try:
            if precision == "int8":
                reduced, done, details = step(model, options.calibration, calibration_rows=options.calibration_rows,
                                              calibration_batch=options.calibration_batch)
            else:
                reduced, done, details = step(model)
        except NotApplicable as exc:
            raise NotApplicable(fmt, precision, exc.reason) from None
        return FORMAT_STEPS[fmt](reduced, precision, done, details, options)

    make.__name__ = f"make_{fmt}_{precision}"
    return make


# --- helpers ------------------------------------------------------------------------------------


class _FeedsReader:
    """onnxruntime's CalibrationDataReader over training-split feeds, in batches of rows."""

    def __init__(self, feeds: Mapping[str, np.ndarray], max_rows: int, batch: int):
        n = min(len(next(iter(feeds.values()))), max_rows) if feeds else 0
        self.rows = n
        self._batches = iter([{k: np.asarray(v[i:i + batch]) for k, v in feeds.items()} for i in range(0, n, batch)])

    def get_next(self):
        return next(self._batches, None)

    def rewind(self):  # the reader protocol; one pass is all min-max calibration needs
        pass


def _weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of float initializers consumed by MatMul/Gemm nodes."""
    inits = {i.name: i for i in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        if node.op_type in INT8_OPS:
            for name in node.input:
                if name in inits and inits[name].data_type == onnx.TensorProto.FLOAT:
                    total += int(np.prod(inits[name].dims)) * 4
    return total


def _no_core_reason(model: onnx.ModelProto, precision: str) -> str:
    found = sorted({n.op_type for n in model.graph.node if n.op_type in ML_MODEL_OPS})
    if any(op.startswith("TreeEnsemble") for op in found):
        return TREES_STAY_FP32
    if found:
        what = ML_MODEL_OPS[found[0]]
        tool = "onnxruntime quantizes" if precision == "int8" else "onnxconverter-common converts"
        return (f"the model is {what} exported as the ai.onnx.ml {found[0]} operator, which no {tool}; "
                "its weights are a few hundred bytes at most, so the fp32 artifact is already as small")
    return "the model has no MatMul or Gemm weights to convert"


@contextlib.contextmanager
def _quiet():
    """Keep the quantizer's and converter's warnings out of the user's terminal."""
    with quiet_logs(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


__all__ = ["FP16_OPS", "INT8_OPS", "TREES_STAY_FP32", "to_fp16", "to_int8"]


for _fmt in FORMAT_STEPS:
    for _precision in PRECISION_STEPS:
        register_artifact(_fmt, _precision, _compose(_fmt, _precision))
