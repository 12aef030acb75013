"""Make and verify every artifact a target profile asks for, beyond the fp32 ONNX model.

For each format × precision in the profile (``.ort`` for a minimal
onnxruntime, fp16 for GPUs, int8 for linear models and MLPs, offline-optimised
ONNX, TFLite), the artifact is made by its maker in the one registry
(:func:`edgeml.export.quantize.compile_artifact`), written into the bundle
through the :class:`~edgeml.bundle.writer.BundleWriter`, scored by
``edgeml_runtime`` on the test split, and kept only if it earns its place: an
fp32 artifact must match the host pipeline exactly as the first one did; a
reduced-precision one may lose at most the profile's allowed metric drop,
otherwise it is removed and the manifest says why. What cannot be made
honestly (a tree ensemble in int8, a TFLite file over the target's budgets)
is recorded as not applicable, never shipped as a broken file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from edgeml.bundle.writer import BundleWriter
from edgeml.export.quantize import CompileOptions, ExportSource, NotApplicable, compile_artifact, metric_drop
from edgeml.targets.profiles import TargetProfile
from edgeml.verify.metrics import classification_metrics, regression_metrics
from edgeml.verify.parity import require_parity, verify_artifact
from edgeml_runtime.manifest import Artifact, NotShipped


@dataclass(frozen=True)
class TestSplit:
    """What verifying an artifact needs: the raw test rows, the host pipeline's output, the truth, fp32's metrics."""

    raw: pd.DataFrame
    host_output: np.ndarray
    y: np.ndarray
    fp32_metrics: Mapping[str, float]


@dataclass(frozen=True)
class Outcome:
    """What :func:`make_artifacts` handed to the bundle writer: the artifacts shipped and those not shipped."""

    artifacts: tuple[Artifact, ...]
    not_shipped: tuple[NotShipped, ...]


def wanted(target: TargetProfile) -> list[tuple[str, str]]:
    """The (format, precision) pairs the profile asks for besides the plain fp32 ONNX model, in its order."""
    pairs = [(f, p) for f in target.formats for p in target.precisions]
    if target.ort_optimization == "none":
        pairs = [pair for pair in pairs if pair != ("onnx", "fp32")]
    return pairs


def task_metrics(task: str, y: np.ndarray, labels: np.ndarray, probabilities) -> dict:
    if task == "classification":
        return classification_metrics(y, labels, probabilities)
    return regression_metrics(y, labels)


def make_artifacts(writer: BundleWriter, source: ExportSource, target: TargetProfile,
                   calibration: Mapping[str, np.ndarray], test: TestSplit, notice: Callable[[str], None]) -> Outcome:
    """Compile, write, verify and hand to ``writer`` each wanted artifact; what was shipped and what was not.

    ``writer.artifacts[0]`` is the verified exported model: the derived
    artifacts take its inputs and outputs.
    """
    base = writer.artifacts[0]
    had, skipped_before = len(writer.artifacts), len(writer.not_shipped_records)
    options = CompileOptions.from_target(target, calibration)
    for fmt, precision in wanted(target):
        try:
            art = compile_artifact(source, fmt, precision, options)
        except NotApplicable as exc:
            writer.not_shipped(exc.to_dict())
            continue
        fields = art.manifest_fields()
        entry = writer.add_artifact(art.file_name(), art.data, format=fields["format"], precision=precision,
                                    engine=fields["engine"], outputs=base.outputs, inputs=list(base.inputs),
                                    transform=fields["transform"], files=art.extra_files)
        _verify(writer, entry, source, target, test)
    outcome = Outcome(writer.artifacts[had:], writer.not_shipped_records[skipped_before:])
    by_reason: dict[str, list[str]] = {}
    for n in outcome.not_shipped:
        by_reason.setdefault(n.reason, []).append(f"{n.format} {n.precision}")
    for reason, which in by_reason.items():
        notice(f"not shipped: {', '.join(which)}: {reason}")
    return outcome


def _verify(writer: BundleWriter, entry: Artifact, source: ExportSource, target: TargetProfile,
            test: TestSplit) -> None:
    """Score a written artifact through the runtime, then ship it or take it back out, saying why.

    fp32 must match the host pipeline (else :class:`VerificationError`); a
    reduced precision may lose at most the profile's allowed metric drop.
    """
    writer.draft(entry)
    scores = verify_artifact(writer.stage, entry.path, test.raw, test.host_output, source.task, source.classes)
    metrics = task_metrics(source.task, test.y, scores.labels, scores.probabilities)
    record = scores.parity.to_dict()
    if entry.precision == "fp32":
        require_parity(scores.parity)
        writer.ship(entry, test_metrics=metrics, verification=record)
        return
    drop = metric_drop(source.task, test.fp32_metrics, metrics, target.budgets)
    record.update(metric_drop=drop, passed=drop["within"])
    if drop["within"]:
        writer.ship(entry, test_metrics=metrics, verification=record, metric_drop=drop)
        return
    reason = (f"{drop['metric']} went from {drop['fp32']:.4g} to {drop['value']:.4g} "
              f"(a drop of {drop['drop']:.3g}, allowed {drop['allowed']:.3g}); the fp32 artifacts are kept")
    writer.reject(entry, {"format": entry.format, "precision": entry.precision, "applicable": True, "reason": reason},
                  verification=record)
