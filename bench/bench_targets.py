"""Per-target benchmark: every profile's artifacts on ai4i2020 and ccpp, measured here in edgeml_runtime.

For each target profile and data set it builds a bundle the way the profile
asks — a hardware-aware search within the profile's estimators and budgets,
then every (format, precision) artifact the profile lists — and, for each
artifact, reports: file size, one-row latency and batch throughput measured
on this machine through ``edgeml_runtime.Model`` (raw records in, one
inference thread), the cost model's predicted one-row latency on the target,
and the test metric against the fp32 artifact (accuracy for classification,
RMSE for regression, with the drop the profile allows).

When the profile allows the MLP, two more bundles are measured: an MLP-only
search, and an MLP with enough weights for int8 and fp16 to matter (two
hidden layers, 128 and 64 wide by default: about 9,500 weights), trained
directly — the searched MLPs on these small tables are often a few hundred
weights, where int8 only adds quantization nodes.

Bundles are made by :func:`make_bundle`, which calls the library stages
directly; once ``edgeml build`` writes per-target artifacts, replace its body
with a call to ``edgeml.build.build`` (see the comment there) — the
measurements read only the bundle.

    .venv/bin/python bench/bench_targets.py [--max-iter 12] [--targets rpi4,jetson-nano] [--calls 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
RESULTS = ROOT / "bench" / "results" / "targets.md"
DATA = {
    "ai4i2020": ("ai4i2020.csv", "Machine failure", ("UDI", "Product ID", "TWF", "HDF", "PWF", "OSF", "RNF")),
    "ccpp": ("ccpp.csv", "PE", ()),
}


def make_bundle(profile, data_name: str, learners: tuple[str, ...] | None, out: Path, max_iter: int, seed: int,
                mlp_layers: str | None = None) -> Path:
    """Build a bundle for ``profile`` with every artifact it asks for; returns the bundle folder.

    With ``mlp_layers`` (e.g. ``"128x64"``) the model is that MLP, trained
    directly instead of searched.

    After integration this is one call::

        from edgeml.build import build
        from edgeml.config import BuildConfig
        file, label, drop = DATA[data_name]
        return build(BuildConfig(data=str(DATASETS / file), label=label, drop=drop, target=profile.name,
                                 estimators=learners or (), max_iter=max_iter, seed=seed, out=str(out),
                                 force=True)).bundle_dir
    """
    from sklearn.pipeline import Pipeline

    from edgeml.bundle import writer as bundle
    from edgeml.data.ingest import read_table
    from edgeml.data.prepare import prepare
    from edgeml.export.onnx import align_thresholds, opset_of, output_names, to_onnx
    from edgeml.export.quantize import CompileOptions, NotApplicable, compile_artifact
    from edgeml.models.estimators import model_steps
    from edgeml.search.automl import SearchSettings, run_search, usable_learners
    from edgeml.targets.measure import TrialMeasure, target_budget

    file, label, drop = DATA[data_name]
    data = prepare(read_table(DATASETS / file).frame, label, drop=drop, seed=seed)
    schema, inputs, pre, X, y, classes = data.schema, data.inputs, data.preprocessor, data.X, data.y, data.classes
    chosen = usable_learners(learners or profile.estimators, schema.task)
    if mlp_layers:
        from edgeml.models.estimators import StandardizedMLPClassifier, StandardizedMLPRegressor

        cls = StandardizedMLPClassifier if classes else StandardizedMLPRegressor
        model = cls(hidden_layer_sizes=tuple(int(w) for w in mlp_layers.split("x")), max_iter=60,
                    n_iter_no_change=5, random_state=seed).fit(X["train"], y["train"])
        search = {"learners": ["mlp"], "best_learner": f"mlp {mlp_layers}", "trials": [], "frontier": []}
    else:
        settings = SearchSettings(task=schema.task, learners=chosen, max_iter=max_iter, seed=seed)
        budget = target_budget(profile, data)
        result = run_search(X["train"], y["train"], X["valid"], y["valid"], settings, budgets=budget,
                            measure=TrialMeasure.from_budget(budget, schema.task, X["train"]))
        model = result.model
        search = {"learners": list(chosen), "best_learner": result.learner, "best_config": result.config,
                  "metric": result.metric, "trials": [t.to_dict() for t in result.trials],
                  "frontier": [t.iteration for t in result.frontier]}
    pipeline = align_thresholds(Pipeline([("pre", pre), *model_steps(model)]))
    fp32 = to_onnx(pipeline, inputs, schema.task, name=data_name)

    out.mkdir(parents=True, exist_ok=True)
    options = CompileOptions.from_target(profile, data.calibration)
    entries, skipped = [], []
    (out / "model.onnx").write_bytes(fp32.SerializeToString())
    entries.append(bundle.describe_artifact(out, "model.onnx", "onnx", "fp32", engine="onnxruntime",
                                            opset=opset_of(fp32), outputs=output_names(fp32, schema.task)))
    for fmt in profile.formats:
        for precision in profile.precisions:
            if (fmt, precision) == ("onnx", "fp32") and profile.ort_optimization == "none":
                continue  # model.onnx is that artifact
            if fmt == "tflite":  # written from the pipeline, not compiled from ONNX: bench_tflite.py measures it
                skipped.append({"format": fmt, "precision": precision, "reason": "measured by bench_tflite.py"})
                continue
            try:
                art = compile_artifact(fp32, fmt, precision, options)
            except NotApplicable as exc:
                skipped.append(exc.to_dict())
                continue
            name = art.file_name("model.opt" if (fmt, precision) == ("onnx", "fp32") else "model")
            (out / name).write_bytes(art.data)
            for extra, blob in art.extra_files.items():
                (out / f"{Path(name).stem}.{extra}").write_bytes(blob)
            fields = art.manifest_fields()
            entries.append(bundle.describe_artifact(out, name, fields.pop("format"), fields.pop("precision"),
                                                    outputs=output_names(fp32, schema.task), **fields))
    bundle.write_manifest(out, {
        "name": data_name, "version": "1", "target": profile.to_dict(), "task": schema.task, "label": label,
        "inputs": inputs.to_list(), "classes": list(classes) or None, "artifacts": entries,
        "not_applicable": skipped, "search": search,
    })
    (out / "test.json").write_text(data.split.test.to_json(orient="split", date_format="iso"))
    (out / "structure.json").write_text(json.dumps(_structure(model)))
    return out


def _structure(model) -> dict:
    from edgeml.search.costmodel import structure_of

    return structure_of(model).to_dict()


def _ort_engine() -> None:
    """Until the runtime registers an engine for ``.ort`` files, register one here (onnxruntime reads both)."""
    from edgeml_runtime.engines import OnnxEngine, engine_formats, register_engine

    if "ort" not in engine_formats():
        register_engine(type("OrtFormatEngine", (OnnxEngine,), {"format": "ort"}))


def measure(folder: Path, profile, calls: int) -> list[dict]:
    import pandas as pd

    from edgeml.export.quantize import metric_drop
    from edgeml.models.structure import Structure
    from edgeml.search.costmodel import load_cost_model
    from edgeml.verify.metrics import classification_metrics, regression_metrics
    from edgeml_runtime import Model

    manifest = json.loads((folder / "manifest.json").read_text())
    test = pd.read_json(folder / "test.json", orient="split", dtype=False)
    names = [c["name"] for c in manifest["inputs"]]
    columns = {n: test[n].tolist() for n in names}
    records = [{n: columns[n][i] for n in names} for i in range(min(len(test), 500))]
    truth = test[manifest["label"]].tolist()
    task = manifest["task"]
    structure = Structure(**json.loads((folder / "structure.json").read_text()))
    predicted = load_cost_model().predict_ms(structure, sum(len(c["features"]) for c in manifest["inputs"]),
                                             profile.budgets.speed_factor or 1.0)
    rows, reference = [], None
    for a in manifest["artifacts"]:
        model = Model.load(folder, artifact=a["path"])
        one = [[r] for r in records]
        for r in one[:100]:
            model.predict(r)
        times = []
        for i in range(calls):
            t = time.perf_counter_ns()
            model.predict(one[i % len(one)])
            times.append(time.perf_counter_ns() - t)
        batch = min(_seconds(model.predict, columns) for _ in range(5))
        got = model.predict(columns)
        if task == "classification":
            index = {c: i for i, c in enumerate(manifest["classes"])}
            metrics = classification_metrics(np.array([index[v] for v in truth]),
                                              np.array([index[v] for v in got.labels]), got.probabilities)
        else:
            metrics = regression_metrics(np.asarray(truth, dtype=float), np.asarray(got.labels, dtype=float))
        reference = reference or metrics
        drop = metric_drop(task, reference, metrics, profile.budgets)
        rows.append({"artifact": a["path"], "format": a["format"], "precision": a["precision"], "bytes": a["bytes"],
                     "one_row_us": statistics.median(times) / 1000, "rows_per_s": len(test) / batch,
                     "predicted_ms": predicted, "metric": drop["metric"], "value": drop["value"],
                     "drop": drop["drop"], "within": drop["within"],
                     "done": "; ".join(a.get("transform", {}).get("done", []))})
    return rows


def _seconds(fn, arg) -> float:
    t = time.perf_counter()
    fn(arg)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-iter", type=int, default=12, help="search trials per bundle (default 12)")
    ap.add_argument("--targets", default="", help="comma-separated profile names (default: every built-in)")
    ap.add_argument("--calls", type=int, default=2000, help="one-row calls per artifact (default 2000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mlp-layers", default="128x64", help="the directly trained MLP's hidden layers (default 128x64)")
    args = ap.parse_args()
    if not DATASETS.is_dir():
        print(f"the real data sets are not at {DATASETS}; this benchmark needs ai4i2020.csv and ccpp.csv",
              file=sys.stderr)
        return 2

    import onnxruntime as ort

    from edgeml.search.costmodel import load_cost_model
    from edgeml.targets.profiles import list_targets, load_target

    _ort_engine()
    profiles = [load_target(n) for n in args.targets.split(",")] if args.targets else list_targets()
    work = Path(tempfile.mkdtemp(prefix="edgeml-targets-"))
    q = load_cost_model().quality["latency"]
    lines = [
        "# Per-target artifacts",
        "",
        f"Produced by `bench/bench_targets.py` on {platform.machine()} ({os.cpu_count()} cores), Python "
        f"{platform.python_version()}, onnxruntime {ort.__version__}. Each bundle: a hardware-aware search of "
        f"{args.max_iter} trials (seed {args.seed}) within the profile's estimators and budgets, then every "
        "artifact the profile asks for. Measured here through `edgeml_runtime.Model` on raw records, one "
        f"inference thread: one-row latency is the median of {args.calls:,} calls; batch is the test split "
        "(1,500 rows for ai4i2020, 962 for ccpp) in one call, best of 5. *Predicted on target* is the cost "
        "model's one-row latency for the model (fitted on fp32 ONNX; R² "
        f"{q['r2']:.2f}, median error {q['median_relative_error']:.0%} on held-out models) times the profile's "
        "`speed_factor`. The metric is on the test split, against the bundle's fp32 artifact: accuracy "
        "(classification) or RMSE (regression); *drop* is accuracy points lost, or relative RMSE added.",
        "",
    ]
    for profile in profiles:
        lines += [f"## {profile.name}", "",
                  f"{profile.description}. Formats {', '.join(profile.formats)}; precisions "
                  f"{', '.join(profile.precisions)}; budgets: {profile.budgets.max_model_bytes:,} bytes, "
                  f"{profile.budgets.latency_budget_ms:g} ms one row, speed factor {profile.budgets.speed_factor:g}.",
                  "",
                  "| data | model | artifact | bytes | fp32 bytes ÷ bytes | one row here (µs) | batch (rows/s) | "
                  "predicted on target (ms) | test metric | drop | within allowed |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        notes = []
        for data_name in DATA:
            runs = [("search", None, None)]
            if "mlp" in profile.estimators:
                runs += [("mlp", ("mlp",), None), ("mlp-fixed", ("mlp",), args.mlp_layers)]
            seen = set()
            for tag, learners, layers in runs:
                print(f"{profile.name}: {data_name} ({tag})…", file=sys.stderr)
                folder = make_bundle(profile, data_name, learners, work / profile.name / f"{data_name}-{tag}",
                                     args.max_iter, args.seed, mlp_layers=layers)
                manifest = json.loads((folder / "manifest.json").read_text())
                learner = manifest["search"]["best_learner"]
                if learner in seen:
                    continue  # the search already picked the MLP
                seen.add(learner)
                trials = manifest["search"]["trials"]
                how = ("trained directly (no search)" if layers else
                       f"{sum(t['feasible'] for t in trials)} of {len(trials)} trials fit the budgets; "
                       f"frontier of {len(manifest['search']['frontier'])} models")
                notes.append(f"{data_name}, {learner}{' (MLP-only search)' if tag == 'mlp' else ''}: {how}. Not made: "
                             + ("; ".join(f"{s['format']} {s['precision']} ({_short(s['reason'])})"
                                          for s in manifest["not_applicable"]) or "nothing") + ".")
                rows = measure(folder, profile, args.calls)
                base = rows[0]["bytes"]
                for r in rows:
                    value = f"{r['metric']} {r['value']:.4f}" if r["metric"] == "accuracy" else f"rmse {r['value']:.3f}"
                    drop = f"{r['drop'] * 100:+.2f} pt" if r["metric"] == "accuracy" else f"{r['drop']:+.2%}"
                    lines.append(
                        f"| {data_name} | {learner} | {r['artifact']} ({r['format']} {r['precision']}) | "
                        f"{r['bytes']:,} | {base / r['bytes']:.2f} | {r['one_row_us']:.1f} | "
                        f"{r['rows_per_s']:,.0f} | {r['predicted_ms']:.3f} | {value} | {drop} | "
                        f"{'yes' if r['within'] else 'NO'} |")
        lines += ["", *(f"* {n}" for n in notes), ""]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def _short(reason: str) -> str:
    return reason.split(":")[0].split(";")[0]


if __name__ == "__main__":
    sys.exit(main())
