"""Inference engines, looked up by artifact format in one registry.

An engine wraps one artifact and runs it on named feeds, returning named
outputs. It takes the artifact's bytes — those the bundle loader hashed
(:meth:`edgeml_runtime.bundle.Bundle.artifact`) — so that nothing is read
from disk between the check and the load, and an ONNX model cannot pull in
files of its own (external data has no path to resolve against). A path is
accepted too, for tools and tests outside a bundle. Besides its input and
output names an engine tells what kind each input takes (``"number"`` or
``"text"``) and how wide each output is, so the loader can hold them against
the manifest. A new engine is one class and one :func:`register_engine` call.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import EngineError, check_threads
from .litert import TfliteEngine, model_bytes


class OnnxEngine:
    """Runs an ONNX artifact in onnxruntime, on the CPU unless ``providers`` name an accelerator."""

    format = "onnx"
    extra = "onnx"

    def __init__(self, model: bytes | os.PathLike, threads: int = 1, providers: list[str] | None = None, *,
                 name: str | None = None):
        check_threads(threads)
        data, name = model_bytes(model, name)
        try:
            import onnxruntime as ort
        except ImportError:
            raise EngineError(
                "onnxruntime is not installed; install the runtime with its ONNX engine: "
                "pip install 'edgeml-runtime[onnx]'"
            ) from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.configure(options)
        self.providers = list(providers or ["CPUExecutionProvider"])
        try:
            self.session = ort.InferenceSession(data, options, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            hint = (" (it refers to external data files, which a bundle never holds: rebuild it)"
                    if "external" in str(exc).lower() or "model_path" in str(exc) else "")
            raise EngineError(f"onnxruntime cannot load {name}{hint}: {str(exc)[:300]}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        self.input_names = [i.name for i in inputs]
        self.output_names = [o.name for o in outputs]
        self.input_kinds = {i.name: "text" if i.type == "tensor(string)" else "number" for i in inputs}
        self.output_widths = {o.name: o.shape[-1] if o.shape and isinstance(o.shape[-1], int) else None
                              for o in outputs}
        self._run = self.session.run
        core = getattr(self.session, "_sess", None)
        if self.session.get_providers() == ["CPUExecutionProvider"] and callable(getattr(core, "run", None)):
            # InferenceSession.run asks the C++ session for every input's type on every call, to check that the
            # feeds hold them all, and retries a failed accelerator on the CPU: a third of a one-row call. The
            # model checks its feeds against input_names once, at load, so on the CPU call the C++ run itself.
            self._run = core.run

    def configure(self, options) -> None:
        """Hook for subclasses to adjust the session options."""

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs, in the order of :attr:`output_names`; ``feeds`` must hold every one of :attr:`input_names`."""
        return self._run(self.output_names, feeds, None)


class OrtFormatEngine(OnnxEngine):
    """Runs an ONNX Runtime ``.ort`` artifact (the format a minimal onnxruntime build loads)."""

    format = "ort"

    def configure(self, options) -> None:
        options.add_session_config_entry("session.load_model_format", "ORT")


_ENGINES: dict[str, type] = {}


def register_engine(cls: type) -> type:
    """Add an engine class for its ``format``; refuses to replace one silently."""
    if cls.format in _ENGINES and _ENGINES[cls.format] is not cls:
        raise EngineError(f"an engine for format {cls.format!r} is already registered: {_ENGINES[cls.format]}")
    _ENGINES[cls.format] = cls
    return cls


def engine_for(fmt: str) -> type:
    try:
        return _ENGINES[fmt]
    except KeyError:
        raise EngineError(
            f"no engine runs artifacts of format {fmt!r}; this runtime knows {', '.join(sorted(_ENGINES))}"
        ) from None


def engine_formats() -> list[str]:
    return sorted(_ENGINES)


register_engine(OnnxEngine)
register_engine(OrtFormatEngine)
register_engine(TfliteEngine)
