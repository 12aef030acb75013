"""``edgeml build``: data in, verified bundle out.

One function, :func:`build`, runs the stages in order — ingest, schema,
split and preprocessing, search, export, verify, bundle — each a call into its
own module with plain values. Progress goes to a :class:`Reporter`.
:func:`write_bundle` is the part after the search — export, verify, bundle —
for a pipeline already fitted: a benchmark that trains its own models writes
their bundles exactly as a build does.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from edgeml.bundle import writer as bundles
from edgeml.bundle.reference import build_reference
from edgeml.bundle.writer import BundleWriter
from edgeml.config import BuildConfig
from edgeml.data.ingest import Table, read_table
from edgeml.data.prepare import Prepared, prepare
from edgeml.errors import BundleError, ConfigError, DataError, ExportError
from edgeml.export.artifacts import TestSplit, make_artifacts, task_metrics
from edgeml.export.onnx import align_thresholds, opset_of, output_names, to_onnx
from edgeml.export.quantize import ExportSource
from edgeml.models.estimators import model_steps
from edgeml.search.automl import SearchResult, SearchSettings, run_search, usable_learners
from edgeml.search.metrics import describe_metric
from edgeml.search.trials import HardwareBudget, Trial
from edgeml.targets.measure import TrialMeasure, target_budget
from edgeml.targets.profiles import TargetProfile, load_target
from edgeml.verify.metrics import classification_metrics, regression_metrics
from edgeml.verify.parity import require_parity, verify_artifact
from edgeml.verify.samples import store_samples
from edgeml_runtime.bundle import read_manifest
from edgeml_runtime.manifest import Artifact, Manifest, NotShipped

STAGES = ("ingest", "schema", "split", "search", "export", "verify", "bundle")


class Reporter:
    """Receives progress; the default one says nothing. The CLI prints to the terminal."""

    def stage(self, name: str, detail: str) -> None: ...
    def notice(self, text: str) -> None: ...
    def trial(self, trial: Trial) -> None: ...
    def frontier(self, trials: list[Trial], budgets: HardwareBudget) -> None: ...


@dataclass(frozen=True)
class BuildResult:
    bundle_dir: Path
    archive: Path
    manifest: Manifest
    seconds: float
    pipeline: Pipeline  # the host pipeline the artifacts were verified against (not persisted)


def build(config: BuildConfig, reporter: Reporter | None = None) -> BuildResult:
    report = reporter or Reporter()
    started = time.monotonic()
    target = load_target(config.target)
    table, label = _ingest(config)
    report.stage("ingest", f"{table.rows:,} rows × {table.frame.shape[1]} columns from {table.source} ({table.format})")
    data = prepare(table.frame, label, task=config.task, drop=config.drop, time_column=config.time_column,
                   seed=config.seed)
    _report_data(report, data)
    result, budgets = _search(config, target, data, report)
    pipeline = host_pipeline(data, result.model)
    name = config.name or _default_name(config, table)
    out, version = _destination(config, name)
    made = write_bundle(out, pipeline, data, target, name=name, version=version,
                        search=search_record(result, budgets),
                        provenance=provenance_record(table, data, config.seed, result.learner, result.model,
                                                     result.config),
                        seed=config.seed, synthetic_samples=config.synthetic_samples, force=config.force,
                        reporter=report)
    report.stage("bundle", f"{out}/ and {made.archive.name}")
    return BuildResult(out, made.archive, made.manifest, time.monotonic() - started, pipeline)


def host_pipeline(data: Prepared, model) -> Pipeline:
    """``data``'s fitted preprocessor followed by a fitted ``model``'s steps: what the artifacts are exported from
    and verified against (thresholds aligned with float32 inputs, :func:`~edgeml.export.onnx.align_thresholds`)."""
    return align_thresholds(Pipeline([("pre", data.preprocessor), *model_steps(model)]))


@dataclass(frozen=True)
class Written:
    """What :func:`write_bundle` put in place: the finished manifest and the ``.tar.gz`` beside the folder."""

    manifest: Manifest
    archive: Path


def write_bundle(out: Path, pipeline: Pipeline, data: Prepared, target: TargetProfile, *, name: str, version: str,
                 search: dict, provenance: dict, seed: int = 0, synthetic_samples: bool = False,
                 force: bool = False, reporter: Reporter | None = None) -> Written:
    """Export, verify and bundle an already-fitted ``pipeline`` for ``target``: the stages after the search.

    ``pipeline`` is ``data``'s preprocessor followed by the model's steps
    (:func:`host_pipeline`); ``search`` and
    ``provenance`` are the manifest's sections saying how the model was chosen
    and from what (:func:`search_record`, :func:`provenance_record`). Every
    artifact ``target`` asks for is made and verified through
    ``edgeml_runtime``, the sample rows are stored, and the folder is moved to
    ``out`` (replacing a bundle there only with ``force``) beside its
    ``.tar.gz``. :func:`build` runs the search and then this; a benchmark
    that trains its own model calls it directly.
    """
    report = reporter or Reporter()
    stage = bundles.staging_dir(Path(out), force)
    try:
        writer = BundleWriter(stage, name=name, version=version, target=target.to_dict(), task=data.task,
                              label=data.label, schema=data.inputs, classes=tuple(data.classes or ()),
                              dropped=[{"name": d.name, "reason": d.reason} for d in data.schema.dropped])
        _record(writer, data, pipeline)
        writer.record("search", search)
        writer.record("provenance", provenance)
        _export(writer, pipeline, data, target, report)
        manifest = _samples(writer, stage, data, seed, synthetic_samples)
        archive = bundles.finish(stage, Path(out))
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return Written(manifest, archive)


def _report_data(report: Reporter, data: Prepared) -> None:
    schema = data.schema
    for text in schema.notices:
        report.notice(text)
    kinds = pd.Series([c.kind for c in schema.columns]).value_counts()
    report.stage("schema", f"{len(schema.columns)} inputs ({', '.join(f'{n} {k}' for k, n in kinds.items())}); "
                           f"task {schema.task}, label {schema.label!r}")
    how = "in time order" if schema.time_column else ("stratified" if schema.task == "classification" else "shuffled")
    report.stage("split", " · ".join(f"{k} {v:,}" for k, v in data.split.sizes.items())
                 + f" ({how}); {data.X['train'].shape[1]} model features")


def _search(config: BuildConfig, target: TargetProfile, data: Prepared, report: Reporter):
    learners = _learners(config, target, data.task)
    settings = SearchSettings(task=data.task, learners=learners, metric=config.metric, time_budget=config.time_budget,
                              max_iter=config.max_iter, seed=config.seed)
    budget = f"{config.max_iter} trials" if config.max_iter else f"{config.time_budget:g} s"
    report.stage("search", f"{', '.join(learners)} · metric {describe_metric(data.task, config.metric)} · "
                           f"budget {budget}")
    budgets = target_budget(target)
    measure = TrialMeasure.for_target(target, data)
    result = run_search(data.X["train"], data.y["train"], data.X["valid"], data.y["valid"], settings,
                        progress=report.trial, budgets=budgets, measure=measure)
    report.frontier(result.frontier, budgets)
    return result, budgets


def _export(writer: BundleWriter, pipeline: Pipeline, data: Prepared, target: TargetProfile,
            report: Reporter) -> None:
    """Write model.onnx and verify it, then every artifact the target asks for, handing each to ``writer``."""
    model = to_onnx(pipeline, data.inputs, data.task, name=writer.name)
    entry = writer.add_artifact("model.onnx", model.SerializeToString(), format="onnx", precision="fp32",
                                engine="onnxruntime", opset=opset_of(model), outputs=output_names(model, data.task),
                                inputs=data.inputs.features)
    opsets = ", ".join(f"{d} {v}" for d, v in sorted(entry.opset.items()))
    report.stage("export", f"model.onnx {entry.bytes / 1024:.1f} KiB (ONNX fp32; opsets {opsets})")
    runs_onnx = bool({"onnx", "ort"} & set(target.formats))  # else model.onnx is the reference only
    limit = target.budgets.max_model_bytes
    if runs_onnx and limit is not None and entry.bytes > limit:
        raise ExportError(
            f"model.onnx is {entry.bytes:,} bytes, over target {target.name}'s max_model_bytes "
            f"{limit:,} once preprocessing is included; raise the budget in a profile "
            "that extends this one, or drop high-cardinality categorical columns"
        )
    writer.draft(entry)
    host_test = _host_output(pipeline, data.features["test"], data.task)
    scores = verify_artifact(writer.stage, "model.onnx", data.split.test, host_test, data.task, data.classes)
    require_parity(scores.parity)
    test_metrics = task_metrics(data.task, data.y["test"], scores.labels, scores.probabilities)
    p = scores.parity
    report.stage("verify", f"{p.rows:,} test rows through edgeml_runtime: {p.label_mismatches} label mismatches, "
                           f"max difference {p.max_abs_diff:.2g} (allowed {p.tolerance:g})")
    writer.ship(entry, test_metrics=test_metrics, verification=p.to_dict())
    source = ExportSource(model, pipeline, data.inputs, data.task, tuple(data.classes or ()))
    more = make_artifacts(writer, source, target, data.calibration,
                          TestSplit(data.split.test, host_test, data.y["test"], test_metrics), report.notice)
    if not runs_onnx and not more.artifacts:
        raise ExportError(_nothing_runs(target, more.not_shipped))
    _report_artifacts(report, more.artifacts)


def _samples(writer: BundleWriter, stage: Path, data: Prepared, seed: int, synthetic: bool) -> Manifest:
    """Store the sample rows with every shipped artifact's outputs on them; the finished manifest."""
    shipped = writer.write()  # every verified artifact on disk, so that the rows can be scored through each
    writer.record("samples", store_samples(stage, shipped, data, seed=seed, synthetic=synthetic))
    return writer.write()


