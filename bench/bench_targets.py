"""Per-target benchmark: every profile's artifacts on ai4i2020 and ccpp, measured here in edgeml_runtime.

For each target profile and data set it builds a bundle with ``edgeml build``
(:func:`edgeml.build.build`) — a hardware-aware search within the profile's
estimators and budgets, then every (format, precision) artifact the profile
lists, each verified — and, for each artifact, reports: file size, one-row
latency and batch throughput measured on this machine through
``edgeml_runtime.Model`` (raw records in, one inference thread), the cost
model's predicted one-row latency on the target, and the test metric against
the fp32 artifact (accuracy for classification, RMSE for regression, with
the drop the profile allows).

When the profile allows the MLP, two more bundles are measured: an MLP-only
search, and an MLP with enough weights for int8 and fp16 to matter (two
hidden layers, 128 and 64 wide by default: about 9,500 weights), trained
directly and bundled by :func:`edgeml.build.write_bundle`, the stages of a
build after its search — the searched MLPs on these small tables are often a
few hundred weights, where int8 only adds quantization nodes. A bundle the
profile cannot have (no model fits its budgets, nothing it runs can be made)
is reported with the build's own reason.

    .venv/bin/python bench/bench_targets.py [--max-iter 12] [--targets rpi4,jetson-nano] [--calls 2000]
    .venv/bin/python bench/bench_targets.py --max-iter 3 --targets rpi4 --calls 50 --results /tmp/t  # smoke
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from common import DATASETS, RESULTS_DIR, model_config, publish, trained_directly

DATA = {
    "ai4i2020": ("ai4i2020.csv", "Machine failure", ("UDI", "Product ID", "TWF", "HDF", "PWF", "OSF", "RNF")),
    "ccpp": ("ccpp.csv", "PE", ()),
}


@dataclass(frozen=True)
class Made:
    """A bundle made for the benchmark, and what measuring it needs that the bundle does not hold."""

    folder: Path
    label: str  #: the model, as the table names it
    structure: object  #: the model's :class:`~edgeml.models.structure.Structure`, for the cost model
    data: object  #: the :class:`~edgeml.data.prepare.Prepared` table, split as the build split it


@cache
def dataset(name: str, seed: int):
    """One data set's table and its preparation, as ``edgeml build`` reads and prepares it (same seed, same split)."""
    from edgeml.data.ingest import read_table
    from edgeml.data.prepare import prepare

    file, label, drop = DATA[name]
    table = read_table(DATASETS / file)
    return table, prepare(table.frame, label, drop=drop, seed=seed)


def make_bundle(profile, data_name: str, learners: tuple[str, ...] | None, out: Path, max_iter: int, seed: int,
                mlp_layers: str | None = None) -> Made:
    """Build a bundle for ``profile`` with every artifact it asks for, as ``edgeml build`` does.

    With ``mlp_layers`` (e.g. ``"128x64"``) the model is that MLP, trained
    directly instead of searched, and bundled by the build's own stages.
    """
    from edgeml.build import build, host_pipeline, write_bundle
    from edgeml.bundle import provenance_record
    from edgeml.config import BuildConfig
    from edgeml.search.costmodel import structure_of

    table, data = dataset(data_name, seed)
    if not mlp_layers:
        file, label, drop = DATA[data_name]
        result = build(BuildConfig(data=str(DATASETS / file), label=label, drop=drop, target=profile.name,
                                   estimators=learners or (), max_iter=max_iter, seed=seed, out=str(out),
                                   name=data_name, force=True))
        return Made(result.bundle_dir, result.manifest.search.best_learner, structure_of(result.pipeline), data)
    from edgeml.models.estimators import StandardizedMLPClassifier, StandardizedMLPRegressor

    cls = StandardizedMLPClassifier if data.classes else StandardizedMLPRegressor
    started = time.monotonic()
    model = cls(hidden_layer_sizes=tuple(int(w) for w in mlp_layers.split("x")), max_iter=60,
                n_iter_no_change=5, random_state=seed).fit(data.X["train"], data.y["train"])
    pipeline = host_pipeline(data, model)
    write_bundle(out, pipeline, data, profile, name=data_name, version="1",
                 search=trained_directly("mlp", model, data, profile, time.monotonic() - started),
                 provenance=provenance_record(table, data, seed, "mlp", model, model_config(model)),
                 seed=seed, force=True)
    return Made(out, f"mlp {mlp_layers}", structure_of(pipeline), data)


