"""``edgeml build``: data in, verified bundle out.

One function, :func:`build`, runs the stages in order — ingest, schema,
split and preprocessing, search, export, verify, bundle — each a call into its
own module with plain values. Progress goes to a :class:`Reporter`.
:func:`write_bundle` is the part after the search — export, verify, bundle —
for a pipeline already fitted: a benchmark that trains its own models writes
their bundles exactly as a build does.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from edgeml import bundle
from edgeml.bundle.writer import BundleWriter
from edgeml.config import BuildConfig
from edgeml.data.ingest import read_input
from edgeml.data.prepare import Prepared, prepare
from edgeml.errors import ConfigError, ExportError
from edgeml.export.artifacts import Exported, make_artifacts
from edgeml.export.onnx import align_thresholds
from edgeml.models.estimators import model_steps
from edgeml.report import HTML, JSON, make_report
from edgeml.search.automl import SearchResult, SearchSettings, run_search, usable_learners
from edgeml.search.cluster import ClusterSettings
from edgeml.search.inputs import select_inputs_stage
from edgeml.search.metrics import describe_metric
from edgeml.search.refit import held_out_predictions, refit
from edgeml.search.threshold import decision_for
from edgeml.search.trials import HardwareBudget, Trial
from edgeml.search.validation import choose_validation
from edgeml.targets.measure import TrialMeasure, target_budget
from edgeml.targets.profiles import TargetProfile, load_target
from edgeml.verify.baseline import RegressionReport, SplitReport, report_regression, report_split
from edgeml.verify.metrics import host_output, labels_of, task_metrics
from edgeml.verify.samples import store_samples
from edgeml.verify.ship import Evidence, Outcome, require_something_runs, ship
from edgeml_runtime.manifest import Manifest

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
    test_split: SplitReport | RegressionReport | None = None  # the test split's baseline (and confusion matrix)


def build(config: BuildConfig, reporter: Reporter | None = None) -> BuildResult:
    """Run every stage; the output is locked from the start, so a second build to it stops at once."""
    report = reporter or Reporter()
    started = time.monotonic()
    name = bundle.check_name(config.name or bundle.default_name(config.data))
    out, version = bundle.destination(config.out, name)
    with bundle.locked(out):
        return _build(config, report, started, name, out, version)


def _build(config: BuildConfig, report: Reporter, started: float, name: str, out: Path,
           version: str) -> BuildResult:
    target = load_target(config.target)
    table, label = read_input(config.data, config.label, query=config.query, seed=config.seed)
    report.stage("ingest", f"{table.rows:,} rows × {table.frame.shape[1]} columns from {table.source} ({table.format})")
    for text in table.notes:
        report.notice(text)
    data = prepare(table.frame, label, task=config.task, drop=config.drop, time_column=config.time_column,
                   seed=config.seed, unnamed=table.unnamed, keep_label_outliers=config.keep_label_outliers)
    _report_data(report, data)
    result, budgets = _search(config, target, data, report)
    data, result = select_inputs_stage(config, target, data, result, report)  # fewer inputs (microcontrollers)
    held_out = _held_out(data, result, config)
    model, refit = (_refit_all(config, data, result, report, held_out) if config.refit_all
                    else (result.model, None))
    pipeline = host_pipeline(data, model)
    made = _write_locked(out, pipeline, data, target, name, version, search_record(result, budgets, refit),
                         bundle.provenance_record(table, data, config.seed, result.learner, model,
                                                  result.config),
                         config.seed, config.synthetic_samples, config.force, report, held_out)
    report.stage("bundle", f"{out}/ and {made.archive.name}")
    return BuildResult(out, made.archive, made.manifest, time.monotonic() - started, pipeline, made.test_split)


def _split_report(data: Prepared, pipeline: Pipeline, manifest: Manifest) -> SplitReport | RegressionReport:
    """The test split whole (:mod:`edgeml.verify.baseline`): a classifier's labelled as the bundle labels, a
    regressor's against the median of the labels it learnt from."""
    if data.task != "classification":
        return report_regression(data.y["test"], host_output(pipeline, data.features["test"], data.task),
                                 data.fit_matrix()[1])
    threshold = manifest.decision.threshold if manifest.decision is not None else None
    predicted, _ = labels_of(data.task, host_output(pipeline, data.features["test"], data.task), threshold)
    return report_split(data.y["test"], predicted, data.y["train"], tuple(data.classes))


