"""onnxruntime's own format and offline graph optimization, for targets that ask for them.

:func:`to_ort` writes a model in onnxruntime's ``.ort`` format with the
``required_operators.config`` a minimal onnxruntime build is compiled from —
what ``python -m onnxruntime.tools.convert_onnx_models_to_ort`` does, through
the same functions. :func:`optimize_offline` applies onnxruntime's graph
optimizations ahead of time (``SessionOptions.optimized_model_filepath``) and
returns ONNX. Level ``all`` includes layout passes specific to the build
machine's CPU; they are left out (the NCHWc pass, as onnxruntime's converter
does) unless the target has the build machine's architecture.

Both are reproducible: the same model gives the same bytes in every run.
onnxruntime writes the ``.ort`` file's kernel-type-string resolver from a
hash map whose order depends on heap addresses, so :func:`canonical_ort`
rewrites that part (and the root table after it) in one fixed layout; the
model itself, written first, is kept byte for byte. The operators config
names no temporary path.
"""

from __future__ import annotations

import contextlib
import io
import logging
import platform
import tempfile
from pathlib import Path

import flatbuffers
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
        data = canonical_ort(out.read_bytes())
        out.write_bytes(data)
        with contextlib.redirect_stdout(io.StringIO()), quiet_logs():
            create_config_from_models([out], config, enable_type_reduction=False)
        return data, _without_paths(config.read_text())


def _without_paths(config: str) -> bytes:
    """The operators config with onnxruntime's header (which names the temporary file it read) replaced."""
    lines = [line for line in config.splitlines() if line and not line.startswith("#")]
    return ("# The operators the .ort model of the same name uses (domain;opset;operators). A minimal onnxruntime\n"
            "# that runs it is built with: build.sh --minimal_build --include_ops_by_config <this file>\n"
            + "".join(f"{line}\n" for line in lines)).encode()


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


# --- a reproducible .ort layout ----------------------------------------------------------------

#: The ``.ort`` file identifier, and the largest alignment of any scalar in its schema (int64, double).
_ORT_IDENTIFIER, _MAX_ALIGN = b"ORTM", 8
#: Byte size of the root table's vtable when it holds only ort_version, model, (absent) session_state, resolver.
_ROOT_VTABLE_BYTES = 12


def canonical_ort(data: bytes) -> bytes:
    """``data`` (an ``.ort`` file) with its kernel-type-string resolver and root table in one fixed layout.

    onnxruntime writes the version string, then the model, then the resolver
    (from a hash map iterated in an order that changes from run to run, then
    sorted by key), then the root table. The bytes from the model on are kept
    as they are, at the same distance from the end of the buffer (flatbuffer
    offsets are relative, so they stay valid), and the resolver and root are
    rebuilt in front of them in sorted order. A file laid out otherwise is an
    :class:`ExportError`, not silently left irreproducible.
    """
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs.InferenceSession import InferenceSession

    session = InferenceSession.GetRootAs(data, 0)
    model, resolver = session.Model(), session.KernelTypeStrResolver()
    tab = session._tab
    if model is None or resolver is None or _vtable_bytes(tab) > _ROOT_VTABLE_BYTES or tab.Offset(8):
        raise ExportError(_layout_problem("its root table has fields edgeml does not know"))
    start = min(model._tab.Pos, model._tab.Pos - _soffset(data, model._tab.Pos))
    version = tab.Indirect(tab.Pos + tab.Offset(4)) if tab.Offset(4) else None
    if resolver._tab.Pos >= start or (version is not None and version < start):
        raise ExportError(_layout_problem("the model is not written before the operator resolver"))
    entries = _resolver_entries(resolver)
    builder = flatbuffers.Builder(0)
    # Start from the kept bytes; offsets into them count from the end of the buffer, as the builder's do.
    builder.Bytes, builder.head, builder.minalign = bytearray(data[start:]), 0, _MAX_ALIGN
    resolver_offset = _write_resolver(builder, entries)
    builder.StartObject(4)
    if version is not None:
        builder.PrependUOffsetTRelativeSlot(0, len(data) - version, 0)
    builder.PrependUOffsetTRelativeSlot(1, len(data) - model._tab.Pos, 0)
    builder.PrependUOffsetTRelativeSlot(3, resolver_offset, 0)
    builder.Finish(builder.EndObject(), file_identifier=_ORT_IDENTIFIER)
    out = bytes(builder.Output())
    if _resolver_entries(InferenceSession.GetRootAs(out, 0).KernelTypeStrResolver()) != entries:
        raise ExportError(_layout_problem("rewriting its operator resolver changed it"))
    return out


def _layout_problem(what: str) -> str:
    import onnxruntime as ort

    return (f"cannot make the .ort file reproducible: {what} (onnxruntime {ort.__version__}). Install the "
            "onnxruntime version edgeml is tested with, or leave 'ort' out of the target's formats")


def _soffset(data: bytes, pos: int) -> int:
    return int.from_bytes(data[pos:pos + 4], "little", signed=True)


def _vtable_bytes(tab) -> int:
    vtable = tab.Pos - _soffset(tab.Bytes, tab.Pos)
    return int.from_bytes(tab.Bytes[vtable:vtable + 2], "little")


def _resolver_entries(resolver) -> tuple:
    """The resolver as sorted plain values: ``((op_id, ((type_str, ((arg_type, index), ...)), ...)), ...)``."""
    ops = []
    for i in range(resolver.OpKernelTypeStrArgsLength()):
        op = resolver.OpKernelTypeStrArgs(i)
        strs = []
        for j in range(op.KernelTypeStrArgsLength()):
            entry = op.KernelTypeStrArgs(j)
            args = tuple((entry.Args(k).ArgType(), entry.Args(k).Index()) for k in range(entry.ArgsLength()))
            strs.append((bytes(entry.KernelTypeStr()), args))
        ops.append((bytes(op.OpId()), tuple(sorted(strs))))
    return tuple(sorted(ops))


def _write_resolver(builder: flatbuffers.Builder, entries: tuple) -> int:
    """Write the resolver tables (keyed vectors sorted by key, as flatbuffers requires); its offset."""
    ops = []
    for op_id, strs in entries:
        tables = []
        for type_str, args in strs:
            arg_tables = []
            for arg_type, index in args:
                builder.StartObject(2)
                builder.PrependUint32Slot(1, index, 0)
                builder.PrependInt8Slot(0, arg_type, 0)
                arg_tables.append(builder.EndObject())
            tables.append(_keyed(builder, type_str, _vector(builder, arg_tables)))
        ops.append(_keyed(builder, op_id, _vector(builder, tables)))
    ops_vector = _vector(builder, ops)
    builder.StartObject(1)
    builder.PrependUOffsetTRelativeSlot(0, ops_vector, 0)
    return builder.EndObject()


def _keyed(builder: flatbuffers.Builder, key, vector: int) -> int:
    """A table of a key (slot 0, a string) and a vector (slot 1): both levels of the resolver are written so."""
    name = builder.CreateString(key)
    builder.StartObject(2)
    builder.PrependUOffsetTRelativeSlot(1, vector, 0)
    builder.PrependUOffsetTRelativeSlot(0, name, 0)
    return builder.EndObject()


def _vector(builder: flatbuffers.Builder, offsets: list[int]) -> int:
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


__all__ = ["LEVELS", "canonical_ort", "optimize_offline", "quiet_logs", "to_ort"]
