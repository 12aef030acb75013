"""Verify each artifact the export stage made and ship it into the bundle, or say why not: one rule for all.

:func:`ship` takes one thing :func:`edgeml.export.artifacts.make_artifacts`
made — ``model.onnx`` or a derived artifact, or the record of one that could
not be made — and hands it to the :class:`~edgeml.bundle.writer.BundleWriter`:

1. a :class:`~edgeml.export.registry.NotApplicable` record is recorded as not shipped;
2. a file over the target's ``max_model_bytes`` is not shipped, with the
   reason — except ``model.onnx`` on a target that runs ONNX, which fails
   the build (:class:`~edgeml.errors.ExportError`): it is what the device
   would run. On other targets ``model.onnx`` is the reference only;
3. a TFLite file whose operator set says so is run in TensorFlow Lite Micro
   on training rows first (``transform.tflite_micro``); one it cannot run is
   not applicable;
4. the file is written, scored through ``edgeml_runtime`` on the test split
   and compared with the host pipeline: fp32 must match it within the parity
   tolerance (:mod:`edgeml.verify.parity`: 1e-4 for probabilities, float32's
   rounding of the output's scale for values, widened by what ``exp``
   amplifies for a label learnt on a log scale;
   :func:`~edgeml.verify.parity.require_parity`, else
   :class:`~edgeml.errors.VerificationError`); a reduced precision may lose
   at most the profile's allowed metric drop against the exported model
   (:func:`~edgeml.verify.metrics.metric_drop`) — scored by TensorFlow Lite Micro itself when step 3
   ran it (:func:`edgeml.export.tflite.micro.score_rows`: its int8 kernels round otherwise than
   LiteRT's) — else it is taken back out
   and the manifest says why. Either way the verification record keeps the
   tolerance, which the device's self-test applies to the artifact's own
   outputs on the sample rows.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from edgeml.bundle.writer import BundleWriter
from edgeml.errors import ExportError
from edgeml.export.registry import CompiledArtifact, NotApplicable
from edgeml.targets.profiles import TargetProfile
from edgeml.verify.metrics import metric_drop, task_metrics
from edgeml.verify.parity import Parity, require_parity, verify_artifact
from edgeml_runtime.manifest import Artifact, NotShipped


@dataclass(frozen=True)
class Evidence:
    """What verifying an artifact needs: the raw test rows, the host pipeline's output on them and the truth; the
    task and classes; the target (its budgets, whether it runs ONNX); the training-split feeds TFLite Micro runs a
    file on."""

    raw: pd.DataFrame
    host_output: np.ndarray
    y: np.ndarray
    task: str
    classes: tuple
    target: TargetProfile
    calibration: Mapping[str, np.ndarray]
    threshold: float | None = None  # a binary bundle's decision threshold (the manifest's ``decision``)

    @property
    def runs_onnx(self) -> bool:
        return runs_onnx(self.target)


@dataclass(frozen=True)
class Outcome:
    """What became of one artifact: shipped (with its parity verdict), or not shipped (with why)."""

    artifact: Artifact | None = None
    parity: Parity | None = None
    not_shipped: NotShipped | None = None


def ship(writer: BundleWriter, made: CompiledArtifact | NotApplicable, evidence: Evidence, *,
         inputs: tuple[str, ...], outputs: dict) -> Outcome:
    """Verify ``made`` and hand it to ``writer``, shipped or not shipped (module docstring); what became of it.

    ``inputs`` and ``outputs`` are the exported model's feature and output
    names, which every artifact keeps. ``model.onnx`` ships first: a reduced
    precision is judged against its test metrics.
    """
    try:
        if isinstance(made, NotApplicable):
            raise made
        _within_budget(made, evidence.target, evidence.runs_onnx)
        made = _run_in_interpreter(made, evidence)
    except NotApplicable as exc:
        writer.not_shipped(exc.to_dict())
        return Outcome(not_shipped=writer.not_shipped_records[-1])
    entry = writer.add_artifact(made.file_name(), made.data, **made.manifest_fields(), outputs=outputs,
                                inputs=list(inputs))
    writer.draft(entry)
    scores = verify_artifact(writer.stage, entry.path, evidence.raw, evidence.host_output, evidence.task,
                             evidence.classes, evidence.threshold, made.inverse, **_scorer(made))
    metrics = task_metrics(evidence.task, evidence.y, scores.labels, scores.probabilities)
    record = scores.parity.to_dict()
    if entry.precision == "fp32":
        require_parity(scores.parity)
        writer.ship(entry, test_metrics=metrics, verification=record)
        return Outcome(artifact=writer.artifacts[-1], parity=scores.parity)
    if not writer.artifacts:
        raise ValueError(f"{entry.path} is judged against the exported model's test metrics: ship model.onnx first")
    drop = metric_drop(evidence.task, writer.artifacts[0].test_metrics, metrics, evidence.target.budgets)
    record.update(metric_drop=drop, passed=drop["within"])
    if drop["within"]:
        writer.ship(entry, test_metrics=metrics, verification=record, metric_drop=drop)
        return Outcome(artifact=writer.artifacts[-1], parity=scores.parity)
    reason = (f"{drop['metric']} went from {drop['fp32']:.4g} to {drop['value']:.4g} "
              f"(a drop of {drop['drop']:.3g}, allowed {drop['allowed']:.3g}); the fp32 artifacts are kept")
    writer.reject(entry, {"format": entry.format, "precision": entry.precision, "applicable": True, "reason": reason},
                  verification=record)
    return Outcome(not_shipped=writer.not_shipped_records[-1])


def runs_onnx(target: TargetProfile) -> bool:
    """Whether the device runs an ONNX-family artifact; if not, ``model.onnx`` is the build's reference only."""
    return bool({"onnx", "ort"} & set(target.formats))


