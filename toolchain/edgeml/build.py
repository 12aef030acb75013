"""``edgeml build``: data in, verified bundle out.

One function, :func:`build`, runs the stages in order — ingest, schema,
split and preprocessing, search, export, verify, bundle — each a call into its
own module with plain values. Progress goes to a :class:`Reporter`.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from . import bundle as bundles
from edgeml_runtime.bundle import read_manifest

from .config import BuildConfig
from .errors import BundleError, ConfigError, DataError, ExportError
from .artifacts import TestSplit, make_artifacts
from .export.onnx import align_thresholds, opset_of, output_names, to_onnx
from .ingest import Table, read_table
from .learners import LEARNERS, model_steps
from .metrics import classification_metrics, regression_metrics
from .preprocess import (
    describe_inputs,
    encode_frame,
    encode_labels,
    feature_frame,
    label_classes,
    make_preprocessor,
    split_frame,
)
from .reference import build_reference
from .schema import clean_labels, infer_schema
from .search import SearchSettings, Trial, run_search, usable_learners
from .trials import HardwareBudget
from .targets import TargetProfile, load_target
from .verify import require_parity, verify_artifact

#: What FLAML optimises for metric "auto".
_AUTO_METRIC = {"classification": "roc_auc for two classes, log_loss for more", "regression": "r2"}

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
    manifest: dict
    seconds: float
    pipeline: Pipeline  # the host pipeline the artifacts were verified against (not persisted)


def build(config: BuildConfig, reporter: Reporter | None = None) -> BuildResult:
    report = reporter or Reporter()
    started = time.monotonic()
    target = load_target(config.target)

    table, label = _ingest(config)
    report.stage("ingest", f"{table.rows:,} rows × {table.frame.shape[1]} columns from {table.source} ({table.format})")

    schema = infer_schema(table.frame, label, task=config.task, drop=config.drop, time_column=config.time_column)
    for text in schema.notices:
        report.notice(text)
    frame = clean_labels(table.frame, schema)
    kinds = pd.Series([c.kind for c in schema.columns]).value_counts()
    report.stage("schema", f"{len(schema.columns)} inputs ({', '.join(f'{n} {k}' for k, n in kinds.items())}); "
                           f"task {schema.task}, label {label!r}")

    split = split_frame(frame, label, schema.task, seed=config.seed, time_column=schema.time_column)
    inputs = describe_inputs(schema.columns, split.train)
    features = {part: feature_frame(getattr(split, part), inputs, f"the {part} split") for part in ("train", "valid", "test")}
    pre = make_preprocessor(inputs).fit(features["train"])
    X = {part: pre.transform(f) for part, f in features.items()}
    if schema.task == "classification":
        classes = label_classes(frame[label])
        y = {part: encode_labels(getattr(split, part)[label], classes) for part in X}
    else:
        classes = ()
        y = {part: pd.to_numeric(getattr(split, part)[label]).to_numpy(np.float64) for part in X}
    how = "in time order" if schema.time_column else ("stratified" if schema.task == "classification" else "shuffled")
    report.stage("split", " · ".join(f"{k} {v:,}" for k, v in split.sizes.items()) + f" ({how}); {X['train'].shape[1]} model features")

    learners = _learners(config, target, schema.task)
    settings = SearchSettings(task=schema.task, learners=learners, metric=config.metric, time_budget=config.time_budget,
                              max_iter=config.max_iter, seed=config.seed)
    budget = f"{config.max_iter} trials" if config.max_iter else f"{config.time_budget:g} s"
    metric = config.metric if config.metric != "auto" else f"auto ({_AUTO_METRIC[schema.task]})"
    report.stage("search", f"{', '.join(learners)} · metric {metric} · budget {budget}")
    budgets = HardwareBudget.from_target(target, n_inputs=len(inputs.features))
    calibration = encode_frame(split.train, inputs, "the training split")
    if budgets.tflite_precisions:  # trials are measured alone; the file also holds the preprocessing and metadata
        from .export.tflite import overhead_bytes

        # fp16 keeps the preprocessing in float32, so it adds what it adds to fp32.
        extra = {p: overhead_bytes(pre, inputs, schema.task, classes, "int8" if p == "int8" else "fp32", calibration)
                 for p in budgets.tflite_precisions}
        budgets = replace(budgets, tflite_overhead_bytes=tuple(extra.items()))
    result = run_search(X["train"], y["train"], X["valid"], y["valid"], settings, progress=report.trial,
                        budgets=budgets)
    report.frontier(result.frontier, budgets)
    pipeline = align_thresholds(Pipeline([("pre", pre), *model_steps(result.model)]))

    name = config.name or _default_name(config, table)
    out, version = _destination(config, name)
    stage = bundles.staging_dir(out, config.force)
    try:
        model = to_onnx(pipeline, inputs, schema.task, name=name)
        (stage / "model.onnx").write_bytes(model.SerializeToString())
        artifact = bundles.describe_artifact(stage, "model.onnx", "onnx", "fp32", engine="onnxruntime",
                                             opset=opset_of(model), outputs=output_names(model, schema.task),
                                             inputs=inputs.features)
        opsets = ", ".join(f"{d} {v}" for d, v in sorted(artifact["opset"].items()))
        report.stage("export", f"model.onnx {artifact['bytes'] / 1024:.1f} KiB (ONNX fp32; opsets {opsets})")
        runs_onnx = bool({"onnx", "ort"} & set(target.formats))  # else model.onnx is the reference only
        if runs_onnx and budgets.max_model_bytes is not None and artifact["bytes"] > budgets.max_model_bytes:
            raise ExportError(
                f"model.onnx is {artifact['bytes']:,} bytes, over target {target.name}'s max_model_bytes "
                f"{budgets.max_model_bytes:,} once preprocessing is included; raise the budget in a profile "
                "that extends this one, or drop high-cardinality categorical columns"
            )

        manifest = {
            "name": name,
            "version": version,
            "created": bundles.now_utc(),
            "target": target.to_dict(),
            "task": schema.task,
            "label": label,
            "inputs": inputs.to_list(),
            "dropped": [{"name": d.name, "reason": d.reason} for d in schema.dropped],
            "classes": list(classes) if classes else None,
            "artifacts": [artifact],
        }
        bundles.write_manifest(stage, manifest)

        valid_metrics, valid_outputs, host_test = _host_scores(pipeline, features, y, schema.task)
        scores = verify_artifact(stage, "model.onnx", split.test, host_test, schema.task, classes)
        require_parity(scores.parity)
        if schema.task == "classification":
            test_metrics = classification_metrics(y["test"], scores.labels, scores.probabilities)
        else:
            test_metrics = regression_metrics(y["test"], scores.labels)
        p = scores.parity
        report.stage("verify", f"{p.rows:,} test rows through edgeml_runtime: {p.label_mismatches} label mismatches, "
                               f"max difference {p.max_abs_diff:.2g} (allowed {p.tolerance:g})")

        artifact["test_metrics"] = test_metrics
        more = make_artifacts(stage, manifest, model, pipeline, target, calibration,
                              TestSplit(split.test, host_test, y["test"], test_metrics), report.notice)
        if not runs_onnx and not more.artifacts:
            reasons = "; ".join(f"{n['format']} {n['precision']}: {n['reason']}" for n in more.not_shipped)
            if all(n.get("applicable") for n in more.not_shipped):  # made, but lost too much in reduced precision
                fix = ("raise budgets.max_accuracy_drop / max_rmse_increase in a profile that extends this one, "
                       "or give the search more trials (--max-trials) to find a model that quantizes better")
            else:
                fix = (f"allow only model families this target takes with --estimators (its profile lists "
                       f"{', '.join(target.estimators)}), or build for a target with more room")
            raise ExportError(f"nothing target {target.name} runs could be made ({reasons}). To fix: {fix}")
        for a in more.artifacts:
            d = a.get("metric_drop")
            how = (f"{d['metric']} {d['value']:.4g} vs {d['fp32']:.4g} in fp32 (drop {d['drop']:.3g}, allowed "
                   f"{d['allowed']:.3g})" if d else "identical to the host pipeline")
            report.stage("verify", f"{a['path']} {a['bytes'] / 1024:.1f} KiB ({a['format']} {a['precision']}) "
                                   f"through edgeml_runtime: {how}")

        manifest["metrics"] = {"test": test_metrics, "valid": valid_metrics}
        manifest["verification"] = [p.to_dict(), *more.verification]
        manifest["not_shipped"] = more.not_shipped
        manifest["reference"] = build_reference(features["train"], inputs, valid_outputs, schema.task, classes)
        manifest["search"] = {
            "learners": list(learners),
            "metric": result.metric,
            "best_learner": result.learner,
            "best_config": result.config,
            "best_valid_loss": result.best_loss,
            "best_model_bytes": result.model_bytes,
            "best_predicted_latency_ms": result.latency_ms,
            "budgets": asdict(budgets),
            "trials": len(result.trials),
            "seconds": round(result.seconds, 2),
            "trial_log": [t.to_dict() for t in result.trials],
            "frontier": [t.iteration for t in result.frontier],
        }
        manifest["provenance"] = {
            "data": {"source": table.source, "format": table.format, "sha256": table.sha256,
                     "rows": table.rows, "labelled_rows": len(frame), "split": split.sizes},
            "seed": config.seed,
            "model": {"learner": result.learner, "class": type(result.model).__name__, "config": result.config},
            "packages": bundles.package_versions(),
        }
        bundles.write_manifest(stage, manifest)
        archive = bundles.finish(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    report.stage("bundle", f"{out}/ and {archive.name}")
    return BuildResult(out, archive, manifest, time.monotonic() - started, pipeline)


def _ingest(config: BuildConfig) -> tuple[Table, str]:
    if config.data is None:
        from .demo import DEMO_LABEL, demo_frame

        if config.label not in (None, DEMO_LABEL):
            raise DataError(f"--label {config.label!r} was given without --data; the built-in demo data's label is {DEMO_LABEL!r}")
        frame = demo_frame(seed=config.seed)
        digest = hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()
        return Table(frame=frame, source="built-in demo data", format="demo", sha256=digest, rows=len(frame)), DEMO_LABEL
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


def _host_scores(pipeline, features, y, task):
    """Validation metrics, validation predictions (class indices or values), and test scores."""
    if task == "classification":
        proba_valid = pipeline.predict_proba(features["valid"])
        predicted = np.argmax(proba_valid, axis=1)
        return classification_metrics(y["valid"], predicted, proba_valid), predicted, pipeline.predict_proba(features["test"])
    predicted = pipeline.predict(features["valid"])
    return regression_metrics(y["valid"], predicted), predicted, pipeline.predict(features["test"])


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


__all__ = ["BuildResult", "LEARNERS", "Reporter", "STAGES", "build"]