def host_pipeline(data: Prepared, model) -> Pipeline:
    """``data``'s fitted preprocessor followed by a fitted ``model``'s steps: what the artifacts are exported from
    and verified against (thresholds aligned with float32 inputs, :func:`~edgeml.export.onnx.align_thresholds`)."""
    return align_thresholds(Pipeline([("pre", data.preprocessor), *model_steps(model)]))


@dataclass(frozen=True)
class Written:
    """What :func:`write_bundle` put in place: the finished manifest, the ``.tar.gz`` beside the folder, and the
    test split seen whole (the baseline the report shows)."""

    manifest: Manifest
    archive: Path
    test_split: SplitReport | RegressionReport | None = None


def write_bundle(out: Path, pipeline: Pipeline, data: Prepared, target: TargetProfile, *, name: str, version: str,
                 search: dict, provenance: dict, seed: int = 0, synthetic_samples: bool = False,
                 force: bool = False, reporter: Reporter | None = None) -> Written:
    """Export, verify and bundle an already-fitted ``pipeline`` for ``target``: the stages after the search.

    ``pipeline`` is ``data``'s preprocessor followed by the model's steps
    (:func:`host_pipeline`); ``search`` and
    ``provenance`` are the manifest's sections saying how the model was chosen
    and from what (:func:`search_record`, :func:`edgeml.bundle.provenance_record`). Every
    artifact ``target`` asks for is made and verified through
    ``edgeml_runtime``, the sample rows are stored, the build report
    (``report.html``, ``report.json``: :mod:`edgeml.report`) is written, and the folder is moved to
    ``out`` (replacing a bundle there only with ``force``) beside its
    ``.tar.gz``. :func:`build` runs the search and then this; a benchmark
    that trains its own model calls it directly.
    """
    report = reporter or Reporter()
    bundle.check_name(name)
    with bundle.locked(Path(out)):
        return _write_locked(Path(out), pipeline, data, target, name, version, search, provenance, seed,
                             synthetic_samples, force, report)