def require_something_runs(target: TargetProfile, outcomes: list[Outcome], plain_c: str | None = None) -> None:
    """On a target that runs no ONNX, something besides ``model.onnx`` (the first outcome, the reference) must run
    there: another artifact, or on a target whose firmware form is plain C the C ``edgeml firmware`` writes from
    ``model.onnx`` (``plain_c``: why it cannot be written, ``None`` when it can); else an
    :class:`~edgeml.errors.ExportError` lists why each was not, and what to change."""
    if runs_onnx(target) or any(o.artifact for o in outcomes[1:]):
        return
    if target.firmware == "c" and outcomes[0].artifact is not None and plain_c is None:
        return
    not_shipped = [o.not_shipped for o in outcomes[1:] if o.not_shipped]
    reasons = "; ".join([f"{n.format} {n.precision}: {n.reason}" for n in not_shipped]
                        + ([f"plain C: {plain_c}"] if target.firmware == "c" and plain_c else []))
    if all(n.applicable for n in not_shipped):  # made, but lost too much in reduced precision
        fix = ("raise budgets.max_accuracy_drop / max_rmse_increase in a profile that extends this one, "
               "or give the search more trials (--max-trials) to find a model that quantizes better")
    else:
        fix = (f"allow only model families this target takes with --estimators (its profile lists "
               f"{', '.join(target.estimators)}), or build for a target with more room")
    raise ExportError(f"nothing target {target.name} runs could be made ({reasons}). To fix: {fix}")


def _within_budget(made: CompiledArtifact, target: TargetProfile, runs_onnx: bool) -> None:
    """Nothing over ``max_model_bytes`` ships (:class:`NotApplicable`); ``model.onnx`` over it fails the build on a
    target that runs ONNX, and is the reference only elsewhere."""
    limit, size = target.budgets.max_model_bytes, len(made.data)
    if limit is None or size <= limit:
        return
    if made.exported and runs_onnx:
        raise ExportError(
            f"model.onnx is {size:,} bytes, over target {target.name}'s max_model_bytes "
            f"{limit:,} once preprocessing is included; raise the budget in a profile "
            "that extends this one, or drop high-cardinality categorical columns"
        )
    if not made.exported:
        raise NotApplicable(made.format, made.precision,
                            f"not shipped for {target.name}: the file is {size:,} bytes, over budgets.max_model_bytes "
                            f"{limit:,}; raise the budget in a profile that extends this one")


def _run_in_interpreter(made: CompiledArtifact, evidence: Evidence) -> CompiledArtifact:
    """``made`` with the run of the interpreter its operator set names (``verify_with``) recorded in its details;
    :class:`NotApplicable` if that interpreter cannot run it. Unchanged when none is named."""
    from edgeml.targets.opsets import load_op_set

    op_set = made.details.get("op_set") if made.format == "tflite" else None
    run = INTERPRETERS.get(load_op_set(op_set).verify_with) if op_set else None
    if run is None:
        return made
    key, ran = run(made, evidence)
    return replace(made, details={**made.details, key: ran})


def _scorer(made: CompiledArtifact) -> dict:
    """A reduced-precision file TFLM ran is scored by TFLM on the test split (its metric drop is the device's);
    every other by the runtime's own engine."""
    if made.precision == "fp32" or not (made.details.get("tflite_micro") or {}).get("ran"):
        return {}
    from edgeml.export.tflite import micro as tflm

    return {"score": tflm.score_rows}


def _run_in_tflm(made: CompiledArtifact, evidence: Evidence) -> tuple[str, dict]:
    """TensorFlow Lite Micro's run of the file on training rows, recorded as ``tflite_micro``."""
    from edgeml.export.tflite import micro as tflm

    with tempfile.TemporaryDirectory(prefix="edgeml-tflm-") as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(made.data)
        try:
            return "tflite_micro", tflm.check(path, evidence.calibration, evidence.target.budgets.max_arena_bytes,
                                              made.details["planned_bytes"])
        except ExportError as exc:
            raise NotApplicable(made.format, made.precision, str(exc)) from None


#: ``verify_with`` of an operator set -> how a file is run in that interpreter: (made, evidence) -> (key, record).
INTERPRETERS: dict[str, Callable[[CompiledArtifact, Evidence], tuple[str, dict]]] = {"tflite-micro": _run_in_tflm}

__all__ = ["INTERPRETERS", "Evidence", "Outcome", "require_something_runs", "runs_onnx", "ship"]
