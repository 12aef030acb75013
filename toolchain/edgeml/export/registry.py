"""The one artifact registry: every way to make a ``(format, precision)`` artifact, keyed as profiles name them.

A build loops over what its profile asks for (:mod:`edgeml.export.artifacts`)::

    source = ExportSource(fp32_model, pipeline, schema, task, classes)
    for fmt in target.formats:
        for precision in target.precisions:
            try:
                artifact = compile_artifact(source, fmt, precision, CompileOptions.from_target(target, feeds))
            except NotApplicable as skipped:
                notes.append(skipped.to_dict())      # say in the manifest what was not made, and why

Every maker has one signature, ``make(source, options) -> CompiledArtifact``:
it takes an :class:`ExportSource` (the fp32 ``onnx.ModelProto`` and the
fitted pipeline it came from) and returns the file's bytes plus what the
manifest records (format, precision, engine, what was done, the details).
Each maker registers at the bottom of its own module — the ONNX and ``.ort``
ones in :mod:`edgeml.export.quantize`, the TFLite ones in
:mod:`edgeml.export.tflite.artifact` — and importing :mod:`edgeml.export`
loads them all. What cannot honestly be made raises :class:`NotApplicable`
instead of writing a file that would not help or would not run.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from edgeml.errors import ExportError
from edgeml_runtime.schema import InputSchema


class NotApplicable(ExportError):
    """An artifact a profile asks for that cannot honestly be made for this model; says why.

    Not a failure of the build: the manifest records it (:meth:`to_dict`)
    and the artifacts that could be made are shipped.

    >>> NotApplicable("onnx", "int8", "trees stay fp32").to_dict()["applicable"]
    False
    """

    def __init__(self, fmt: str, precision: str, reason: str):
        super().__init__(f"{fmt} {precision}: not applicable: {reason}")
        self.format, self.precision, self.reason = fmt, precision, reason

    def to_dict(self) -> dict:
        return {"format": self.format, "precision": self.precision, "applicable": False, "reason": self.reason}


@dataclass(frozen=True)
class ExportSource:
    """What artifacts are made from: the fp32 ONNX model, and the fitted pipeline it was exported from.

    The ONNX makers need only ``onnx``; the TFLite makers write the file from
    ``pipeline`` (a fitted scikit-learn ``Pipeline``) with its input
    ``schema``, ``task`` and ``classes``.
    """

    onnx: onnx.ModelProto
    pipeline: Any = None
    schema: InputSchema | None = None
    task: str = ""
    classes: tuple = ()


@dataclass(frozen=True)
class CompileOptions:
    """What a compile step may need besides the fp32 model.

    ``calibration`` holds feeds from the training split — a dict of feature
    name to an ``(n, 1)`` array, as ``FeatureEncoder.encode`` returns — for
    static int8 quantization (without it, int8 is dynamic).
    ``optimization`` is the profile's ``ort_optimization``; ``arch`` the
    target's CPU architecture; ``target`` the whole profile (its operator
    set and budgets decide what a TFLite file may hold).
    """

    calibration: Mapping[str, np.ndarray] | None = None
    optimization: str = "none"
    arch: str = field(default_factory=platform.machine)
    calibration_rows: int = 1000
    calibration_batch: int = 100
    target: Any = None

    @classmethod
    def from_target(cls, target, calibration: Mapping[str, np.ndarray] | None = None) -> CompileOptions:
        return cls(calibration=calibration, optimization=target.ort_optimization, arch=target.arch, target=target)


@dataclass(frozen=True)
class CompiledArtifact:
    """One artifact's bytes and what the manifest should say about it.

    ``opset`` is set on the exported model itself (``model.onnx``, the
    reference every other artifact is made from): it is recorded with its
    opset imports and no ``transform``; a derived artifact records what was
    done to make it instead.

    >>> CompiledArtifact(b"", "ort", "int8", ("quantized",), {}).file_name()
    'model.int8.ort'
    """

    data: bytes
    format: str
    precision: str
    done: tuple[str, ...]
    details: dict
    extra_files: dict[str, bytes] = field(default_factory=dict)
    engine: str = "onnxruntime"
    opset: dict[str, int] | None = None
    #: The label transform the graph ends by inverting, ``("log1p", offset)``, or ``None``
    #: (:mod:`edgeml.export.inverse`); the verify stage widens the parity tolerance by what ``exp`` amplifies.
    inverse: tuple[str, float] | None = None

    @property
    def exported(self) -> bool:
        """Whether this is the exported model itself (``model.onnx``), not an artifact derived from it."""
        return self.opset is not None

    @property
    def suffix(self) -> str:
        return {"ort": ".ort", "tflite": ".tflite"}.get(self.format, ".onnx")

    def file_name(self, stem: str = "model") -> str:
        """``model.onnx``, ``model.int8.onnx``, ``model.fp16.onnx``, ``model.ort``, ``model.int8.ort``…

        The derived fp32 ONNX artifact (``model.onnx`` optimized offline) is
        ``model.opt.onnx``: ``model.onnx`` is the exported model itself.
        """
        if (self.format, self.precision) == ("onnx", "fp32") and not self.exported:
            stem = f"{stem}.opt"
        return f"{stem}{'' if self.precision == 'fp32' else '.' + self.precision}{self.suffix}"

    def manifest_fields(self) -> dict:
        """The artifact's manifest record besides path, bytes, sha256, inputs and outputs: the keyword arguments
        of :meth:`edgeml.bundle.writer.BundleWriter.add_artifact`."""
        fields = {"format": self.format, "precision": self.precision, "engine": self.engine}
        if self.exported:
            return {**fields, "opset": dict(self.opset)}
        return {**fields, "transform": {"done": list(self.done), **self.details}, "files": dict(self.extra_files)}


#: What every artifact maker is: function(source, options) -> :class:`CompiledArtifact`.
Maker = Callable[[ExportSource, CompileOptions], CompiledArtifact]
#: ``(format, precision)`` -> its :data:`Maker`.
ARTIFACTS: dict[tuple[str, str], Maker] = {}


def register_artifact(fmt: str, precision: str, make: Maker) -> None:
    """Add a way to make a ``(format, precision)`` artifact; refuses to replace one silently."""
    if not callable(make):
        raise TypeError(f"the artifact maker for ({fmt!r}, {precision!r}) must be callable as make(source, options)")
    if (fmt, precision) in ARTIFACTS:
        raise ValueError(f"an artifact maker for ({fmt!r}, {precision!r}) is already registered")
    ARTIFACTS[(fmt, precision)] = make


def compile_artifact(source: ExportSource, fmt: str, precision: str,
                     options: CompileOptions | None = None) -> CompiledArtifact:
    """Make the ``(fmt, precision)`` artifact from ``source``; :class:`NotApplicable` when it cannot be."""
    try:
        make = ARTIFACTS[(fmt, precision)]
    except KeyError:
        known = ", ".join(f"{f}/{p}" for f, p in ARTIFACTS)
        raise ExportError(f"no way to make a {fmt} {precision} artifact; edgeml makes {known}") from None
    return make(source, options or CompileOptions())


__all__ = ["ARTIFACTS", "CompileOptions", "CompiledArtifact", "ExportSource", "Maker", "NotApplicable",
           "compile_artifact", "register_artifact"]