def _write_locked(out: Path, pipeline: Pipeline, data: Prepared, target: TargetProfile, name: str, version: str,
                  search: dict, provenance: dict, seed: int, synthetic_samples: bool, force: bool,
                  report: Reporter, held_out: tuple | None = None) -> Written:
    """:func:`write_bundle`'s work, holding the lock on ``out``: stage, verify, put in place."""
    stage = bundle.staging_dir(out, force)
    try:
        writer = BundleWriter(stage, name=name, version=version, target=target.to_dict(), task=data.task,
                              label=data.label, schema=data.inputs, classes=tuple(data.classes or ()),
                              dropped=[{"name": d.name, "reason": d.reason} for d in data.schema.dropped])
        threshold = _decide(writer, data, pipeline, search["metric"], held_out)
        _record(writer, data, pipeline, held_out, threshold)
        writer.record("search", search)
        writer.record("provenance", provenance)
        exported = make_artifacts(pipeline, data.inputs, data.task, data.classes, target, data.calibration,
                                  name=name)
        _report_export(report, exported)
        evidence = Evidence(data.split.test, host_output(pipeline, data.features["test"], data.task),
                            data.y["test"], data.task, tuple(data.classes or ()), target, data.calibration,
                            threshold)
        outcomes = [ship(writer, made, evidence, inputs=exported.inputs, outputs=exported.outputs)
                    for made in exported.made]
        _report_verified(report, outcomes)
        firmware = _plain_c(report, target, exported, data) if target.firmware == "c" and outcomes[0].artifact \
            else None
        require_something_runs(target, outcomes, firmware and firmware.get("reason"))
        manifest = _samples(writer, stage, data, seed, synthetic_samples)
        split = _split_report(data, pipeline, manifest)
        page, numbers = make_report(manifest.to_dict(), split, pipeline, data.features["test"], data.y["test"],
                                    seed=seed, firmware=firmware)
        writer.add_report({"html": (HTML, page), "data": (JSON, numbers)})
        manifest = writer.write()
        archive = bundle.finish(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return Written(manifest, archive, split)


def _plain_c(report: Reporter, target: TargetProfile, exported: Exported, data: Prepared) -> dict:
    """The plain C of the profile's firmware form, sized from ``model.onnx``: ``{"form": "c", "flash", "ram"}``
    when it can be written within the flash budget (its size on the terminal), else ``{"form": "c", "reason"}``."""
    from edgeml.export.c import c_form

    output = exported.outputs.get("probabilities") or exported.outputs.get("value")
    try:
        form = c_form(exported.model.data, data.inputs, output, data.task, tuple(data.classes or ()))
    except ExportError as exc:
        why = str(exc)
    else:
        limit = target.budgets.max_model_bytes
        if limit is None or form.flash <= limit:
            report.stage("verify", f"plain C (edgeml firmware, {target.name}'s form): about "
                                   f"{form.flash / 1024:.1f} KiB of flash and {form.ram:,} B of stack")
            return {"form": "c", "flash": form.flash, "ram": form.ram}
        why = f"about {form.flash:,} bytes of flash, over max_model_bytes {limit:,}"
    report.notice(f"plain C cannot be written for {target.name}: {why}")
    return {"form": "c", "reason": why}


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
    for text in data.split.notes:
        report.notice(text)


def _search(config: BuildConfig, target: TargetProfile, data: Prepared, report: Reporter):
    learners = _learners(config, target, data.task)
    cluster = ClusterSettings(config.backend, config.cluster_address, config.concurrent_trials)
    settings = SearchSettings(task=data.task, learners=learners, metric=config.metric, time_budget=config.time_budget,
                              max_iter=config.max_iter, seed=config.seed, cluster=cluster)
    budget = f"{config.max_iter} trials" if config.max_iter else f"{config.time_budget:g} s"
    where = "" if cluster.is_local else (f" · {cluster.concurrent_trials} trials at once on {cluster.backend}"
                                         f" ({cluster.address or 'its default master'})")
    report.stage("search", f"{', '.join(learners)} · metric {describe_metric(data.task, config.metric)} · "
                           f"budget {budget}{where}")
    budgets = target_budget(target)
    measure = TrialMeasure.for_target(target, data, predict=True)  # TFLite trials predicted, the frontier exported
    validation = choose_validation(len(data.y["train"]) + len(data.y["valid"]), data.task,
                                   valid_rows=len(data.y["valid"]), in_time_order=data.schema.time_column is not None,
                                   columns=data.X["train"].shape[1], time_budget=settings.seconds,
                                   folds=config.folds, method=config.validation)
    report.stage("search", f"validation: {validation.describe()}; the shipped model is refitted on all "
                           f"{validation.rows if validation.is_cv else len(data.fit_rows):,} train+validation rows")
    result = run_search(data.X["train"], data.y["train"], data.X["valid"], data.y["valid"], settings,
                        progress=report.trial, budgets=budgets, measure=measure, validation=validation)
    for text in result.notes:
        report.notice(text)
    report.frontier(result.frontier, budgets)
    return result, budgets


def _report_export(report: Reporter, exported: Exported) -> None:
    model = exported.model
    opsets = ", ".join(f"{d} {v}" for d, v in sorted(model.opset.items()))
    report.stage("export", f"model.onnx {len(model.data) / 1024:.1f} KiB (ONNX fp32; opsets {opsets})")


def _report_verified(report: Reporter, outcomes: list[Outcome]) -> None:
    """What became of every artifact: model.onnx's parity, what was not shipped and why, then the others."""
    p = outcomes[0].parity
    if p is not None:
        report.stage("verify", f"{p.rows:,} test rows through edgeml_runtime: {p.label_mismatches} label "
                               f"mismatches, max difference {p.max_abs_diff:.2g} (allowed {p.tolerance})")
    by_reason: dict[str, list[str]] = {}
    for n in (o.not_shipped for o in outcomes[1:] if o.not_shipped):
        by_reason.setdefault(n.reason, []).append(f"{n.format} {n.precision}")
    for reason, which in by_reason.items():
        report.notice(f"not shipped: {', '.join(which)}: {reason}")
    for a in (o.artifact for o in outcomes[1:] if o.artifact):
        d = a.metric_drop
        how = (f"{d.metric} {d.value:.4g} vs {d.fp32:.4g} in fp32 (drop {d.drop:.3g}, allowed "
               f"{d.allowed:.3g})" if d else "identical to the host pipeline")
        report.stage("verify", f"{a.path} {a.bytes / 1024:.1f} KiB ({a.format} {a.precision}) "
                               f"through edgeml_runtime: {how}")


def _samples(writer: BundleWriter, stage: Path, data: Prepared, seed: int, synthetic: bool) -> Manifest:
    """Store the sample rows with every shipped artifact's outputs on them; the finished manifest."""
    shipped = writer.write()  # every verified artifact on disk, so that the rows can be scored through each
    writer.record("samples", store_samples(stage, shipped, data, seed=seed, synthetic=synthetic))
    return writer.write()


def _held_out(data: Prepared, result: SearchResult, config: BuildConfig) -> tuple:
    """The chosen configuration's predictions on rows it was not fitted on (out-of-fold under cross-validation,
    the validation split under a holdout) and their labels: the shipped model has seen every train+validation
    row, so the validation metrics come from these."""
    output = held_out_predictions(result.learner, result.config, data.X["train"], data.y["train"], data.X["valid"],
                                  data.y["valid"], result.validation, data.task, seed=config.seed)
    y = data.fit_matrix()[1] if result.validation.is_cv else data.y["valid"]
    return output, y


def _decide(writer: BundleWriter, data: Prepared, pipeline: Pipeline, metric: str,
            held_out: tuple | None = None) -> float | None:
    """A binary classifier's decision threshold (:func:`_decision`) handed to the writer; ``None`` for other
    tasks, whose labels are argmax."""
    decision = _decision(data, pipeline, metric, held_out)
    if decision is None:
        return None
    writer.record("decision", decision.to_dict())
    return decision.threshold


def _decision(data: Prepared, pipeline: Pipeline, metric: str, held_out: tuple | None = None):
    """A binary classifier's :class:`~edgeml.search.threshold.Decision`, tuned on held-out predictions
    (out-of-fold under cross-validation; ``pipeline`` on the validation split without ``held_out``)."""
    if data.task != "classification" or len(data.classes or ()) != 2:
        return None
    output, y = held_out if held_out is not None else (host_output(pipeline, data.features["valid"], data.task),
                                                       data.y["valid"])
    return decision_for(output, y, np.concatenate([data.y["train"], data.y["valid"]]), metric)


def _record(writer: BundleWriter, data: Prepared, pipeline: Pipeline, held_out: tuple | None = None,
            threshold: float | None = None) -> None:
    """Hand the validation metrics and the drift reference to the bundle writer.

    With ``held_out`` (predictions of the chosen configuration on rows it was not fitted on, and their labels)
    the validation metrics are those, and the reference's output is the shipped pipeline on the test split,
    rows it has not seen (under ``--refit-all`` it has); without, both come from ``pipeline`` on the
    validation split (a pipeline fitted on the training split alone, as a benchmark may hand in)."""
    if held_out is None:
        output, y = host_output(pipeline, data.features["valid"], data.task), data.y["valid"]
        shipped, split = output, "valid"
    else:
        (output, y), split = held_out, "test"
        shipped = host_output(pipeline, data.features["test"], data.task)
    predicted, probabilities = labels_of(data.task, output, threshold)
    writer.record("valid_metrics", task_metrics(data.task, y, predicted, probabilities))
    writer.record("reference", bundle.build_reference(data.fit_features(), data.inputs,
                                                      labels_of(data.task, shipped, threshold)[0], data.task,
                                                      data.classes, output_split=split))


def _refit_all(config: BuildConfig, data: Prepared, result: SearchResult, report: Reporter, held_out: tuple):
    """``--refit-all``: the chosen model's test metrics as they are now (at the decision threshold the bundle will
    carry), then its configuration refitted on every labelled row (train, validation and test; the preprocessing
    stays the one fitted on train+validation)."""
    pipeline = host_pipeline(data, result.model)
    decision = _decision(data, pipeline, result.metric, held_out)
    predicted, probabilities = labels_of(data.task, host_output(pipeline, data.features["test"], data.task),
                                         decision.threshold if decision is not None else None)
    before = task_metrics(data.task, data.y["test"], predicted, probabilities)
    X, y = data.fit_matrix(with_test=True)
    model = refit(result.learner, result.config, X, y, data.task).estimator
    report.notice(f"--refit-all: the model is refitted on all {len(y):,} labelled rows after evaluation; the test "
                  "metrics in search.refit were measured before that refit, those of the artifacts after it (on "
                  "rows the model has seen: they judge only the reduced precisions' drops)")
    return model, {"all_rows": True, "rows": len(y), "metrics_measured_before_refit": True,
                   "test_metrics_before_refit": before}


def search_record(result: SearchResult, budgets: HardwareBudget, refit: dict | None = None) -> dict:
    """The manifest's ``search`` section for a model chosen by :func:`~edgeml.search.automl.run_search`
    (``refit``: what ``--refit-all`` did, see :func:`_refit_all`)."""
    validation = result.validation.to_dict() if result.validation else None
    return {
        "validation": validation,
        "fitted_rows": result.fitted_rows,
        "refit": refit or {"all_rows": False, "rows": result.fitted_rows, "metrics_measured_before_refit": False,
                           "test_metrics_before_refit": None},
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
        **({"frontier_check": result.check.to_dict()} if result.check is not None else {}),
    }


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


__all__ = ["BuildResult", "Reporter", "STAGES", "Written", "build", "host_pipeline", "search_record", "write_bundle"]
