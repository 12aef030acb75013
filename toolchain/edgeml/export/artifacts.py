"""Make every artifact a target profile asks for: the exported fp32 ONNX model first, then what is derived from it.

The fitted pipeline becomes ``model.onnx`` (:func:`edgeml.export.onnx.to_onnx`);
then for each format × precision in the profile (``.ort`` for a minimal
onnxruntime, fp16 for GPUs, int8 for linear models and MLPs, offline-optimised
ONNX, TFLite) its maker in the one registry
(:func:`edgeml.export.registry.compile_artifact`) makes the file, or says
why it cannot honestly be made (a tree ensemble in int8, a TFLite file
outside the target's operator set): a
:class:`~edgeml.export.registry.NotApplicable` record, never a broken file.
Nothing here is verified or written: the verify stage
(:mod:`edgeml.verify.ship`) scores each artifact through ``edgeml_runtime``
and ships it into the bundle or says why not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
from sklearn.pipeline import Pipeline

from edgeml.export.inverse import describe, split
from edgeml.export.onnx import opset_of, output_names, to_onnx
from edgeml.export.registry import CompiledArtifact, CompileOptions, ExportSource, NotApplicable, compile_artifact
from edgeml.targets.profiles import TargetProfile
from edgeml_runtime.schema import InputSchema


@dataclass(frozen=True)
class Exported:
    """What the export stage made, in the profile's order: ``model.onnx`` first (the reference), then each artifact
    the target asks for or the record of why it could not be made.

    Every artifact takes the exported model's ``inputs`` (feature names) and ``outputs`` (output names).
    """

    made: tuple[CompiledArtifact | NotApplicable, ...]
    inputs: tuple[str, ...]
    outputs: dict

    @property
    def model(self) -> CompiledArtifact:
        """The exported fp32 ONNX model, ``model.onnx``."""
        return self.made[0]


def wanted(target: TargetProfile) -> list[tuple[str, str]]:
    """The (format, precision) pairs the profile asks for besides the plain fp32 ONNX model, in its order."""
    pairs = [(f, p) for f in target.formats for p in target.precisions]
    if target.ort_optimization == "none":
        pairs = [pair for pair in pairs if pair != ("onnx", "fp32")]
    return pairs


def make_artifacts(pipeline: Pipeline, schema: InputSchema, task: str, classes: tuple, target: TargetProfile,
                   calibration: Mapping[str, np.ndarray], *, name: str) -> Exported:
    """``pipeline`` as ``model.onnx``, then every artifact :func:`wanted` for ``target``, or why it is not made.

    ``calibration`` holds feeds from the training split (int8 calibration,
    TFLite's integer ranges); ``name`` is the bundle's, recorded in the model.
    """
    model = to_onnx(pipeline, schema, task, name=name)
    inverse = split(pipeline.steps[-1][1])[1]
    exported = CompiledArtifact(model.SerializeToString(), "onnx", "fp32", (), {}, opset=opset_of(model),
                                inverse=inverse)
    source = ExportSource(model, pipeline, schema, task, tuple(classes or ()))
    options = CompileOptions.from_target(target, calibration)
    made: list[CompiledArtifact | NotApplicable] = [exported]
    for fmt, precision in wanted(target):
        try:
            made.append(_inverted(compile_artifact(source, fmt, precision, options), inverse))
        except NotApplicable as exc:
            made.append(exc)
    return Exported(tuple(made), tuple(schema.features), output_names(model, task))


def _inverted(artifact: CompiledArtifact, inverse: tuple[str, float] | None) -> CompiledArtifact:
    """``artifact`` saying that its graph ends with the label transform's inverse (every maker appends it: the
    ONNX ones inherit it from ``model.onnx``, the TFLite ones write it, :mod:`edgeml.export.inverse`)."""
    if inverse is None:
        return artifact
    return replace(artifact, done=(*artifact.done, describe(inverse)), inverse=inverse)
