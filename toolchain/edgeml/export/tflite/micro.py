"""Run a TFLite file in the real TensorFlow Lite for Microcontrollers interpreter, on the build machine.

The ``tflite-micro`` package ships TFLM's interpreter and reference kernels
built for the host. A model it prepares and runs here is a model a
microcontroller's TFLM build can run (with the same operators registered):
this catches what an operator list cannot, such as a kernel without the
tensor type a graph uses (TFLM's ``GATHER`` takes no int32 table). It also
reports the arena TFLM really plans: the *head* (tensors, reused by the
greedy memory planner) and the *tail* (the interpreter's own structures).

TFLM reports through ``printf``, so :func:`run` captures the process's
stdout and stderr while it works and turns a failure into an
:class:`~edgeml.errors.ExportError` that quotes TFLM's own words.

Example::

    result = run(Path("model.int8.tflite").read_bytes(), X_int8)   # X: what the input tensor takes, one row each
    result.outputs, result.arena_head, result.arena_tail
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeml.errors import ExportError
from edgeml_runtime.native_stderr import LITERT_CHATTER, without_lines

#: The arena handed to the interpreter beyond the tensors the exporter planned: generous, as an arena TFLM
#: finds too small can crash the process instead of raising.
ARENA_SPARE = 4 << 20
_HEAD = re.compile(r"Arena allocation head (\d+) bytes")
_TAIL = re.compile(r"Arena allocation tail (\d+) bytes")


@dataclass(frozen=True)
class TflmRun:
    """What TFLM computed for each row (the raw output tensor) and the arena it planned, in bytes."""

    outputs: np.ndarray
    arena_head: int
    arena_tail: int

    @property
    def arena_bytes(self) -> int:
        """What the firmware's tensor arena must hold (TFLM adds up to 16 bytes when the arena is unaligned)."""
        return self.arena_head + self.arena_tail


def available() -> bool:
    """Whether the ``tflite-micro`` package imports here (it ships host builds for Linux)."""
    try:
        from tflite_micro.python.tflite_micro import runtime  # noqa: F401
    except ImportError:
        return False
    return True


@contextmanager
def _captured():
    """Collect what native code writes to file descriptors 1 and 2 meanwhile (the list gets one string)."""
    sys.stdout.flush()
    sys.stderr.flush()
    ctypes.CDLL(None).fflush(None)  # what C stdio buffered before goes where it was going
    text: list[str] = []
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(1), os.dup(2)
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield text
        finally:
            ctypes.CDLL(None).fflush(None)  # C stdio buffers what it writes to a file
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            text.append(sink.read().decode("utf-8", "replace"))


def run(data: bytes, X: np.ndarray, planned_bytes: int = 0) -> TflmRun:
    """Prepare ``data`` in TFLM and invoke it on each row of ``X`` (typed as the input tensor); raise if it cannot.

    ``planned_bytes`` (the exporter's planned tensor memory) sizes the arena:
    twice that, plus :data:`ARENA_SPARE` for the interpreter's own structures.
    """
    from tflite_micro.python.tflite_micro import runtime

    outputs, failure = [], None
    with _captured() as log:
        try:
            interpreter = runtime.Interpreter.from_bytes(data, arena_size=2 * planned_bytes + ARENA_SPARE)
            for row in X:
                interpreter.set_input(np.ascontiguousarray(row[None, :]), 0)
                interpreter.invoke()
                outputs.append(np.array(interpreter.get_output(0)[0]))
            interpreter.print_allocations()
        except (RuntimeError, ValueError) as exc:
            failure = exc
    said = log[0]
    if failure is not None:
        reasons = [line.strip() for line in said.splitlines() if line.strip()]
        raise ExportError(f"TensorFlow Lite Micro cannot run it: {'; '.join(reasons[:3]) or failure}")
    head, tail = _HEAD.search(said), _TAIL.search(said)
    if head is None or tail is None:
        raise ExportError(f"TensorFlow Lite Micro ran the model but did not report its arena ({said[:200]!r})")
    return TflmRun(np.array(outputs), int(head.group(1)), int(tail.group(1)))


def check(path, calibration, max_arena_bytes: int | None = None, planned_bytes: int = 0, rows: int = 300) -> dict:
    """Run the edgeml TFLite file at ``path`` in TFLM and in LiteRT on training rows; what the manifest records.

    ``calibration`` holds feeds (feature name -> (n, 1) array). LiteRT runs
    with its builtin kernels, without the XNNPACK delegate: those compute
    int8 exactly as TFLM does (XNNPACK rounds otherwise, by a few steps on a
    few outputs). The outputs must agree — exactly in int8, to float
    rounding in float32 (an int8 model's float32 output too: a log-scale
    label's ``EXP`` after its ``DEQUANTIZE``) — and the arena TFLM needs (head and tail) must fit
    ``max_arena_bytes``; otherwise an :class:`ExportError` says which.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgeml_runtime.litert import TfliteEngine, feeds_to_matrix

    if not available():
        return {"interpreter": "tflite-micro", "ran": False,
                "why": "the tflite-micro package does not import on this machine; only the operator list was checked"}
    data = Path(path).read_bytes()
    engine = TfliteEngine(path)
    feeds = {name: np.asarray(v)[:rows] for name, v in calibration.items()}
    X = engine.model_input(feeds_to_matrix(feeds, engine.tables, engine.input_names))
    builtin = Interpreter(model_content=data,
                          experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    builtin.resize_tensor_input(builtin.get_input_details()[0]["index"], list(X.shape), strict=False)
    with without_lines(*LITERT_CHATTER):
        builtin.allocate_tensors()
    builtin.set_tensor(builtin.get_input_details()[0]["index"], X)
    builtin.invoke()
    raw = builtin.get_tensor(builtin.get_output_details()[0]["index"])
    want = raw.astype(np.float64)
    got = run(data, X, planned_bytes)
    diff = float(np.abs(got.outputs.astype(np.float64) - want).max())
    integer = raw.dtype == np.int8  # an int8 model of a log-scale label ends in float32 (EXP after DEQUANTIZE)
    allowed = 0.0 if integer else 1e-5 * max(1.0, float(np.abs(want).max()))
    if diff > allowed:
        raise ExportError(f"TensorFlow Lite Micro computes other outputs than LiteRT: max difference {diff:g}"
                          f"{' int8 steps' if integer else ''} on {len(X)} training rows (allowed {allowed:g})")
    if max_arena_bytes is not None and got.arena_bytes > max_arena_bytes:
        raise ExportError(f"TensorFlow Lite Micro needs a {got.arena_bytes:,}-byte arena for it ({got.arena_head:,} "
                          f"of tensors, {got.arena_tail:,} of its own), over budgets.max_arena_bytes "
                          f"{max_arena_bytes:,}")
    return {"interpreter": "tflite-micro", "ran": True, "rows": len(X), "max_diff": diff,
            "arena_head": got.arena_head, "arena_tail": got.arena_tail, "arena_bytes": got.arena_bytes}


__all__ = ["ARENA_SPARE", "TflmRun", "available", "check", "run"]
