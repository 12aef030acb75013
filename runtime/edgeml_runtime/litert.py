"""Runs TFLite (LiteRT) artifacts: the engine for format ``tflite``.

A TFLite model written by edgeml takes one float32 matrix ``features``
[n, F]: the model features in the manifest's order, numbers as floats (NaN
when missing) and categories as integer codes (the position of the value in
the column's code table, -1 for a value the model does not know). The code
tables travel inside the file (metadata ``edgeml``, JSON), so the engine
takes the same feeds as the ONNX engine — feature name to an (n, 1) array,
text for categories — and returns what the ONNX artifact returns: ``label``
(int64 [n]) and ``probabilities`` [n, K] for classifiers, ``variable``
[n, 1] for regressors.

A full-integer (int8) model takes ``features`` as int8 [n, D] instead: the
encoded model inputs (:class:`Encoding`, whose arrays travel in the
metadata as ``input.encoding``) quantized with the input tensor's scale and
zero point, and returns int8 outputs that the engine dequantizes. This is
what integer-only hardware (the Edge TPU, microcontrollers) runs.

Example:

>>> tables = {"type": ["H", "L", "M"]}
>>> feeds = {"temp": np.array([[21.5], [np.nan]], np.float32), "type": np.array([["M"], ["X"]], object)}
>>> feeds_to_matrix(feeds, tables, ["temp", "type"]).tolist()
[[21.5, 2.0], [nan, -1.0]]
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import repeat
from pathlib import Path

import numpy as np

from .errors import EngineError, check_threads
from .native_stderr import LITERT_CHATTER, without_lines

#: The name of the flatbuffer metadata entry that holds edgeml's JSON description.
METADATA_KEY = "edgeml"
#: Output names, the same as the ONNX artifacts' (the manifest's ``outputs`` point at them).
CLASSIFIER_OUTPUTS = ("label", "probabilities")
REGRESSOR_OUTPUTS = ("variable",)


def feeds_to_matrix(feeds: Mapping[str, np.ndarray], tables: Mapping[str, Sequence[str]],
                    features: Sequence[str]) -> np.ndarray:
    """The [n, F] float32 matrix a TFLite model takes, from per-feature (n, 1) feeds.

    ``tables`` maps a categorical feature to its code table: a list of values
    (code = position), or a ready ``{value: code}`` dict (what the engine keeps,
    so a row does not rebuild it).
    """
    columns = []
    for f in features:
        try:
            v = np.asarray(feeds[f]).reshape(-1)
        except KeyError:
            raise EngineError(f"feed {f!r} is missing; the TFLite model takes {', '.join(features)}") from None
        if f in tables:
            table = tables[f]
            get = (table if isinstance(table, dict) else {c: float(i) for i, c in enumerate(table)}).get
            columns.append(np.fromiter(map(get, v.tolist(), repeat(-1.0)), dtype=np.float32, count=len(v)))
        else:
            columns.append(v.astype(np.float32, copy=False))
    if not columns:
        return np.zeros((0, 0), np.float32)
    return np.stack(columns, axis=1)


@dataclass(frozen=True)
class Encoding:
    """The model's numeric inputs from the feature matrix: median imputation, one-hot of codes, standard scaling.

    A float32 TFLite model does this inside the graph; a full-integer (int8)
    model cannot (a NaN has no int8 value), so its metadata carries these
    arrays and the caller encodes, then quantizes. Outputs are the imputed
    numeric columns in order, then one 0/1 column per (column, code) pair,
    then ``(z - mean) * inv_scale`` when scaled; all float32, exactly as the
    float32 graph computes them.

    >>> enc = Encoding([0], np.array([5.0], np.float32), [(1, 2)])
    >>> enc.apply(np.array([[np.nan, 2.0], [1.0, 0.0]], np.float32)).tolist()
    [[5.0, 1.0], [1.0, 0.0]]
    """

    numeric: list[int]             # feature columns imputed, in output order
    median: np.ndarray             # [len(numeric)] fill values
    onehot: list[tuple[int, int]]  # (feature column, code) per one-hot output, in output order
    mean: np.ndarray | None = None
    inv_scale: np.ndarray | None = None

    @property
    def width(self) -> int:
        return len(self.numeric) + len(self.onehot)

    @cached_property
    def layout(self) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
        """``(take, fill, n_numeric, codes)``: per input, the feature column it reads and the value a NaN
        becomes; how many inputs are numbers; the code each one-hot input matches. Made once (it runs per row)."""
        cols, codes = zip(*self.onehot, strict=False) if self.onehot else ((), ())
        take = np.array([*self.numeric, *cols], dtype=np.intp)
        # A NaN code matches no category (as EQUAL(NaN, code) in the float graph): fill it with -1, not 0.
        fill = np.concatenate([np.asarray(self.median, np.float32), np.full(len(cols), -1, np.float32)])
        return take, fill, len(self.numeric), np.array(codes, np.float32)

    def _unscaled(self, X: np.ndarray) -> np.ndarray:
        take, fill, k, codes = self.layout
        V = X.take(take, axis=1)
        np.copyto(V, fill, where=np.isnan(V))
        if len(codes):
            V[:, k:] = V[:, k:] == codes
        return V

    def apply(self, X: np.ndarray) -> np.ndarray:
        """The model inputs [n, width] float32 for the feature matrix ``X`` [n, F] (see :func:`feeds_to_matrix`)."""
        Z = self._unscaled(np.asarray(X, np.float32))
        if self.mean is not None:
            Z = (Z - np.asarray(self.mean, np.float32)) * np.asarray(self.inv_scale, np.float32)
        return Z

    def quantized(self, X: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
        """:meth:`apply`, quantized to int8 by TFLite's rule ``real = scale * (q - zero_point)`` (clamped).

        The scaling and the quantization are folded into one affine step.

        >>> enc = Encoding([0], np.zeros(1, np.float32), [], np.array([1.0], np.float32), np.array([0.5], np.float32))
        >>> enc.quantized(np.array([[3.0], [np.nan]], np.float32), 1 / 127, 0).tolist()
        [[127], [-64]]
        """
        slope, offset = self.affine(float(scale), int(zero_point))
        q = self._unscaled(np.asarray(X, np.float32)) * slope + offset
        np.rint(q, out=q)
        np.clip(q, -128, 127, out=q)
        return q.astype(np.int8)

    def affine(self, scale: float, zero_point: int) -> tuple[np.ndarray, np.ndarray]:
        """``(slope, offset)`` per input: ``q = clamp(rint(v * slope + offset))`` for an imputed / one-hot ``v``."""
        key = (scale, zero_point)
        cache = self.__dict__.setdefault("_affines", {})
        if key not in cache:
            width = self.width
            mean = np.zeros(width) if self.mean is None else np.asarray(self.mean, np.float64)
            inv = np.ones(width) if self.inv_scale is None else np.asarray(self.inv_scale, np.float64)
            cache[key] = ((inv / scale).astype(np.float32), (zero_point - mean * inv / scale).astype(np.float32))
        return cache[key]

    def to_metadata(self, features: Sequence[str]) -> dict:
        """JSON-ready, by feature name (what a C++ or Android consumer reads)."""
        out = {"numeric": [{"feature": features[i], "fill": float(m)}
                           for i, m in zip(self.numeric, self.median, strict=False)],
               "onehot": [{"feature": features[i], "code": int(c)} for i, c in self.onehot]}
        if self.mean is not None:
            out["mean"] = [float(v) for v in self.mean]
            out["inv_scale"] = [float(v) for v in self.inv_scale]
        return out

    @classmethod
    def from_metadata(cls, d: Mapping, features: Sequence[str]) -> Encoding:
        at = {f: i for i, f in enumerate(features)}
        numeric = [at[e["feature"]] for e in d["numeric"]]
        median = np.array([e["fill"] for e in d["numeric"]], np.float32)
        onehot = [(at[e["feature"]], int(e["code"])) for e in d["onehot"]]
        mean = np.array(d["mean"], np.float32) if "mean" in d else None
        inv = np.array(d["inv_scale"], np.float32) if "inv_scale" in d else None
        return cls(numeric, median, onehot, mean, inv)


def read_metadata(data: bytes, key: str = METADATA_KEY) -> bytes | None:
    """The bytes of metadata entry ``key`` of a ``.tflite`` flatbuffer, or None (read without any schema package)."""

    def u32(pos: int) -> int:
        return struct.unpack_from("<I", data, pos)[0]

    def field(table: int, index: int) -> int | None:
        vtable = table - struct.unpack_from("<i", data, table)[0]
        vt_size = struct.unpack_from("<H", data, vtable)[0]
        slot = 4 + 2 * index
        if slot >= vt_size:
            return None
        off = struct.unpack_from("<H", data, vtable + slot)[0]
        return table + off if off else None

    def vector(pos: int) -> tuple[int, int]:
        start = pos + u32(pos)
        return start + 4, u32(start)

    def string(pos: int) -> str:
        start, n = vector(pos)
        return data[start:start + n].decode()

    try:
        root = u32(0)
        buffers_at, metadata_at = field(root, 4), field(root, 6)
        if metadata_at is None or buffers_at is None:
            return None
        entries, count = vector(metadata_at)
        buffers, _ = vector(buffers_at)
        for i in range(count):
            entry = entries + 4 * i + u32(entries + 4 * i)
            name_at, buffer_at = field(entry, 0), field(entry, 1)
            if name_at is None or string(name_at) != key:
                continue
            index = u32(buffer_at) if buffer_at is not None else 0
            buf = buffers + 4 * index + u32(buffers + 4 * index)
            data_at = field(buf, 0)
            if data_at is None:
                return b""
            start, n = vector(data_at)
            return bytes(data[start:start + n])
    except (struct.error, IndexError, UnicodeDecodeError):
        return None
    return None


def model_bytes(model: bytes | os.PathLike, name: str | None) -> tuple[bytes, str]:
    """An engine's model as bytes, and what to call it in messages (the bundle hands over bytes, tools a path)."""
    if isinstance(model, bytes | bytearray | memoryview):
        return bytes(model), name or "the artifact"
    try:
        return Path(model).read_bytes(), name or str(model)
    except OSError as exc:
        raise EngineError(f"{model} cannot be read ({exc.strerror})") from None


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter
    except ImportError:
        pass
    raise EngineError(
        "no TFLite interpreter is installed (neither ai-edge-litert nor tflite-runtime imports); install the "
        "runtime with its TFLite engine: pip install 'edgeml-runtime[tflite]'"
    )


