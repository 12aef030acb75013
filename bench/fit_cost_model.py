"""Fit edgeml's cost model on real exported models timed in edgeml_runtime on this machine.

For each data set (ai4i2020, ccpp and telco-churn from ../shared/datasets when
present, else the built-in demo data) it trains a spread of models of every
family — LightGBM, XGBoost, random forest, extra trees, linear, MLP — from one
tree to hundreds and from a handful of weights to tens of thousands, bundles
each whole pipeline exactly as ``edgeml build`` does
(:func:`edgeml.build.write_bundle`: exported to ONNX and verified through the
runtime, for a profile of this machine that asks for the fp32 ONNX model
only), loads it with ``edgeml_runtime.Model`` and measures the median
one-row latency of ``Model.predict([record])`` on raw records (one inference
thread). It also exports each estimator alone to measure the bytes it adds.

Then it fits the latency and size models of ``edgeml.search.costmodel`` (non-negative
least squares on relative error) on three quarters of the points, reports
R² and the relative errors on the held-out quarter, and writes the fitted
coefficients and that fit quality to ``toolchain/edgeml/search/cost_model.json``
(committed; tests load it and never time anything) and the points to
``bench/results/cost_model.md`` and ``cost_model_points.json``; with ``--out``
elsewhere, all three go there instead (a smoke run leaves the committed ones alone).

    .venv/bin/python bench/fit_cost_model.py [--rounds 3] [--calls 600] [--quick]
    .venv/bin/python bench/fit_cost_model.py --quick --rounds 1 --calls 30 --out /tmp/cost/cost_model.json
    .venv/bin/python bench/fit_cost_model.py --refit     # refit on the saved measurements, timing nothing
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from common import DATASETS, ROOT, model_config, trained_directly

OUT = ROOT / "toolchain" / "edgeml" / "search" / "cost_model.json"
REPORT = ROOT / "bench" / "results" / "cost_model.md"
POINTS = ROOT / "bench" / "results" / "cost_model_points.json"

# data file, label, columns to drop (identifiers and label leaks)
DATA = (
    ("ai4i2020.csv", "Machine failure", ("UDI", "Product ID", "TWF", "HDF", "PWF", "OSF", "RNF")),
    ("ccpp.csv", "PE", ()),
    ("telco-churn.csv", "Churn", ("customerID",)),
)


#: The profile every model is bundled for: the fp32 ONNX model alone, the artifact the cost model is fitted on.
HOST_PROFILE = """\
name = "cost-model-host"
extends = "x86-64"
description = "the build machine, fp32 ONNX only: what the cost model is fitted on"
formats = ["onnx"]
precisions = ["fp32"]
"""


@dataclass(frozen=True)
class DataSet:
    """One table prepared as ``edgeml build`` prepares it, and raw test records to time one-row predictions on."""

    table: object  #: the :class:`~edgeml.data.ingest.Table` read
    data: object  #: its :class:`~edgeml.data.prepare.Prepared` split and preprocessing
    records: list[dict]


def prepared(path, label, drop, seed=0) -> DataSet:
    """Split and preprocess one data set the way ``edgeml build`` does."""
    from edgeml.data.ingest import read_table
    from edgeml.data.prepare import prepare

    table = read_table(path)
    data = prepare(table.frame, label, drop=drop, seed=seed)
    test = data.split.test[list(data.inputs.names)]
    records = test.astype(object).where(test.notna(), None).to_dict("records")[:300]
    return DataSet(table, data, records)


def host_profile(work: Path):
    """:data:`HOST_PROFILE`, written into ``work`` and loaded as any user's profile is."""
    from edgeml.targets.profiles import load_target

    path = work / "cost-model-host.toml"
    path.write_text(HOST_PROFILE)
    return load_target(path)