def _nothing_runs(target: TargetProfile, not_shipped: tuple[NotShipped, ...]) -> str:
    reasons = "; ".join(f"{n.format} {n.precision}: {n.reason}" for n in not_shipped)
    if all(n.applicable for n in not_shipped):  # made, but lost too much in reduced precision
        fix = ("raise budgets.max_accuracy_drop / max_rmse_increase in a profile that extends this one, "
               "or give the search more trials (--max-trials) to find a model that quantizes better")
    else:
        fix = (f"allow only model families this target takes with --estimators (its profile lists "
               f"{', '.join(target.estimators)}), or build for a target with more room")
    return f"nothing target {target.name} runs could be made ({reasons}). To fix: {fix}"


def _report_artifacts(report: Reporter, artifacts: tuple[Artifact, ...]) -> None:
    for a in artifacts:
        d = a.metric_drop
        how = (f"{d.metric} {d.value:.4g} vs {d.fp32:.4g} in fp32 (drop {d.drop:.3g}, allowed "
               f"{d.allowed:.3g})" if d else "identical to the host pipeline")
        report.stage("verify", f"{a.path} {a.bytes / 1024:.1f} KiB ({a.format} {a.precision}) "
                               f"through edgeml_runtime: {how}")


def _record(writer: BundleWriter, data: Prepared, pipeline: Pipeline) -> None:
    """Hand the validation metrics and the drift reference to the bundle writer."""
    valid_output = _host_output(pipeline, data.features["valid"], data.task)
    if data.task == "classification":
        predicted = np.argmax(valid_output, axis=1)
        writer.record("valid_metrics", classification_metrics(data.y["valid"], predicted, valid_output))
    else:
        predicted = valid_output
        writer.record("valid_metrics", regression_metrics(data.y["valid"], predicted))
    writer.record("reference", build_reference(data.features["train"], data.inputs, predicted, data.task,
                                               data.classes))