class TfliteEngine:
    """Runs an edgeml TFLite artifact in LiteRT (``ai_edge_litert``), or ``tflite_runtime`` where only that imports.

    ``tables`` (feature name -> code table) overrides the tables stored in
    the file; ``providers`` is accepted for the engine interface and ignored
    (the CPU kernels, with XNNPACK where the interpreter enables it, run).
    """

    format = "tflite"
    extra = "tflite"

    def __init__(self, model: bytes | os.PathLike, threads: int = 1, providers: list[str] | None = None,
                 tables: Mapping[str, Sequence[str]] | None = None, *, name: str | None = None):
        check_threads(threads)
        Interpreter = _interpreter_class()
        data, path = model_bytes(model, name)
        raw = read_metadata(data)
        if raw is None:
            raise EngineError(f"{path} has no '{METADATA_KEY}' metadata: it was not written by edgeml's TFLite "
                              "exporter; rebuild the bundle")
        try:
            self.metadata = json.loads(raw)
            columns = self.metadata["input"]["columns"]
            self.task = self.metadata["task"]
        except (ValueError, KeyError, TypeError) as exc:
            raise EngineError(f"{path}: the '{METADATA_KEY}' metadata is malformed ({exc}); "
                              "rebuild the bundle") from None
        self.input_names = [c["feature"] for c in columns]
        self.tables = (dict(tables) if tables is not None
                       else {c["feature"]: c["codes"] for c in columns if "codes" in c})
        self._codes = {f: {c: float(i) for i, c in enumerate(t)} for f, t in self.tables.items()}
        self.output_names = list(CLASSIFIER_OUTPUTS if self.task == "classification" else REGRESSOR_OUTPUTS)
        self.input_kinds = {f: "text" if f in self.tables else "number" for f in self.input_names}
        try:
            self.interpreter = Interpreter(model_content=data, num_threads=threads)
        except Exception as exc:  # the interpreters raise ValueError/RuntimeError with their own text
            raise EngineError(f"the TFLite interpreter cannot load {path}: {exc}") from None
        inp, out = self.interpreter.get_input_details()[0], self.interpreter.get_output_details()[0]
        self._input, self._output = inp["index"], out["index"]
        width = int(out["shape"][-1]) if len(out["shape"]) else None
        self.output_widths = ({"label": None, "probabilities": width} if self.task == "classification"
                              else {"variable": 1})
        self._rows = -1
        self.encoding: Encoding | None = None
        self._in_quant = self._out_quant = None
        if inp["dtype"] == np.int8:  # full-integer: encode and quantize here, as the graph cannot
            try:
                self.encoding = Encoding.from_metadata(self.metadata["input"]["encoding"], self.input_names)
            except (KeyError, TypeError, ValueError) as exc:
                raise EngineError(f"{path}: an int8 model needs the input encoding in its '{METADATA_KEY}' "
                                  f"metadata, which is missing or malformed ({exc}); rebuild the bundle") from None
            self._in_quant = inp["quantization"]
            self._width = self.encoding.width
        else:
            self._width = len(self.input_names)
        if out["dtype"] == np.int8:
            scale, zero = out["quantization"]
            self._out_quant = (np.float32(scale), np.float32(zero))  # as _in_quant: (scale, zero point)
        # An int8 value is centred on its calibrated range; the metadata says what to add back.
        self._offset = np.float32((self.metadata["outputs"].get("value") or {}).get("offset", 0.0))

    def model_input(self, X: np.ndarray) -> np.ndarray:
        """What the input tensor takes for the feature matrix ``X`` [n, F]: ``X`` itself, or its int8 encoding."""
        if self.encoding is not None:
            return self.encoding.quantized(X, *self._in_quant)
        return np.ascontiguousarray(X, dtype=np.float32)

    def invoke(self, X: np.ndarray) -> np.ndarray:
        """The raw output tensor (int8 for an int8 model) for a ready input tensor ``X`` (see :meth:`model_input`)."""
        n = X.shape[0]
        if n != self._rows:
            self.interpreter.resize_tensor_input(self._input, [n, self._width], strict=False)
            if self._rows < 0:  # the first allocation applies the CPU delegate, which LiteRT announces on fd 2
                with without_lines(*LITERT_CHATTER):
                    self.interpreter.allocate_tensors()
            else:
                self.interpreter.allocate_tensors()
            self._rows = n
        self.interpreter.set_tensor(self._input, X)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output)

    def run_matrix(self, X: np.ndarray) -> np.ndarray:
        """The model's output (probabilities or values, float32) for a ready [n, F] feature matrix."""
        out = self.invoke(self.model_input(X))
        if self._out_quant is None:
            return out
        scale, zero = self._out_quant
        if self.task == "classification":
            # Softmax in 1/256 steps: renormalize so each row sums to 1 (a row's codes cannot all be -128).
            out = out.astype(np.float32) - zero
            return out / out.sum(axis=1, keepdims=True)
        return (out.astype(np.float32) - zero) * scale + self._offset

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs, in the order of :attr:`output_names` (the ONNX artifact's)."""
        out = self.run_matrix(feeds_to_matrix(feeds, self._codes, self.input_names))
        if self.task == "classification":
            return [np.argmax(out, axis=1).astype(np.int64), out]
        return [out.reshape(-1, 1)]


__all__ = ["CLASSIFIER_OUTPUTS", "METADATA_KEY", "REGRESSOR_OUTPUTS", "Encoding", "TfliteEngine", "feeds_to_matrix",
           "read_metadata"]
