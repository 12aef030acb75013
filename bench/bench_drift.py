"""What drift monitoring costs: ``Model.predict`` with and without a :class:`DriftMonitor`, side by side.

Builds one bundle (ai4i2020 from ../shared/datasets when present, else the
built-in demo data), then measures in this one run, on the same raw rows and
the same loaded model, alternating rounds with the monitor off and on:

* one-row latency (median, p99) of ``Model.predict([record])``;
* time for a 10,000-row batch (median of the runs) and its throughput.

The monitor runs with its default settings (a window closes every 1,000
rows), so the cost of closing windows and computing their statistics is
included. Writes a Markdown table to bench/results/drift.md and prints it.
Goal: at most 1.20× the time without the monitor, one row and batch.

    .venv/bin/python bench/bench_drift.py [--time-budget 10] [--estimators lgbm] [--iterations 20000]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from bench_runtime import p, timed
from common import classification_data, publish


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--time-budget", type=float, default=10, help="search seconds (default 10)")
    ap.add_argument("--estimators", default="lgbm",
                    help="learners the search may use, comma-separated (default: %(default)s)")
    ap.add_argument("--iterations", type=int, default=20_000, help="one-row calls per mode (default: %(default)s)")
    ap.add_argument("--batch-rows", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=40,
                    help="alternations of off/on, each with one batch per mode (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import onnxruntime as ort

    from edgeml.build import build
    from edgeml.config import BuildConfig
    from edgeml_runtime import Model

    work = Path(tempfile.mkdtemp(prefix="edgeml-bench-drift-"))
    data, label, drop = classification_data(work, args.seed)
    print(f"building on {data} (time budget {args.time_budget:g} s)…", file=sys.stderr)
    result = build(BuildConfig(data=data, label=label, drop=drop, time_budget=args.time_budget, seed=args.seed,
                               estimators=tuple(args.estimators.split(",")), out=str(work / "bundle")))
    model = Model.load(result.bundle_dir)
    monitor = model.drift_monitor()

    raw = pd.read_csv(data, encoding="utf-8-sig", dtype=str, keep_default_na=False)
    records = raw.sample(n=args.batch_rows, replace=len(raw) < args.batch_rows,
                         random_state=args.seed).to_dict("records")
    one_records = [[r] for r in records[:500]]

    modes = {"without monitor": None, "with monitor": monitor}
    one = {m: [] for m in modes}
    batch = {m: [] for m in modes}
    polls, windows = [], 0
    # Many short alternations, so that a machine that slows down or speeds up affects both modes alike.
    for _ in range(args.rounds):
        for mode, mon in modes.items():
            model.monitor = mon
            one[mode] += timed({mode: (model.predict, one_records)}, args.iterations // args.rounds)[mode]
            batch[mode] += timed({mode: (model.predict, [records])}, 1)[mode]
            started = time.perf_counter()
            windows += len(monitor.poll())
            polls.append(time.perf_counter() - started)
    model.monitor = None

    m = result.manifest.to_dict()
    per_window = sum(polls) / max(windows, 1) * 1e6
    base_one, base_batch = (statistics.median(one["without monitor"]), statistics.median(batch["without monitor"]))
    lines = [
        "# Drift monitoring overhead",
        "",
        f"Data: {Path(data).name}, {args.batch_rows:,} rows sampled; model {m['search']['best_learner']} "
        f"({m['provenance']['model']['class']}), {len(m['inputs'])} raw inputs, "
        f"{len(monitor.monitored)} monitored. Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, onnxruntime {ort.__version__}, one inference thread. Both modes use the same "
        f"loaded model, alternating in {args.rounds} rounds: {args.iterations:,} one-row calls and "
        f"{args.rounds} batches each. The monitor has its default settings (a window closes every 1,000 rows, "
        "inside `predict`); the statistics of a closed window are computed when `poll()` hands it over, "
        "measured apart below. Produced by `bench/bench_drift.py`.",
        "",
        "| `Model.predict` | one row median (µs) | one row p99 (µs) | 10,000 rows median (ms) | batch (rows/s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for mode in modes:
        med = statistics.median(batch[mode])
        lines.append(f"| {mode} | {statistics.median(one[mode]):,.2f} | {p(one[mode], 99):,.2f} | "
                     f"{med / 1000:,.2f} | {args.batch_rows / med * 1e6:,.0f} |")
    ratio_one = statistics.median(one["with monitor"]) / base_one
    ratio_p99 = p(one["with monitor"], 99) / p(one["without monitor"], 99)
    ratio_batch = statistics.median(batch["with monitor"]) / base_batch
    lines += [
        f"| **with / without** | **{ratio_one:.2f}×** | {ratio_p99:.2f}× | **{ratio_batch:.2f}×** | |",
        "",
        f"* Goal ≤ 1.20×: one row {'met' if ratio_one <= 1.2 else 'MISSED'} ({ratio_one:.2f}×), batch "
        f"{'met' if ratio_batch <= 1.2 else 'MISSED'} ({ratio_batch:.2f}×).",
        f"* `poll()` turned {windows:,} closed windows into payloads (PSI, JS, statuses, verdict) in "
        f"{per_window:,.0f} µs each: {per_window / 1000 * 1000:,.0f} ns per row at 1,000-row windows, "
        f"{per_window / 1000 / (base_batch / args.batch_rows) * 100:.1f} % of a batch row's scoring time.",
        "",
    ]
    publish("drift", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
