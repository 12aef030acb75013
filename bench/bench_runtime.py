"""Side-by-side scoring benchmark: edgeml_runtime vs the host scikit-learn pipeline vs bare onnxruntime.

Builds one bundle (ai4i2020 from ../shared/datasets when present, else the
built-in demo data), then measures in this one run, on the same rows:

* one-row latency (median, p99) of ``Model.predict([record])`` on raw records,
  the host pipeline's ``predict_proba`` on a one-row DataFrame, and a bare
  onnxruntime session on ready-made tensors (same ONNX file, same thread settings);
* batch throughput on 10,000 rows for the same three;
* the runtime's cold start (import + load + first prediction) and peak RSS in a fresh process.

Writes a Markdown table to bench/results/runtime.md and prints it. Quote ratios:
machines are noisy, ratios measured in one run are not.

    .venv/bin/python bench/bench_runtime.py [--time-budget 20] [--estimators xgboost,lgbm,rf,lrl2] [--iterations 3000]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import classification_data, publish

COLD = r"""
import sys, time, json
t0 = time.perf_counter()
from edgeml_runtime import Model
t1 = time.perf_counter()
m = Model.load(sys.argv[1])
t2 = time.perf_counter()
m.predict([json.loads(sys.argv[2])])
t3 = time.perf_counter()
# VmHWM is this process's own peak RSS; getrusage's ru_maxrss would include the parent's, inherited on exec.
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "first": t3 - t2, "total": t3 - t0, "rss_mb": hwm / 1024}))
"""


def timed(fn, items, iterations: int) -> list[float]:
    """Per-call wall time in microseconds, cycling through ``items``; after a warm-up."""
    for item in items[:50]:
        fn(item)
    out = []
    n = len(items)
    clock = time.perf_counter_ns
    for i in range(iterations):
        item = items[i % n]
        t = clock()
        fn(item)
        out.append((clock() - t) / 1000)
    return out


def p(values, q):
    return float(np.percentile(values, q))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--time-budget", type=float, default=20, help="search seconds per model (default 20)")
    ap.add_argument("--estimators", default="xgboost,lgbm,rf,lrl2",
                    help="one bundle per learner, comma-separated; 'auto' lets the search pick (default: %(default)s)")
    ap.add_argument("--iterations", type=int, default=3000)
    ap.add_argument("--batch-rows", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edgeml-bench-"))
    data, label, drop = classification_data(work, args.seed)
    raw = pd.read_csv(data, encoding="utf-8-sig", dtype=str, keep_default_na=False)
    rows = raw.sample(n=args.batch_rows, replace=len(raw) < args.batch_rows, random_state=args.seed)

    import onnxruntime as ort

    lines = [
        "# Runtime benchmark",
        "",
        f"Data: {Path(data).name}, {args.batch_rows:,} rows sampled. Machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, onnxruntime {ort.__version__}; one inference "
        "thread for edgeml_runtime and the bare session. One-row latency is the median (p99) over "
        f"{args.iterations:,} calls on raw records; batch is the best of 5 runs. Produced by `make bench`.",
        "",
    ]
    for estimator in args.estimators.split(","):
        print(f"building {estimator} on {data} (time budget {args.time_budget:g} s)…", file=sys.stderr)
        lines += bench_one(work / estimator, data, label, drop, estimator, rows, args)
    publish("runtime", "\n".join(lines))
    return 0


def bench_one(out: Path, data, label, drop, estimator, rows, args) -> list[str]:
    import onnxruntime as ort

    from edgeml.build import build
    from edgeml.config import BuildConfig
    from edgeml.data.preprocess import feature_frame
    from edgeml_runtime import Model

    result = build(BuildConfig(data=data, label=label, drop=drop, time_budget=args.time_budget, seed=args.seed,
                               estimators=() if estimator == "auto" else (estimator,), out=str(out)))
    model = Model.load(out)
    schema = model.manifest.schema
    pipeline = result.pipeline
    single = copy.deepcopy(pipeline)
    if "n_jobs" in single.steps[-1][1].get_params():
        single.steps[-1][1].set_params(n_jobs=1)

    # The same rows three ways: raw text records (what a device reads from CSV),
    # the host's feature DataFrame, and ready-made onnxruntime tensors.
    records = rows.to_dict("records")
    features = feature_frame(rows, schema, "benchmark rows")
    feeds_all, _ = model.encoder.encode({n: rows[n].tolist() for n in schema.names}, len(rows))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(out / "model.onnx"), options, providers=["CPUExecutionProvider"])

    one_records = [[r] for r in records[:500]]
    one_frames = [features.iloc[i : i + 1] for i in range(500)]
    one_feeds = [{k: v[i : i + 1] for k, v in feeds_all.items()} for i in range(500)]
    it = args.iterations
    scorers = {
        "edgeml_runtime `Model.predict`": (model.predict, one_records, records, it),
        "scikit-learn pipeline `predict_proba`": (pipeline.predict_proba, one_frames, features, max(it // 10, 200)),
        "scikit-learn pipeline, `n_jobs=1`": (single.predict_proba, one_frames, features, max(it // 10, 200)),
        "bare onnxruntime session": (lambda f: session.run(None, f), one_feeds, feeds_all, it),
    }
    lat, thr = {}, {}
    for name, (fn, one, batch, n) in scorers.items():
        lat[name] = timed(fn, one, n)
        thr[name] = len(rows) / min(_once(fn, batch) for _ in range(5))

    colds = []
    for _ in range(5):
        run = subprocess.run([sys.executable, "-c", COLD, str(out), json.dumps(records[0])],
                             capture_output=True, text=True, check=True)
        colds.append(json.loads(run.stdout))
    cold = {k: statistics.median(c[k] for c in colds) for k in colds[0]}

    m = result.manifest.to_dict()
    ours = statistics.median(lat["edgeml_runtime `Model.predict`"])
    base = statistics.median(lat["bare onnxruntime session"])
    skl = statistics.median(lat["scikit-learn pipeline `predict_proba`"])
    skl1 = statistics.median(lat["scikit-learn pipeline, `n_jobs=1`"])
    cfg = m["search"]["best_config"]
    size = ", ".join(f"{k} {cfg[k]}" for k in ("n_estimators", "max_leaves", "num_leaves") if k in cfg)
    lines = [
        f"## {m['search']['best_learner']} ({m['provenance']['model']['class']}{', ' + size if size else ''})",
        "",
        f"{len(schema.names)} raw inputs, {m['artifacts'][0]['bytes'] / 1024:.1f} KiB ONNX, "
        f"test accuracy {m['metrics']['test'].get('accuracy', float('nan')):.4f}.",
        "",
        "| scorer | one row median (µs) | one row p99 (µs) | vs edgeml_runtime | batch (rows/s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, values in lat.items():
        med = statistics.median(values)
        lines.append(f"| {name} | {med:,.1f} | {p(values, 99):,.1f} | {med / ours:.2f}× | {thr[name]:,.0f} |")
    lines += [
        "",
        f"* One row, edgeml_runtime vs scikit-learn: **{skl / ours:.0f}× faster** ({skl1 / ours:.0f}× against "
        "`n_jobs=1`; goal ≥ 20×).",
        f"* One row, edgeml_runtime vs bare onnxruntime: **{ours / base:.2f}×** the time (goal ≤ 1.5×); the "
        "runtime parses and checks raw values, the bare session is handed ready tensors.",
        f"* Cold start in a fresh process (median of 5): import {cold['import'] * 1000:.0f} ms + load "
        f"{cold['load'] * 1000:.0f} ms + first prediction {cold['first'] * 1000:.1f} ms = "
        f"**{cold['total']:.3f} s** (goal < 0.5 s); peak RSS **{cold['rss_mb']:.0f} MB** (goal < 100 MB).",
        "",
    ]
    return lines


def _once(fn, arg) -> float:
    t = time.perf_counter()
    fn(arg)
    return time.perf_counter() - t


if __name__ == "__main__":
    sys.exit(main())
