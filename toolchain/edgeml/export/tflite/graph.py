"""A tiny TFLite graph builder that writes ``.tflite`` flatbuffers without TensorFlow.

The ``tflite`` package ships the flatc-generated builder functions of the
TFLite schema; this module puts a small graph API on top of them: constant
and intermediate tensors, builtin operators with their options, one
subgraph, and named metadata buffers. Every tensor's batch dimension is
dynamic (``shape_signature`` -1), so an interpreter can resize the input.

Example:

>>> import numpy as np
>>> g = Graph()
>>> x = g.input("features", (2,))
>>> y = g.op("ADD", [x, g.const("one", np.ones(2, np.float32))], (2,))
>>> g.output(y, "value")
>>> data = g.serialize({"edgeml": b"{}"})
>>> data[4:8]
b'TFL3'
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import flatbuffers
import numpy as np
import tflite

#: numpy dtype -> TFLite TensorType.
TENSOR_TYPES = {
    np.dtype(np.float32): tflite.TensorType.FLOAT32,
    np.dtype(np.float16): tflite.TensorType.FLOAT16,
    np.dtype(np.int32): tflite.TensorType.INT32,
    np.dtype(np.int64): tflite.TensorType.INT64,
    np.dtype(np.bool_): tflite.TensorType.BOOL,
    np.dtype(np.int8): tflite.TensorType.INT8,
    np.dtype(np.uint8): tflite.TensorType.UINT8,
}

#: The schema's escape value for builtin codes above 127 (they go in ``builtin_code``).
_PLACEHOLDER_FOR_GREATER_OP_CODES = 127


@dataclass
class Quant:
    """Affine quantization parameters of a tensor: ``real = scale * (q - zero_point)``."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int = 0


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]  # without the batch dimension when ``batched``
    dtype: np.dtype
    batched: bool
    buffer: int = 0
    quant: Quant | None = None

    @property
    def full_shape(self) -> list[int]:
        return [1, *self.shape] if self.batched else list(self.shape)


def _fb(name: str):
    """The generated module ``tflite.<name>`` (the package re-exports its classes under the same names)."""
    return importlib.import_module(f"tflite.{name}")


def _options(op: str, b: flatbuffers.Builder, opts: dict) -> tuple[int, int]:
    """Build the builtin options table of ``op``; returns (BuiltinOptions type, offset), (0, 0) for none."""
    table = _OPTION_TABLES.get(op)
    if table is None:
        return 0, 0
    cls_name, fields = table
    module = _fb(cls_name)
    start, end = getattr(module, f"{cls_name}Start"), getattr(module, f"{cls_name}End")
    start(b)
    for field, default in fields.items():
        getattr(module, f"{cls_name}Add{field}")(b, opts.get(field, default))
    return getattr(tflite.BuiltinOptions, cls_name), end(b)


#: op -> (options table, {field: default}); fields a kernel reads must be written (SOFTMAX's beta defaults to 0).
_OPTION_TABLES = {
    "FULLY_CONNECTED": ("FullyConnectedOptions", {"FusedActivationFunction": 0, "KeepNumDims": False}),
    "ADD": ("AddOptions", {"FusedActivationFunction": 0}),
    "SUB": ("SubOptions", {"FusedActivationFunction": 0}),
    "MUL": ("MulOptions", {"FusedActivationFunction": 0}),
    "SOFTMAX": ("SoftmaxOptions", {"Beta": 1.0}),
    "CONCATENATION": ("ConcatenationOptions", {"Axis": 1, "FusedActivationFunction": 0}),
    "GATHER": ("GatherOptions", {"Axis": 1, "BatchDims": 0}),
    "BATCH_MATMUL": ("BatchMatMulOptions", {"AdjX": False, "AdjY": False}),
    "CAST": ("CastOptions", {}),
    "EQUAL": ("EqualOptions", {}),
    "NOT_EQUAL": ("NotEqualOptions", {}),
    "LESS": ("LessOptions", {}),
    "LESS_EQUAL": ("LessEqualOptions", {}),
    "SELECT_V2": ("SelectV2Options", {}),
    "DEQUANTIZE": ("DequantizeOptions", {}),
    "QUANTIZE": ("QuantizeOptions", {}),
}

