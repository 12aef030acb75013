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

    .venv/bin/python bench/bench_runtime.py [--time-budget 30] [--estimators xgboost] [--iterations 3000]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
RESULTS = ROOT / "bench" / "results" / "runtime.md"

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
    ap.add_argument("--time-budget", type=float, default=30)
    ap.add_argument("--estimators", default="", help="e.g. xgboost (default: whatever the search picks for rpi4)")
    ap.add_argument("--iterations", type=int, default=3000)
    ap.add_argument("--batch-rows", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import onnxruntime as ort

    from edgeml.build import build
    from edgeml.config import BuildConfig
    from edgeml.preprocess import feature_frame
    from edgeml_runtime import Model

    work = Path(tempfile.mkdtemp(prefix="edgeml-bench-"))
    if (DATASETS / "ai4i2020.csv").is_file():
        data, label, drop = str(DATASETS / "ai4i2020.csv"), "Machine failure", ("UDI", "Product ID", "TWF", "HDF", "PWF", "OSF", "RNF")
        raw = pd.read_csv(data, encoding="utf-8-sig", dtype=str, keep_default_na=False)
    else:
        from edgeml.demo import DEMO_LABEL, write_demo_csv

        data = str(write_demo_csv(work / "demo.csv", rows=12_000, seed=args.seed))
        label, drop = DEMO_LABEL, ()
        raw = pd.read_csv(data, dtype=str, keep_default_na=False)
    estimators = tuple(e for e in args.estimators.split(",") if e)
    print(f"building on {data} (time budget {args.time_budget:g} s)…", file=sys.stderr)
    result = build(BuildConfig(data=data, label=label, drop=drop, time_budget=args.time_budget, seed=args.seed,
                               estimators=estimators, out=str(work / "bundle")))
    bundle = result.bundle_dir
    model = Model.load(bundle)
    schema = model.manifest.schema
    pipeline = result.pipeline

    # The same rows three ways: raw text records (what a device reads from CSV),
    # the host's feature DataFrame, and ready-made onnxruntime tensors.
    rows = raw.sample(n=min(len(raw), args.batch_rows), replace=len(raw) < args.batch_rows, random_state=args.seed)
    records = rows.to_dict("records")
    features = feature_frame(rows, schema, "benchmark rows")
    feeds_all, _ = model.encoder.encode({n: rows[n].tolist() for n in schema.names}, len(rows))

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(bundle / "model.onnx"), options, providers=["CPUExecutionProvider"])

    one_records = [[r] for r in records[:500]]
    one_frames = [features.iloc[i : i + 1] for i in range(500)]
    one_feeds = [{k: v[i : i + 1] for k, v in feeds_all.items()} for i in range(500)]

    it = args.iterations
    lat = {
        "edgeml_runtime `Model.predict`": timed(model.predict, one_records, it),
        "scikit-learn pipeline `predict_proba`": timed(pipeline.predict_proba, one_frames, max(it // 5, 300)),
        "bare onnxruntime session": timed(lambda f: session.run(None, f), one_feeds, it),
    }

    def throughput(fn, arg, repeat=5):
        best = min(_once(fn, arg) for _ in range(repeat))
        return len(rows) / best

    thr = {
        "edgeml_runtime `Model.predict`": throughput(model.predict, records),
        "scikit-learn pipeline `predict_proba`": throughput(pipeline.predict_proba, features),
        "bare onnxruntime session": throughput(lambda f: session.run(None, f), feeds_all),
    }

    colds = []
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", COLD, str(bundle), json.dumps(records[0])],
                             capture_output=True, text=True, check=True)
        colds.append(json.loads(out.stdout))
    cold = {k: statistics.median(c[k] for c in colds) for k in colds[0]}

    m = result.manifest
    base = statistics.median(lat["bare onnxruntime session"])
    ours = statistics.median(lat["edgeml_runtime `Model.predict`"])
    skl = statistics.median(lat["scikit-learn pipeline `predict_proba`"])
    lines = [
        "# Runtime benchmark",
        "",
        f"Model: {m['search']['best_learner']} ({m['provenance']['model']['class']}) on "
        f"{Path(data).name}, {len(schema.names)} raw inputs, {m['artifacts'][0]['bytes'] / 1024:.1f} KiB ONNX. "
        f"Machine: {platform.machine()}, Python {platform.python_version()}, onnxruntime {ort.__version__}, "
        "one inference thread everywhere.",
        "",
        "| scorer | one row median (µs) | one row p99 (µs) | vs edgeml_runtime | batch of "
        f"{len(rows):,} (rows/s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, values in lat.items():
        med = statistics.median(values)
        lines.append(f"| {name} | {med:,.1f} | {p(values, 99):,.1f} | {med / ours:.2f}× | {thr[name]:,.0f} |")
    lines += [
        "",
        f"* edgeml_runtime vs scikit-learn, one row: **{skl / ours:.1f}× faster** (goal ≥ 20×).",
        f"* edgeml_runtime vs bare onnxruntime, one row: **{ours / base:.2f}×** the time (goal ≤ 1.5×); "
        "the runtime parses and checks raw values, the bare session gets ready tensors.",
        f"* Cold start in a fresh process (median of 5): import {cold['import'] * 1000:.0f} ms + load "
        f"{cold['load'] * 1000:.0f} ms + first prediction {cold['first'] * 1000:.1f} ms = "
        f"**{cold['total']:.3f} s** (goal < 0.5 s); peak RSS **{cold['rss_mb']:.0f} MB** (goal < 100 MB).",
        "",
    ]
    text = "\n".join(lines)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)
    return 0


def _once(fn, arg) -> float:
    t = time.perf_counter()
    fn(arg)
    return time.perf_counter() - t


if __name__ == "__main__":
    sys.exit(main())
