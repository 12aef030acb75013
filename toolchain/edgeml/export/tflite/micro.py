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
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeml.errors import ExportError
from edgeml_runtime import Model
from edgeml_runtime.litert import TfliteEngine
from edgeml_runtime.native_stderr import LITERT_CHATTER, without_lines
from edgeml_runtime.samples import Outputs

#: The arena handed to the interpreter beyond the tensors the exporter planned: generous, as an arena TFLM
#: finds too small can crash the process instead of raising.
ARENA_SPARE = 4 << 20
#: TFLM aligns every arena allocation, and the arena's start, to 16 bytes (``MicroArenaBufferAlignment()``): the
#: arena search's step, and the margin a firmware arena gets for a start TFLM must align up (it loses up to 15).
ARENA_ALIGN = 16
#: How many times :func:`smallest_arena` starts a probe again after an arena too small crashed the process.
PROBE_RESTARTS = 32
#: The probe, run in its own process: an arena TFLM finds too small may crash it. Reads the model on stdin; argv:
#: the largest size known to fail, the smallest known to work (0: none yet) and a first guess. Prints ``try N``
#: before each ``AllocateTensors`` and ``N ok`` / ``N fail`` after it, until the two are one step apart.
_PROBE = """
import os, sys
from tflite_micro.python.tflite_micro import runtime
data = sys.stdin.buffer.read()
lo, hi, n = (int(v) for v in sys.argv[1:4])
step = int(sys.argv[4])
os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
while not hi or hi - lo > step:
    print("try", n, flush=True)
    try:
        runtime.Interpreter.from_bytes(data, arena_size=n)
        hi = n
        print(n, "ok", flush=True)
    except RuntimeError:
        lo = n
        print(n, "fail", flush=True)
    n = 2 * n if not hi else (lo + hi) // 2 // step * step
    if hi and n <= lo:
        n = lo + step
"""
#: What the search takes a trial's arena to be, against its head and tail: preparing a graph needs room for
#: temporary tensors besides (:func:`smallest_arena`, measured at 1.21-1.61 times head + tail over ten forests and
#: nets of ai4i2020 and CCPP). Only the search estimates with it; a shipped file's arena is bisected.
SETUP_PEAK = 1.65
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


class TflmEngine(TfliteEngine):
    """:class:`~edgeml_runtime.litert.TfliteEngine` with TFLM's interpreter computing the raw output tensor: the
    runtime's encoding, quantization and dequantization around what the device's interpreter computes."""

    def __init__(self, model: bytes, threads: int = 1, **settings):
        super().__init__(model, threads, **settings)
        self._data = model

    def invoke(self, X: np.ndarray) -> np.ndarray:
        return run(self._data, X).outputs.reshape(len(X), -1)


def score_rows(folder, artifact: str, rows, *, draft: bool = False) -> Outputs:
    """What TFLM computes for ``rows`` with the TFLite ``artifact`` of the bundle ``folder`` (as
    :func:`edgeml_runtime.samples.score_rows`, TFLM in LiteRT's place)."""
    loaded = Model.load(folder, artifact=artifact, self_test=False, draft=draft)
    engine = TflmEngine(Path(folder, artifact).read_bytes())
    return Outputs.of(Model(loaded.bundle_dir, loaded.manifest, loaded.artifact, engine).predict(rows))