def measure(made: Made, profile, calls: int) -> list[dict]:
    """Each artifact of the bundle timed and scored through ``edgeml_runtime.Model`` on the test split."""
    from edgeml.search.costmodel import load_cost_model
    from edgeml.verify.metrics import classification_metrics, metric_drop, regression_metrics
    from edgeml_runtime import Model
    from edgeml_runtime.bundle import read_manifest

    manifest = read_manifest(made.folder)
    test, truth = made.data.split.test, made.data.y["test"]
    names = manifest.schema.names
    columns = {n: test[n].tolist() for n in names}
    records = [{n: columns[n][i] for n in names} for i in range(min(len(test), 500))]
    predicted = load_cost_model().predict_ms(made.structure, len(manifest.schema.features),
                                             profile.budgets.speed_factor or 1.0)
    rows, reference = [], None
    for a in manifest.artifacts:
        model = Model.load(made.folder, artifact=a.path)
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
        if manifest.task == "classification":
            index = {c: i for i, c in enumerate(manifest.classes)}
            metrics = classification_metrics(truth, np.array([index[v] for v in got.labels]), got.probabilities)
        else:
            metrics = regression_metrics(truth, np.asarray(got.labels, dtype=float))
        reference = reference or metrics
        drop = metric_drop(manifest.task, reference, metrics, profile.budgets)
        rows.append({"artifact": a.path, "format": a.format, "precision": a.precision, "bytes": a.bytes,
                     "one_row_us": statistics.median(times) / 1000, "rows_per_s": len(test) / batch,
                     "predicted_ms": predicted, "metric": drop["metric"], "value": drop["value"],
                     "drop": drop["drop"], "within": drop["within"],
                     "done": "; ".join(a.transform.done) if a.transform else ""})
    return rows


def _seconds(fn, arg) -> float:
    t = time.perf_counter()
    fn(arg)
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-iter", type=int, default=12, help="search trials per bundle (default 12)")
    ap.add_argument("--targets", default="", help="comma-separated profile names (default: every built-in)")
    ap.add_argument("--calls", type=int, default=2000, help="one-row calls per artifact (default 2000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mlp-layers", default="128x64", help="the directly trained MLP's hidden layers (default 128x64)")
    ap.add_argument("--results", type=Path, default=RESULTS_DIR, help="where targets.md goes (default: %(default)s)")
    ap.add_argument("--work", type=Path, help="where the bundles are built (default: a new temporary folder)")
    args = ap.parse_args(argv)
    missing = [f for f, _, _ in DATA.values() if not (DATASETS / f).is_file()]
    if missing:
        print(f"{', '.join(missing)} not found in {DATASETS}; this benchmark needs the real data sets",
              file=sys.stderr)
        return 2

    import onnxruntime as ort

    from edgeml.search.costmodel import load_cost_model
    from edgeml.targets.profiles import list_targets, load_target

    profiles = [load_target(n) for n in args.targets.split(",")] if args.targets else list_targets()
    work = args.work or Path(tempfile.mkdtemp(prefix="edgeml-targets-"))
    q = load_cost_model().quality["latency"]
    lines = [
        "# Per-target artifacts",
        "",
        f"Produced by `bench/bench_targets.py` on {platform.machine()} ({os.cpu_count()} cores), Python "
        f"{platform.python_version()}, onnxruntime {ort.__version__}. Each bundle: `edgeml build` with a "
        f"hardware-aware search of {args.max_iter} trials (seed {args.seed}) within the profile's estimators and "
        "budgets, then every artifact the profile asks for, each verified. Measured here through "
        "`edgeml_runtime.Model` on raw records, one inference thread: one-row latency is the median of "
        f"{args.calls:,} calls; batch is the test split (1,500 rows for ai4i2020, 962 for ccpp) in one call, best "
        "of 5. *Predicted on target* is the cost model's one-row latency for the model (fitted on fp32 ONNX; R² "
        f"{q['r2']:.2f}, median error {q['median_relative_error']:.0%} on held-out models) times the profile's "
        "`speed_factor`. The metric is on the test split, against the bundle's fp32 artifact: accuracy "
        "(classification) or RMSE (regression); *drop* is accuracy points lost, or relative RMSE added. "
        "A model.onnx marked *reference* is not run by the target (its formats lack onnx and ort): the "
        "artifacts after it are measured against it.",
        "",
    ]
    for profile in profiles:
        lines += profile_section(profile, work / profile.name, args)
    publish("targets", "\n".join(lines), args.results)
    return 0


