"""TFLite artifacts next to the ONNX artifact of the same model: file size, one-row latency, batch throughput.

For each data set × model family (fixed hyper-parameters, seed 0, fitted the
way ``edgeml build`` fits them), exports ONNX fp32 and TFLite fp32 / fp16 /
int8 (where the family allows it), and runs each through the runtime's own
engine (:class:`edgeml_runtime.engines.OnnxEngine`,
:class:`edgeml_runtime.litert.TfliteEngine`) on the same feeds, one thread:

* one-row latency: median and p99 of ``engine.run`` on one raw test row;
* batch throughput: rows per second on 10,000 rows (the test split, repeated);
* the test metric, and its change against the host pipeline.

Writes bench/results/tflite.md and prints it. Needs ../shared/datasets.

    .venv/bin/python bench/bench_tflite.py [--iterations 2000]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
RESULTS = ROOT / "bench" / "results" / "tflite.md"


def models(task: str) -> dict:
    from lightgbm import LGBMClassifier, LGBMRegressor
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from xgboost import XGBClassifier, XGBRegressor

    from edgeml.models.estimators import (
        StandardizedLogisticRegression,
        StandardizedMLPClassifier,
        StandardizedMLPRegressor,
    )

    c = task == "classification"
    out = {
        "lgbm (100 trees × 31 leaves)": (LGBMClassifier if c else LGBMRegressor)(n_estimators=100, num_leaves=31,
                                                                                  random_state=0, verbose=-1),
        "xgboost (100 trees, depth 6)": (XGBClassifier if c else XGBRegressor)(n_estimators=100, max_depth=6,
                                                                                random_state=0, n_jobs=1),
        "rf (50 trees, depth 10)": (RandomForestClassifier if c else RandomForestRegressor)(
            n_estimators=50, max_depth=10, random_state=0, n_jobs=1),
        "mlp (64x32)": (StandardizedMLPClassifier if c else StandardizedMLPRegressor)(
            hidden_layer_sizes=(64, 32), max_iter=100, random_state=0),
    }
    if c:
        out["logistic"] = StandardizedLogisticRegression(C=1.0, max_iter=500)
    else:
        from edgeml.models.estimators import StandardizedElasticNet

        out["enet"] = StandardizedElasticNet(alpha=0.01, l1_ratio=0.5)
    return out


def timed(fn, iterations: int) -> list[float]:
    for _ in range(50):
        fn()
    out = []
    for _ in range(iterations):
        t = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t) / 1000)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    args = parser.parse_args(argv)

    from sklearn.pipeline import Pipeline
    from test_tflite import prepared

    from edgeml.errors import ExportError
    from edgeml.export.onnx import align_thresholds, to_onnx
    from edgeml.export.tflite.pipeline import to_tflite
    from edgeml.models.estimators import model_steps
    from edgeml.verify.metrics import classification_metrics, regression_metrics
    from edgeml_runtime.engines import OnnxEngine
    from edgeml_runtime.litert import TfliteEngine

    rows = []
    refused = []
    with tempfile.TemporaryDirectory() as tmp:
        for key in ("ai4i", "ccpp"):
            inputs, task, classes, pre, features, y, feeds = prepared(key)
            test = feeds["test"]
            n = len(y["test"])
            reps = -(-10_000 // n)
            batch = {k: np.concatenate([v] * reps)[:10_000] for k, v in test.items()}
            one = {k: v[:1] for k, v in test.items()}
            for name, model in models(task).items():
                model.fit(pre.transform(features["train"]), y["train"])
                pipeline = align_thresholds(Pipeline([("pre", pre), *model_steps(model)]))
                host = (pipeline.predict_proba if task == "classification" else pipeline.predict)(features["test"])
                files, arena = {}, {}
                onnx_path = Path(tmp) / f"{key}-{len(rows)}.onnx"
                onnx_path.write_bytes(to_onnx(pipeline, inputs, task, name="bench").SerializeToString())
                files["onnx fp32"] = (onnx_path, OnnxEngine)
                for precision in ("fp32", "fp16", "int8"):
                    try:
                        exported = to_tflite(pipeline, inputs, task, classes, precision, calibration=feeds["train"])
                    except ExportError as exc:
                        refused.append((key, name, precision, str(exc).split(":")[0]))
                        continue
                    path = Path(tmp) / f"{key}-{len(rows)}.{precision}.tflite"
                    path.write_bytes(exported.data)
                    form = exported.details.get("trees", {}).get("form")
                    label = f"tflite {precision}" + (f" ({form})" if form else "")
                    files[label] = (path, TfliteEngine)
                    arena[label] = exported.details["planned_bytes"]
                for artifact, (path, cls) in files.items():
                    engine = cls(path, threads=1)
                    out = engine.run(test)
                    if task == "classification":
                        proba = out[1]
                        metric = classification_metrics(y["test"], np.argmax(proba, 1), proba)["accuracy"]
                        ref = classification_metrics(y["test"], np.argmax(host, 1), host)["accuracy"]
                        change = f"accuracy {metric:.4f} ({metric - ref:+.4f})"
                        diff = float(np.max(np.abs(proba - host)))
                    else:
                        value = out[0].ravel()
                        metric = regression_metrics(y["test"], value)["rmse"]
                        ref = regression_metrics(y["test"], host)["rmse"]
                        change = f"rmse {metric:.3f} ({metric / ref - 1:+.2%})"
                        diff = float(np.max(np.abs(value - host)))
                    lat = timed(lambda e=engine, one=one: e.run(one), args.iterations)
                    t = time.perf_counter()
                    engine.run(batch)
                    per_s = 10_000 / (time.perf_counter() - t)
                    lat.sort()
                    rows.append((key, name, artifact, path.stat().st_size, arena.get(artifact), statistics.median(lat),
                                 lat[int(0.99 * len(lat))], per_s, change, diff))
                    print(rows[-1], flush=True)

    lines = [
        "# TFLite artifacts next to ONNX",
        "",
        f"`bench/bench_tflite.py`, {platform.machine()}, Python {platform.python_version()}, one thread. "
        "Each artifact runs through the runtime's own engine on the same raw feeds (strings mapped to codes "
        "included for TFLite). Latency is `engine.run` on one test row (median / p99 over "
        f"{args.iterations} calls); throughput is one call on 10,000 rows. The metric is on the test split; "
        "in brackets its change against the host pipeline. *max diff* is the largest difference from the host "
        "pipeline's probabilities (or values). *tensor bytes* is the peak tensor memory of one row "
        "(`Graph.planned_bytes`, what a TFLite Micro arena needs). Tree files name their form (traversal or GEMM). "
        "int8 is full-integer: the engine encodes and quantizes each row in numpy before invoking.",
        "",
        "| data | model | artifact | bytes | tensor bytes | 1-row median µs | 1-row p99 µs | rows/s (10k batch) "
        "| test metric | max diff |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for key, name, artifact, size, planned, med, p99, per_s, change, diff in rows:
        shown = f"{planned:,}" if planned is not None else "—"
        lines.append(f"| {key} | {name} | {artifact} | {size:,} | {shown} | {med:.0f} | {p99:.0f} | {per_s:,.0f} | "
                     f"{change} | {diff:.2g} |")
    by = {(k, n, a): size for k, n, a, size, *_ in rows}
    lines += ["", "int8 against fp32 (TFLite file size):", ""]
    for (k, n, a), size in by.items():
        if a == "tflite int8" and (k, n, "tflite fp32") in by:
            ratio = by[(k, n, "tflite fp32")] / size
            how = (f"{ratio:.2f}× smaller" if ratio >= 1 else
                   f"{1 / ratio:.2f}× larger: the int8 file carries its input encoding as metadata, more than "
                   "its few weights save")
            lines.append(f"- {k} {n}: {by[(k, n, 'tflite fp32')]:,} → {size:,} bytes ({how})")
    lines += ["", "Not made (the exporter refuses, by design):", ""]
    lines += [f"- {key} {name} {precision}: {reason}" for key, name, precision, reason in refused]
    text = "\n".join(lines) + "\n"
    RESULTS.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
