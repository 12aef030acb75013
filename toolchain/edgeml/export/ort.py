"""onnxruntime's own format and offline graph optimization, for targets that ask for them.

:func:`to_ort` writes a model in onnxruntime's ``.ort`` format with the
``required_operators.config`` a minimal onnxruntime build is compiled from —
what ``python -m onnxruntime.tools.convert_onnx_models_to_ort`` does, through
the same functions. :func:`optimize_offline` applies onnxruntime's graph
optimizations ahead of time (``SessionOptions.optimized_model_filepath``) and
returns ONNX. Level ``all`` includes layout passes specific to the build
machine's CPU; they are left out (the NCHWc pass, as onnxruntime's converter
does) unless the target has the build machine's architecture.
"""

from __future__ import annotations

import contextlib
import io
import logging
import platform
import tempfile
from pathlib import Path

import onnx

from edgeml.errors import ExportError

#: Offline optimization levels, as target profiles name them, and onnxruntime's names for them.
LEVELS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def optimize_offline(model: onnx.ModelProto, level: str, arch: str | None = None) -> bytes:
    """The model after onnxruntime's graph optimizations at ``level``, as ONNX bytes (what it would do at load)."""
    with tempfile.TemporaryDirectory(prefix="edgeml-opt-") as tmp:
        out = Path(tmp) / "optimized.onnx"
        _session(model, level, arch, out, save_format="ONNX")
        return out.read_bytes()


def to_ort(model: onnx.ModelProto, level: str, arch: str | None = None) -> tuple[bytes, bytes]:
    """The model in onnxruntime's ``.ort`` format, optimized at ``level``, and its ``required_operators.config``."""
    from onnxruntime.tools.ort_format_model import create_config_from_models

    with tempfile.TemporaryDirectory(prefix="edgeml-ort-") as tmp:
        out, config = Path(tmp) / "model.ort", Path(tmp) / "required_operators.config"
        _session(model, level, arch, out, save_format="ORT")
        with contextlib.redirect_stdout(io.StringIO()), quiet_logs():
            create_config_from_models([out], config, enable_type_reduction=False)
        return out.read_bytes(), config.read_bytes()


def _session(model: onnx.ModelProto, level: str, arch: str | None, out: Path, save_format: str) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                               LEVELS.get(level, "ORT_DISABLE_ALL"))
    options.optimized_model_filepath = str(out)
    options.log_severity_level = 3
    options.add_session_config_entry("session.save_model_format", save_format)
    # onnxruntime's converter allows int8 QDQ fusions only for Arm targets, where they are known to pay off.
    options.add_session_config_entry("session.qdqisint8allowed", "1" if _is_arm(arch) else "0")
    disabled = None if (level != "all" or _same_arch(arch)) else ["NchwcTransformer"]
    try:
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"],
                             disabled_optimizers=disabled)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ExportError(f"onnxruntime could not optimize and save the model ({save_format}, level {level}): "
                          f"{exc}") from exc


def _is_arm(arch: str | None) -> bool:
    return (arch or platform.machine()).lower() in ("aarch64", "arm64", "armv7l", "armv7em")


def _same_arch(arch: str | None) -> bool:
    aliases = {"amd64": "x86_64", "arm64": "aarch64"}
    host = aliases.get(platform.machine().lower(), platform.machine().lower())
    return arch is None or aliases.get(arch.lower(), arch.lower()) == host


@contextlib.contextmanager
def quiet_logs():
    """onnxruntime's tools log on the root logger (each file written, each quantizer hint); keep that quiet."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    logging.disable(logging.INFO)  # some of its loggers carry their own level and handler
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
        root.setLevel(level)


__all__ = ["LEVELS", "optimize_offline", "quiet_logs", "to_ort"]