def profile_section(profile, work: Path, args) -> list[str]:
    """One profile's table: every bundle it gets on each data set, each artifact a row; then a note per bundle."""
    from edgeml.errors import ExportError, SearchError

    b = profile.budgets
    limits = [f"{b.max_model_bytes:,} bytes" if b.max_model_bytes else "",
              f"{b.max_arena_bytes:,} bytes of tensor arena" if b.max_arena_bytes else "",
              f"{b.latency_budget_ms:g} ms one row" if b.latency_budget_ms else "",
              f"speed factor {b.speed_factor:g}" if b.speed_factor else ""]
    lines = [f"## {profile.name}", "",
             f"{profile.description}. Formats {', '.join(profile.formats)}; precisions "
             f"{', '.join(profile.precisions)}; budgets: {', '.join(x for x in limits if x) or 'none'}.", "",
             "| data | model | artifact | bytes | fp32 bytes ÷ bytes | one row here (µs) | batch (rows/s) | "
             "predicted on target (ms) | test metric | drop | within allowed |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    notes = []
    runs = [("search", None, None)]
    if "mlp" in profile.estimators:
        runs += [("mlp", ("mlp",), None), ("mlp-fixed", ("mlp",), args.mlp_layers)]
    for data_name in DATA:
        seen = set()
        for tag, learners, layers in runs:
            print(f"{profile.name}: {data_name} ({tag})…", file=sys.stderr)
            try:
                made = make_bundle(profile, data_name, learners, work / f"{data_name}-{tag}", args.max_iter,
                                   args.seed, mlp_layers=layers)
            except (SearchError, ExportError) as exc:  # no model fits the budgets; nothing it runs can be made
                notes.append(f"{data_name} ({_RUNS[tag]}): no bundle: {exc}")
                continue
            if made.label in seen:
                continue  # the search already picked the MLP
            seen.add(made.label)
            notes.append(_note(made, data_name, tag))
            lines += _rows(made, data_name, measure(made, profile, args.calls), _runs_onnx(profile))
    return [*lines, "", *(f"* {n}" for n in notes), ""]


_RUNS = {"search": "search", "mlp": "MLP-only search", "mlp-fixed": "MLP trained directly"}


def _runs_onnx(profile) -> bool:
    return bool({"onnx", "ort"} & set(profile.formats))


def _note(made: Made, data_name: str, tag: str) -> str:
    from edgeml_runtime.bundle import read_manifest

    manifest = read_manifest(made.folder)
    search = manifest.search
    how = ("trained directly (no search)" if tag == "mlp-fixed" else
           f"{sum(t.feasible for t in search.trial_log)} of {search.trials} trials fit the budgets; "
           f"frontier of {len(search.frontier)} models")
    skipped = "; ".join(f"{s.format} {s.precision} ({_short(s.reason)})" for s in manifest.not_shipped)
    return (f"{data_name}, {made.label}{' (MLP-only search)' if tag == 'mlp' else ''}: {how}. "
            f"Not made: {skipped or 'nothing'}.")


def _rows(made: Made, data_name: str, rows: list[dict], runs_onnx: bool) -> list[str]:
    out, base = [], rows[0]["bytes"]
    for r in rows:
        value = f"{r['metric']} {r['value']:.4f}" if r["metric"] == "accuracy" else f"rmse {r['value']:.3f}"
        drop = f"{r['drop'] * 100:+.2f} pt" if r["metric"] == "accuracy" else f"{r['drop']:+.2%}"
        role = ", reference" if r["artifact"] == "model.onnx" and not runs_onnx else ""
        out.append(f"| {data_name} | {made.label} | {r['artifact']} ({r['format']} {r['precision']}{role}) | "
                   f"{r['bytes']:,} | {base / r['bytes']:.2f} | {r['one_row_us']:.1f} | {r['rows_per_s']:,.0f} | "
                   f"{r['predicted_ms']:.3f} | {value} | {drop} | {'yes' if r['within'] else 'NO'} |")
    return out


def _short(reason: str) -> str:
    return reason.split(":")[0].split(";")[0]


if __name__ == "__main__":
    sys.exit(main())