def smallest_arena(data: bytes, guess: int = 4096) -> int:
    """The smallest arena, in bytes (a multiple of :data:`ARENA_ALIGN`), at which TFLM on this machine prepares
    ``data`` (``AllocateTensors`` succeeds); ``guess`` is where the search starts.

    This is more than the head and tail :func:`run` reports: those are what
    stays allocated once the graph is prepared, and preparing it needs room
    for temporary tensors besides. Each size is tried in a separate process,
    restarted past a size that crashed it (that size counts as too small):
    about a dozen tries, a fraction of a second with the process's start.
    """
    lo, hi, n = 0, 0, max(ARENA_ALIGN, -(-guess // ARENA_ALIGN) * ARENA_ALIGN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    for _ in range(PROBE_RESTARTS):
        done = subprocess.run([sys.executable, "-c", _PROBE, str(lo), str(hi), str(n), str(ARENA_ALIGN)],
                              input=data, capture_output=True, env=env, timeout=300)
        tried = None
        for line in done.stdout.decode().split("\n"):
            words = line.split()
            if len(words) == 2 and words[0] == "try":
                tried = int(words[1])
            elif len(words) == 2:
                tried, lo, hi = None, *((lo, int(words[0])) if words[1] == "ok" else (int(words[0]), hi))
        if hi and hi - lo <= ARENA_ALIGN:
            return hi
        if tried is None:
            raise ExportError(f"TensorFlow Lite Micro's arena probe stopped ({done.returncode}): "
                              f"{done.stderr.decode()[-300:]!r}")
        lo = tried  # it crashed there: too small
        n = 2 * lo if not hi else max(lo + ARENA_ALIGN, (lo + hi) // 2 // ARENA_ALIGN * ARENA_ALIGN)
    raise ExportError(f"TensorFlow Lite Micro's arena probe crashed {PROBE_RESTARTS} times; the arena lies "
                      f"between {lo:,} and {hi:,} bytes")


def check(path, calibration, max_arena_bytes: int | None = None, planned_bytes: int = 0, rows: int = 300) -> dict:
    """Run the edgeml TFLite file at ``path`` in TFLM and in LiteRT on training rows; what the manifest records.

    ``calibration`` holds feeds (feature name -> (n, 1) array). LiteRT runs
    with its builtin kernels, without the XNNPACK delegate: those compute
    int8 exactly as TFLM does (XNNPACK rounds otherwise, by a few steps on a
    few outputs). float32 outputs must agree to float rounding (an int8
    model's float32 output too: a log-scale label's ``EXP`` after its
    ``DEQUANTIZE``); int8 outputs may differ by a step or so (TFLM's and
    LiteRT's kernels round requantization differently), recorded as
    ``max_diff`` in steps: an int8 file is judged on what TFLM computes
    (:func:`score_rows`), not on LiteRT's outputs. And the arena TFLM needs must fit ``max_arena_bytes``;
    otherwise an :class:`ExportError` says which.

    The arena recorded (``arena_bytes``, the firmware's ``EDGEML_ARENA_BYTES``) is the smallest at which TFLM
    prepares the file here (``arena_min``, :func:`smallest_arena`) plus ``arena_margin``
    (:data:`ARENA_ALIGN`: a firmware's arena may start unaligned, and TFLM aligns it up). No more is needed on
    a 32-bit microcontroller: what TFLM puts in the arena is either tensor data and kernel scratch (sized by
    the model, the same on every machine) or TFLM's own structures (``TfLiteEvalTensor``, the node and
    registration arrays, temporary ``TfLiteTensor``\\ s, kernels' persistent ``OpData``, the planner's
    per-buffer records), made of pointers, ``size_t`` and ints, no larger where pointers take 4 bytes than
    8; each allocation is rounded up to 16 bytes on both, and rounding up keeps the order. The host's
    interpreter also allocates a recording allocator in the arena, which a firmware's does not.
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
    allowed = 1e-5 * max(1.0, float(np.abs(want).max()))
    if diff > allowed and not integer:
        raise ExportError(f"TensorFlow Lite Micro computes other outputs than LiteRT: max difference {diff:g}"
                          f"{' int8 steps' if integer else ''} on {len(X)} training rows (allowed {allowed:g})")
    smallest = smallest_arena(data, got.arena_bytes)
    arena = smallest + ARENA_ALIGN
    if max_arena_bytes is not None and arena > max_arena_bytes:
        raise ExportError(f"TensorFlow Lite Micro needs a {arena:,}-byte arena for it (prepared at {smallest:,} on "
                          f"this machine, +{ARENA_ALIGN} to align), over budgets.max_arena_bytes {max_arena_bytes:,}")
    return {"interpreter": "tflite-micro", "ran": True, "rows": len(X), "max_diff": diff,
            "arena_head": got.arena_head, "arena_tail": got.arena_tail, "arena_min": smallest,
            "arena_margin": ARENA_ALIGN, "arena_bytes": arena}


__all__ = ["ARENA_ALIGN", "ARENA_SPARE", "TflmEngine", "TflmRun", "available", "check", "run", "score_rows",
           "smallest_arena"]