def search_record(result: SearchResult, budgets: HardwareBudget) -> dict:
    """The manifest's ``search`` section for a model chosen by :func:`~edgeml.search.automl.run_search`."""
    return {
        "learners": list(result.learners),
        "metric": result.metric,
        "best_learner": result.learner,
        "best_config": result.config,
        "best_valid_loss": result.best_loss if abs(result.best_loss) < float("inf") else None,  # JSON: no inf/NaN
        "best_model_bytes": None if result.cost is None else result.cost.model_bytes,
        "best_predicted_latency_ms": None if result.cost is None else result.cost.latency_ms,
        "budgets": asdict(budgets),
        "trials": len(result.trials),
        "seconds": round(result.seconds, 2),
        "trial_log": [t.to_dict() for t in result.trials],
        "frontier": [t.iteration for t in result.frontier],
    }


def provenance_record(table: Table, data: Prepared, seed: int, learner: str, model, config: dict) -> dict:
    """The manifest's ``provenance`` section: the table, the seed, the model (``learner``, its class and
    ``config``) and the package versions."""
    return {
        "data": {"source": table.source, "format": table.format, "sha256": table.sha256,
                 "rows": table.rows, "labelled_rows": len(data.frame), "split": data.split.sizes},
        "seed": seed,
        "model": {"learner": learner, "class": type(model).__name__, "config": config},
        "packages": bundles.package_versions(),
    }