def candidates(task: str, quick: bool):
    """(family, description, estimator) for a spread of sizes in every family."""
    from lightgbm import LGBMClassifier, LGBMRegressor
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        ExtraTreesRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from xgboost import XGBClassifier, XGBRegressor

    from edgeml.models.estimators import (
        StandardizedElasticNet,
        StandardizedLogisticRegression,
        StandardizedMLPClassifier,
        StandardizedMLPRegressor,
    )

    clf = task == "classification"
    step = 2 if quick else 1
    for n, leaves in [(1, 4), (5, 16), (20, 8), (20, 64), (50, 31), (100, 16), (100, 128), (200, 31),
                      (300, 64), (500, 256), (800, 32)][::step]:
        yield "lgbm", f"{n} trees, {leaves} leaves", (LGBMClassifier if clf else LGBMRegressor)(
            n_estimators=n, num_leaves=leaves, min_child_samples=5, verbose=-1, n_jobs=1, random_state=0)
    for n, depth in [(1, 3), (10, 4), (30, 6), (100, 3), (100, 8), (300, 6), (600, 4)][::step]:
        yield "xgboost", f"{n} trees, depth {depth}", (XGBClassifier if clf else XGBRegressor)(
            n_estimators=n, max_depth=depth, n_jobs=1, random_state=0)
    for cls_c, cls_r, name in ((RandomForestClassifier, RandomForestRegressor, "rf"),
                               (ExtraTreesClassifier, ExtraTreesRegressor, "extra_tree")):
        for n, leaves in [(1, 16), (5, 256), (20, 64), (50, 1024), (100, 128), (200, 32)][::step]:
            yield name, f"{n} trees, {leaves} leaves", (cls_c if clf else cls_r)(
                n_estimators=n, max_leaf_nodes=leaves, n_jobs=1, random_state=0)
    yield "linear", "standardised", (StandardizedLogisticRegression(max_iter=500) if clf
                                     else StandardizedElasticNet(alpha=0.01))
    for hidden in [(8,), (32,), (64, 32), (128, 64), (256, 128), (512, 256)][::step]:
        yield "mlp", "x".join(map(str, hidden)), (StandardizedMLPClassifier if clf else StandardizedMLPRegressor)(
            hidden_layer_sizes=hidden, max_iter=15, random_state=0)


def one_row_us(model, records, rounds: int, calls: int) -> float:
    """The least of ``rounds`` medians of ``calls`` one-record predictions, in microseconds."""
    one = [[r] for r in records]
    for r in one[:100]:
        model.predict(r)
    clock = time.perf_counter_ns
    medians = []
    for _ in range(rounds):
        times = []
        for i in range(calls):
            rec = one[i % len(one)]
            t = clock()
            model.predict(rec)
            times.append(clock() - t)
        medians.append(statistics.median(times) / 1000)
    return min(medians)


def measure(ds: DataSet, family: str, what: str, estimator, work: Path, target, args) -> dict:
    """Fit ``estimator``, bundle it as a build does, and time its one-row prediction through the runtime."""
    import warnings

    from edgeml.build import host_pipeline, write_bundle
    from edgeml.bundle import provenance_record
    from edgeml.export.onnx import estimator_bytes
    from edgeml.search.costmodel import structure_of
    from edgeml_runtime import Model

    data = ds.data
    started = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(data.X["train"], data.y["train"])
    seconds = time.monotonic() - started
    folder = work / "bundle"  # each model's bundle replaces the one before
    made = write_bundle(folder, host_pipeline(data, estimator), data, target, name="cost", version="1",
                        search=trained_directly(family, estimator, data, target, seconds),
                        provenance=provenance_record(ds.table, data, 0, family, estimator, model_config(estimator)),
                        force=True)
    model = Model.load(folder)
    latency = one_row_us(model, ds.records, args.rounds, args.calls)
    return {"family": family, "what": what, "n_inputs": len(data.inputs.features),
            "structure": structure_of(estimator).to_dict(), "latency_us": latency,
            "artifact_bytes": made.manifest.artifacts[0].bytes,
            "estimator_bytes": estimator_bytes(estimator, data.X["train"].shape[1], data.task)}


