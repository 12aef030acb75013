"""Make and verify every artifact a target profile asks for, beyond the fp32 ONNX model.

For each format × precision in the profile (``.ort`` for a minimal
onnxruntime, fp16 for GPUs, int8 for linear models and MLPs, offline-optimised
ONNX), the artifact is compiled from the verified fp32 model, written into the
bundle, scored by ``edgeml_runtime`` on the test split, and kept only if it
earns its place: an fp32 artifact must match the host pipeline exactly as the
first one did; a reduced-precision one may lose at most the profile's allowed
metric drop, otherwise it is removed and the manifest says why. What cannot
be made honestly (a tree ensemble in int8, TFLite) is recorded as not
applicable, never shipped as a broken file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
from sklearn.pipeline import Pipeline

from edgeml.bundle import writer as bundles
from edgeml.errors import ExportError
from edgeml.export.quantize import (
    CompiledArtifact,
    CompileOptions,
    NotApplicable,
    compile_artifact,
    metric_drop,
)
from edgeml.targets.profiles import TargetProfile
from edgeml.verify.metrics import classification_metrics, regression_metrics
from edgeml.verify.parity import require_parity, verify_artifact
from edgeml_runtime.schema import InputSchema


@dataclass(frozen=True)
class TestSplit:
    """What verifying an artifact needs: the raw test rows, the host pipeline's output, the truth, fp32's metrics."""

    raw: pd.DataFrame
    host_output: np.ndarray
    y: np.ndarray
    fp32_metrics: Mapping[str, float]


@dataclass
class Outcome:
    artifacts: list[dict] = field(default_factory=list)
    verification: list[dict] = field(default_factory=list)
    not_shipped: list[dict] = field(default_factory=list)


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


def tflite_artifact(pipeline: Pipeline, schema: InputSchema, task: str, classes: tuple, precision: str,
                    calibration: Mapping[str, np.ndarray], target: TargetProfile) -> CompiledArtifact:
    """The pipeline written as TFLite (from the fitted pipeline itself: no ONNX-to-TFLite conversion exists).

    On a target with an operator set (``tflite_ops``) or TFLite budgets, a
    file that would not run there or not fit is not applicable, with the reason.
    """
    from edgeml.export.tflite.pipeline import to_tflite
    from edgeml.targets.opsets import load_op_set, problems

    op_set = load_op_set(target.tflite_ops) if target.tflite_ops else None
    try:
        exp = to_tflite(pipeline, schema, task, classes, precision, calibration,
                        static_batch=bool(op_set and op_set.static_batch))
    except ExportError as exc:
        raise NotApplicable("tflite", precision, str(exc)) from None
    wrong = problems(exp.ops, exp.tensor_types, op_set) if op_set else []
    budgets = target.budgets
    if budgets.max_model_bytes is not None and len(exp.data) > budgets.max_model_bytes:
        wrong.append(f"the file is {len(exp.data):,} bytes, over budgets.max_model_bytes {budgets.max_model_bytes:,}")
    planned = exp.details["planned_bytes"]
    if budgets.max_arena_bytes is not None and planned > budgets.max_arena_bytes:
        wrong.append(f"its tensors need {planned:,} bytes for one row, over budgets.max_arena_bytes "
                     f"{budgets.max_arena_bytes:,}")
    if wrong:
        raise NotApplicable("tflite", precision, f"not written for {target.name}: " + "; ".join(wrong))
    done = (f"{exp.family} pipeline written as TFLite builtin ops ({', '.join(exp.ops)})",)
    if op_set is not None:
        done += (f"every operator and tensor type is in the {op_set.name} set",)
    fields = {"family": exp.family, **exp.details, "operators": list(exp.ops)}
    if op_set is not None:
        fields["op_set"] = op_set.name
    return CompiledArtifact(exp.data, "tflite", precision, done, fields)


def _verifier(target: TargetProfile) -> str:
    from edgeml.targets.opsets import load_op_set

    return load_op_set(target.tflite_ops).verify_with if target.tflite_ops else ""


def _discard(stage: Path, manifest: dict, entry: dict, name: str, extra: dict) -> None:
    """Take a written artifact back out of the bundle."""
    manifest["artifacts"].remove(entry)
    for path in (name, *extra.values()):
        (stage / path).unlink()


def make_artifacts(stage: Path, manifest: dict, fp32: onnx.ModelProto, pipeline: Pipeline, target: TargetProfile,
                   calibration: Mapping[str, np.ndarray], test: TestSplit,
                   notice: Callable[[str], None]) -> Outcome:
    """Compile, write, verify and record each wanted artifact; ``manifest`` is updated and rewritten as it goes."""
    task, classes = manifest["task"], tuple(manifest.get("classes") or ())
    schema = InputSchema.from_list(manifest["inputs"])
    base = manifest["artifacts"][0]
    options = CompileOptions.from_target(target, calibration)
    outcome = Outcome()
    for fmt, precision in wanted(target):
        try:
            if fmt == "tflite":
                art = tflite_artifact(pipeline, schema, task, classes, precision, calibration, target)
            else:
                art = compile_artifact(fp32, fmt, precision, options)
        except NotApplicable as exc:
            outcome.not_shipped.append(exc.to_dict())
            continue
        name = art.file_name() if (fmt, precision) != ("onnx", "fp32") else "model.opt.onnx"
        (stage / name).write_bytes(art.data)
        extra = {}
        for suffix, data in art.extra_files.items():
            extra_name = f"{Path(name).stem}.{suffix}"
            (stage / extra_name).write_bytes(data)
            extra[suffix] = extra_name
        fields = art.manifest_fields()
        entry = bundles.describe_artifact(stage, name, fields.pop("format"), fields.pop("precision"),
                                          outputs=base["outputs"], inputs=base["inputs"], files=extra, **fields)
        manifest["artifacts"].append(entry)
        bundles.write_manifest(stage, manifest)

        scores = verify_artifact(stage, name, test.raw, test.host_output, task, classes)
        if fmt == "tflite" and _verifier(target) == "tflite-micro":
            from edgeml.export.tflite import micro as tflm

            try:
                entry["transform"]["tflite_micro"] = tflm.check(stage / name, calibration,
                                                                target.budgets.max_arena_bytes,
                                                                entry["transform"]["planned_bytes"])
            except ExportError as exc:
                _discard(stage, manifest, entry, name, extra)
                outcome.not_shipped.append(NotApplicable(fmt, precision, str(exc)).to_dict())
                continue
        metrics = task_metrics(task, test.y, scores.labels, scores.probabilities)
        record = scores.parity.to_dict()
        if precision == "fp32":
            require_parity(scores.parity)
            entry["test_metrics"] = metrics
            outcome.verification.append(record)
            outcome.artifacts.append(entry)
            continue
        drop = metric_drop(task, test.fp32_metrics, metrics, target.budgets)
        record.update(metric_drop=drop, passed=drop["within"])
        outcome.verification.append(record)
        if drop["within"]:
            entry["test_metrics"], entry["metric_drop"] = metrics, drop
            outcome.artifacts.append(entry)
            continue
        _discard(stage, manifest, entry, name, extra)
        reason = (f"{drop['metric']} went from {drop['fp32']:.4g} to {drop['value']:.4g} "
                  f"(a drop of {drop['drop']:.3g}, allowed {drop['allowed']:.3g}); the fp32 artifacts are kept")
        outcome.not_shipped.append({"format": fmt, "precision": precision, "applicable": True, "reason": reason})
    bundles.write_manifest(stage, manifest)
    by_reason: dict[str, list[str]] = {}
    for n in outcome.not_shipped:
        by_reason.setdefault(n["reason"], []).append(f"{n['format']} {n['precision']}")
    for reason, which in by_reason.items():
        notice(f"not shipped: {', '.join(which)}: {reason}")
    return outcome