def _host_output(pipeline: Pipeline, features: pd.DataFrame, task: str) -> np.ndarray:
    """The host pipeline's probabilities (classification) or values (regression)."""
    return pipeline.predict_proba(features) if task == "classification" else pipeline.predict(features)


def _ingest(config: BuildConfig) -> tuple[Table, str]:
    if config.data is None:
        from edgeml.data.demo import DEMO_LABEL, demo_frame

        if config.label not in (None, DEMO_LABEL):
            raise DataError(f"--label {config.label!r} was given without --data; "
                            f"the built-in demo data's label is {DEMO_LABEL!r}")
        frame = demo_frame(seed=config.seed)
        digest = hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()
        return (Table(frame=frame, source="built-in demo data", format="demo", sha256=digest, rows=len(frame)),
                DEMO_LABEL)
    if not config.label:
        raise DataError(f"--label is required with --data {config.data}: name the column to predict")
    return read_table(config.data, query=config.query), config.label


def _learners(config: BuildConfig, target: TargetProfile, task: str) -> tuple[str, ...]:
    allowed = target.estimators
    if config.estimators:
        refused = [e for e in config.estimators if e not in allowed]
        if refused:
            raise ConfigError(
                f"estimator(s) {', '.join(refused)} are not allowed by target {target.name!r} "
                f"(it allows {', '.join(allowed)}); pick from those or use another target"
            )
        allowed = config.estimators
    return usable_learners(allowed, task)


def _default_name(config: BuildConfig, table: Table) -> str:
    if config.data is None:
        return "demo"
    stem = Path(str(config.data).split("?")[0]).stem
    return re.sub(r"[^0-9A-Za-z_.-]+", "-", stem).strip("-.").lower() or "model"


def _destination(config: BuildConfig, name: str) -> tuple[Path, str]:
    """The bundle folder and its version: ``dist/<name>-<N>`` with N one past the last, or ``--out``.

    With ``--out`` the version comes from the folder name (``…-7``), else one
    past the version of the bundle being replaced there, else 1.
    """
    if not config.out:
        version = bundles.next_version(Path("dist"), name)
        return Path("dist") / f"{name}-{version}", version
    out = Path(config.out)
    m = re.fullmatch(rf"{re.escape(name)}-(\d+)", out.name)
    if m:
        return out, m.group(1)
    try:
        previous = read_manifest(out).version
        return out, str(int(previous) + 1)
    except (BundleError, ValueError):
        return out, "1"


__all__ = ["BuildResult", "Reporter", "STAGES", "Written", "build", "host_pipeline",
           "provenance_record", "search_record", "write_bundle"]