#: How TFLite Micro aligns each tensor in its arena (``MicroArenaBufferAlignment()``), in bytes.
ARENA_ALIGNMENT = 16

#: FullyConnected's fused activations.
ACTIVATIONS = {"NONE": 0, "RELU": 1, "TANH": 4}


class Graph:
    """One TFLite subgraph under construction; :meth:`serialize` writes the model file."""

    def __init__(self):
        self.tensors: list[Tensor] = []
        self.buffers: list[bytes] = [b""]  # buffer 0: the schema's empty sentinel
        self.operators: list[tuple[str, list[int], list[int], dict]] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self._names: set[str] = set()
        self._static = False

    # --- tensors ----------------------------------------------------------------------------------

    def _unique(self, name: str) -> str:
        base, n = name, 1
        while name in self._names:
            n += 1
            name = f"{base}_{n}"
        self._names.add(name)
        return name

    def tensor(self, name: str, shape, dtype=np.float32, *, batched: bool = True, quant: Quant | None = None) -> Tensor:
        """An intermediate tensor; ``shape`` excludes the (dynamic) batch dimension when ``batched``."""
        t = Tensor(len(self.tensors), self._unique(name), tuple(int(s) for s in shape), np.dtype(dtype), batched,
                   quant=quant)
        self.tensors.append(t)
        return t

    def const(self, name: str, value: np.ndarray, *, quant: Quant | None = None) -> Tensor:
        """A constant tensor holding ``value`` (its dtype is kept: cast before calling)."""
        value = np.ascontiguousarray(value)
        t = self.tensor(name, value.shape, value.dtype, batched=False, quant=quant)
        t.buffer = len(self.buffers)
        self.buffers.append(value.tobytes())
        return t

    def input(self, name: str, shape, dtype=np.float32, *, quant: Quant | None = None) -> Tensor:
        t = self.tensor(name, shape, dtype, quant=quant)
        self.inputs.append(t.index)
        return t

    def output(self, t: Tensor, name: str) -> None:
        """Make ``t`` a graph output named ``name``."""
        self._names.discard(t.name)
        t.name = self._unique(name)
        self.outputs.append(t.index)

    # --- operators --------------------------------------------------------------------------------

    def op(self, op: str, inputs: list[Tensor | None], shape, dtype=np.float32, *, name: str | None = None,
           batched: bool = True, quant: Quant | None = None, **opts) -> Tensor:
        """Append builtin ``op`` with one output tensor of ``shape``; ``None`` inputs are optional ones left out."""
        if not hasattr(tflite.BuiltinOperator, op):
            raise ValueError(f"{op!r} is not a TFLite builtin operator")
        out = self.tensor(name or op.lower(), shape, dtype, batched=batched, quant=quant)
        self.operators.append((op, [-1 if t is None else t.index for t in inputs], [out.index], opts))
        return out

    @property
    def op_names(self) -> list[str]:
        return sorted({op for op, *_ in self.operators})

    @property
    def tensor_types(self) -> tuple[str, ...]:
        """The numpy names of the tensor types the graph uses, e.g. ``('float32', 'int32')``."""
        return tuple(sorted({t.dtype.name for t in self.tensors}))

    def planned_bytes(self) -> int:
        """The tensor memory one row needs at its peak: the sizes of the non-constant tensors alive together.

        A tensor lives from the operator that writes it (graph inputs: from the
        start) to the last one that reads it (graph outputs: to the end), and
        takes its size rounded up to :data:`ARENA_ALIGNMENT`. This is what an
        ideal arena planner reaches — for edgeml's layer-by-layer graphs, the
        "head" TFLite Micro's greedy planner reports (tests/test_tflite_targets.py
        runs the real one); the interpreter's own bookkeeping (its "tail") and
        kernel scratch buffers come on top.
        """
        n = len(self.operators)
        first = {i: -1 for i in self.inputs}
        last = {i: n for i in self.outputs}
        for step, (_, ins, outs, _) in enumerate(self.operators):
            for i in outs:
                first.setdefault(i, step)
            for i in ins:
                if i >= 0:
                    last[i] = max(last.get(i, step), step)
        peak = 0
        for step in range(-1, n + 1):
            live = sum(self._bytes(self.tensors[i]) for i, start in first.items()
                       if self.tensors[i].buffer == 0 and start <= step <= last.get(i, start))
            peak = max(peak, live)
        return peak

    @staticmethod
    def _bytes(t: Tensor) -> int:
        size = int(np.prod(t.full_shape, dtype=np.int64)) * t.dtype.itemsize
        return -(-size // ARENA_ALIGNMENT) * ARENA_ALIGNMENT

    # --- serialization ----------------------------------------------------------------------------

    def serialize(self, metadata: dict[str, bytes] | None = None, description: str = "edgeml",
                  static_batch: bool = False) -> bytes:
        """The ``.tflite`` file: schema version 3, file identifier ``TFL3``, ``metadata`` as named buffers.

        ``static_batch`` fixes the batch dimension at 1 (no ``shape_signature``),
        as compilers for fixed-function accelerators (the Edge TPU) require.
        """
        self._static = static_batch
        b = flatbuffers.Builder(1024 + sum(len(x) for x in self.buffers))
        meta_items = []
        for key, data in (metadata or {}).items():
            meta_items.append((key, len(self.buffers)))
            self.buffers.append(bytes(data))
        try:
            return self._serialize(b, meta_items, description)
        finally:
            del self.buffers[len(self.buffers) - len(meta_items):]

    def _serialize(self, b: flatbuffers.Builder, meta_items, description: str) -> bytes:
        codes = sorted({op for op, *_ in self.operators}, key=lambda o: getattr(tflite.BuiltinOperator, o))
        code_index = {op: i for i, op in enumerate(codes)}

        buffer_offsets = []
        for data in self.buffers:
            vec = None
            if data:
                b.StartVector(1, len(data), 16)  # 16-byte aligned constant data
                b.head = b.head - len(data)
                b.Bytes[b.head:b.head + len(data)] = data
                vec = b.EndVector()
            _fb("Buffer").BufferStart(b)
            if vec is not None:
                _fb("Buffer").BufferAddData(b, vec)
            buffer_offsets.append(_fb("Buffer").BufferEnd(b))

        tensor_offsets = [self._tensor(b, t) for t in self.tensors]

        op_offsets = []
        for op, ins, outs, opts in self.operators:
            in_vec = _int_vector(b, ins)
            out_vec = _int_vector(b, outs)
            opt_type, opt_off = _options(op, b, opts)
            _fb("Operator").OperatorStart(b)
            _fb("Operator").OperatorAddOpcodeIndex(b, code_index[op])
            _fb("Operator").OperatorAddInputs(b, in_vec)
            _fb("Operator").OperatorAddOutputs(b, out_vec)
            if opt_type:
                _fb("Operator").OperatorAddBuiltinOptionsType(b, opt_type)
                _fb("Operator").OperatorAddBuiltinOptions(b, opt_off)
            op_offsets.append(_fb("Operator").OperatorEnd(b))

        name = b.CreateString("main")
        tensors_vec = _offset_vector(b, tensor_offsets)
        ops_vec = _offset_vector(b, op_offsets)
        in_vec, out_vec = _int_vector(b, self.inputs), _int_vector(b, self.outputs)
        _fb("SubGraph").SubGraphStart(b)
        _fb("SubGraph").SubGraphAddTensors(b, tensors_vec)
        _fb("SubGraph").SubGraphAddInputs(b, in_vec)
        _fb("SubGraph").SubGraphAddOutputs(b, out_vec)
        _fb("SubGraph").SubGraphAddOperators(b, ops_vec)
        _fb("SubGraph").SubGraphAddName(b, name)
        subgraph = _fb("SubGraph").SubGraphEnd(b)

        code_offsets = []
        for op in codes:
            code = getattr(tflite.BuiltinOperator, op)
            _fb("OperatorCode").OperatorCodeStart(b)
            _fb("OperatorCode").OperatorCodeAddDeprecatedBuiltinCode(b, min(code, _PLACEHOLDER_FOR_GREATER_OP_CODES))
            _fb("OperatorCode").OperatorCodeAddBuiltinCode(b, code)
            _fb("OperatorCode").OperatorCodeAddVersion(b, 1)
            code_offsets.append(_fb("OperatorCode").OperatorCodeEnd(b))

        meta_offsets = []
        for key, buffer in meta_items:
            key_off = b.CreateString(key)
            _fb("Metadata").MetadataStart(b)
            _fb("Metadata").MetadataAddName(b, key_off)
            _fb("Metadata").MetadataAddBuffer(b, buffer)
            meta_offsets.append(_fb("Metadata").MetadataEnd(b))

        desc = b.CreateString(description)
        codes_vec = _offset_vector(b, code_offsets)
        subgraphs_vec = _offset_vector(b, [subgraph])
        buffers_vec = _offset_vector(b, buffer_offsets)
        meta_vec = _offset_vector(b, meta_offsets)
        _fb("Model").ModelStart(b)
        _fb("Model").ModelAddVersion(b, 3)
        _fb("Model").ModelAddOperatorCodes(b, codes_vec)
        _fb("Model").ModelAddSubgraphs(b, subgraphs_vec)
        _fb("Model").ModelAddDescription(b, desc)
        _fb("Model").ModelAddBuffers(b, buffers_vec)
        _fb("Model").ModelAddMetadata(b, meta_vec)
        b.Finish(_fb("Model").ModelEnd(b), file_identifier=b"TFL3")
        return bytes(b.Output())

    def _tensor(self, b: flatbuffers.Builder, t: Tensor) -> int:
        name = b.CreateString(t.name)
        shape = _int_vector(b, t.full_shape)
        signature = _int_vector(b, [-1, *t.shape]) if t.batched and not self._static else None
        quant = _quantization(b, t.quant) if t.quant is not None else None
        _fb("Tensor").TensorStart(b)
        _fb("Tensor").TensorAddShape(b, shape)
        if signature is not None:
            _fb("Tensor").TensorAddShapeSignature(b, signature)
        _fb("Tensor").TensorAddType(b, TENSOR_TYPES[t.dtype])
        _fb("Tensor").TensorAddBuffer(b, t.buffer)
        _fb("Tensor").TensorAddName(b, name)
        if quant is not None:
            _fb("Tensor").TensorAddQuantization(b, quant)
        return _fb("Tensor").TensorEnd(b)


def _quantization(b: flatbuffers.Builder, q: Quant) -> int:
    scale = b.CreateNumpyVector(np.asarray(q.scale, np.float32).ravel())
    zero = b.CreateNumpyVector(np.asarray(q.zero_point, np.int64).ravel())
    _fb("QuantizationParameters").QuantizationParametersStart(b)
    _fb("QuantizationParameters").QuantizationParametersAddScale(b, scale)
    _fb("QuantizationParameters").QuantizationParametersAddZeroPoint(b, zero)
    _fb("QuantizationParameters").QuantizationParametersAddQuantizedDimension(b, q.axis)
    return _fb("QuantizationParameters").QuantizationParametersEnd(b)


def _int_vector(b: flatbuffers.Builder, values) -> int:
    return b.CreateNumpyVector(np.asarray(list(values), dtype=np.int32))


def _offset_vector(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


__all__ = ["ACTIVATIONS", "ARENA_ALIGNMENT", "TENSOR_TYPES", "Graph", "Quant", "Tensor"]