def fit(points: list[dict], seed: int = 0) -> dict:
    from edgeml.search.costmodel import (
        LATENCY_TERMS,
        SIZE_TERMS,
        Structure,
        fit_nonnegative,
        latency_features,
        size_features,
    )

    structures = [Structure(**p["structure"]) for p in points]
    XL = np.array([latency_features(s, p["n_inputs"]) for s, p in zip(structures, points, strict=False)])
    XS = np.array([size_features(s, p["n_inputs"]) for s, p in zip(structures, points, strict=False)])
    yl = np.array([p["latency_us"] for p in points])
    ys = np.array([p["estimator_bytes"] for p in points], dtype=float)
    order = np.random.default_rng(seed).permutation(len(points))
    held = np.zeros(len(points), dtype=bool)
    held[order[: len(points) // 4]] = True
    for i, p in enumerate(points):
        p["held_out"] = bool(held[i])
    cl = fit_nonnegative(XL[~held], yl[~held])
    cs = fit_nonnegative(XS[~held], ys[~held])
    for p, pl, ps in zip(points, XL @ cl, XS @ cs, strict=False):
        p["predicted_us"], p["predicted_bytes"] = float(pl), float(ps)
    return {
        "latency_us": {k: round(float(v), 6) for k, v in zip(LATENCY_TERMS, cl, strict=False)},
        "size_bytes": {k: round(float(v), 4) for k, v in zip(SIZE_TERMS, cs, strict=False)},
        "quality": {
            "points": len(points), "held_out": int(held.sum()),
            "latency": _quality(yl[held], (XL @ cl)[held]),
            "size": _quality(ys[held], (XS @ cs)[held]),
        },
    }


def _quality(y, pred) -> dict:
    rel = np.abs(pred - y) / y
    r2 = 1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)
    return {"r2": round(float(r2), 4), "median_relative_error": round(float(np.median(rel)), 4),
            "max_relative_error": round(float(rel.max()), 4)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=600)
    ap.add_argument("--quick", action="store_true", help="half the models per family (for a smoke run)")
    ap.add_argument("--out", type=Path, default=OUT,
                    help="where the fitted model goes; elsewhere than the default, the points and the report go "
                         "beside it, leaving bench/results alone (default: %(default)s)")
    ap.add_argument("--refit", action="store_true", help=f"refit on the measurements saved in {POINTS.name}")
    args = ap.parse_args(argv)

    points_path = _results(args.out)[0]
    if args.refit:
        saved = json.loads((points_path if points_path.is_file() else POINTS).read_text())
        return _write(args, saved["points"], saved["machine"])
    work = Path(tempfile.mkdtemp(prefix="edgeml-cost-"))
    sets = [(DATASETS / f, label, drop) for f, label, drop in DATA if (DATASETS / f).is_file()]
    if not sets:
        from edgeml.data.demo import DEMO_LABEL, write_demo_csv

        sets = [(write_demo_csv(work / "demo.csv", rows=5000, seed=0), DEMO_LABEL, ())]
    points = []
    target = host_profile(work)
    for path, label, drop in sets:
        ds = prepared(path, label, drop)
        for family, what, estimator in candidates(ds.data.task, args.quick):
            p = measure(ds, family, what, estimator, work, target, args)
            p["data"] = Path(path).name
            points.append(p)
            print(f"{p['data']:16} {family:10} {what:24} {p['latency_us']:9.1f} µs {p['artifact_bytes']:>11,} B",
                  file=sys.stderr)
    import onnxruntime

    machine = {
        "processor": _cpu_name(), "machine": platform.machine(), "cores": os.cpu_count(),
        "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
        "measured": "median one-row edgeml_runtime Model.predict on raw records, 1 inference thread, "
                    f"least of {args.rounds} rounds of {args.calls} calls",
        "measured_on": time.strftime("%Y-%m-%d"),
    }
    points_path.parent.mkdir(parents=True, exist_ok=True)
    points_path.write_text(json.dumps({"machine": machine, "points": points}, indent=1) + "\n")
    return _write(args, points, machine)


def _results(out: Path) -> tuple[Path, Path]:
    """Where the measured points and the report go: bench/results for the committed model, else beside ``out``."""
    if out.resolve() == OUT.resolve():
        return POINTS, REPORT
    return out.with_name(POINTS.name), out.with_name(REPORT.name)


def _write(args, points: list[dict], machine: dict) -> int:
    fitted = fit(points)
    fitted["machine"] = machine
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(fitted, indent=2) + "\n")
    report = _results(args.out)[1]
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(_report(fitted, points))
    print(json.dumps(fitted["quality"], indent=2))
    return 0


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _report(fitted: dict, points: list[dict]) -> str:
    q = fitted["quality"]
    lines = [
        "# Cost model fit",
        "",
        f"Written by `bench/fit_cost_model.py` on {fitted['machine']['processor']} "
        f"({fitted['machine']['cores']} cores), onnxruntime {fitted['machine']['onnxruntime']}: "
        f"{q['points']} real exported models, {q['held_out']} held out of the fit.",
        "",
        "| model | R² (held out) | median relative error | max relative error |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {q[name]['r2']:.3f} | {q[name]['median_relative_error']:.1%} | "
          f"{q[name]['max_relative_error']:.1%} |" for name in ("latency", "size")),
        "",
        "Coefficients (µs per unit): " + ", ".join(f"{k} {v:.4g}" for k, v in fitted["latency_us"].items()),
        "",
        "| data | family | model | inputs | trees | nodes | path | weights | one row (µs) | predicted | "
        "estimator bytes | predicted | artifact bytes | held out |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for p in points:
        s = p["structure"]
        lines.append(
            f"| {p['data']} | {p['family']} | {p['what']} | {p['n_inputs']} | {s['n_trees']} | {s['n_nodes']:,} | "
            f"{s['path_length']:,.0f} | {s['n_weights']:,} | {p['latency_us']:.1f} | {p['predicted_us']:.1f} | "
            f"{p['estimator_bytes']:,} | {p['predicted_bytes']:,.0f} | {p['artifact_bytes']:,} | "
            f"{'yes' if p['held_out'] else ''} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
