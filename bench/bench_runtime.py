"""Side-by-side scoring benchmark: edgeml_runtime against its floors, scikit-learn and bare onnxruntime.

Builds one bundle per model family (ai4i2020 from ../shared/datasets when
present, else the built-in demo data), then measures in this one run, on the
same rows:

* a batch of 10,000 rows four ways, each beside its floor:
  ``Model.predict`` on a mapping of NumPy columns beside a bare onnxruntime
  session handed ready tensors (same ONNX file, same thread settings), and
  ``Model.predict`` on a list of dicts (CSV text, and typed values as JSON
  gives them) beside a plain Python loop that only extracts and converts the
  fields (for each record, for each input, ``r.get(name)`` → ``float`` or the
  category text, into preallocated lists; nothing else). Goal: at most 1.5×
  the floor. Batch times are the best of ``--rounds`` rounds, each round
  running every scorer once, so that a busy machine slows them alike;
* one-row latency (median, p99) of ``Model.predict([record])`` on raw records,
  the host pipeline's ``predict_proba`` on a one-row DataFrame, and the bare
  session on ready one-row tensors. Goal: at most 1.25× the bare session (the
  ratio before the batch paths were reworked: they must not slow one row);
* the runtime's cold start (import + load + first prediction) and peak RSS in a fresh process.

Writes a Markdown table to bench/results/runtime.md and prints it. Quote ratios:
machines are noisy, ratios measured in one run are not.

    .venv/bin/python bench/bench_runtime.py [--quick] [--time-budget 20] [--estimators xgboost,lgbm,rf,lrl2,mlp]
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
from datetime import datetime
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

BATCH_GOAL = 1.5
ONE_ROW_GOAL = 1.25


def timed(scorers: dict, iterations: int) -> dict[str, list[float]]:
    """Per-call wall times in microseconds of ``{name: (fn, items)}``, cycling through the items after a warm-up.

    The scorers take turns call by call, so that a busy machine slows them alike.
    """
    for fn, items in scorers.values():
        for item in items[:50]:
            fn(item)
    out = {name: [] for name in scorers}
    clock = time.perf_counter_ns
    for i in range(iterations):
        for name, (fn, items) in scorers.items():
            item = items[i % len(items)]
            t = clock()
            fn(item)
            out[name].append((clock() - t) / 1000)
    return out


def best_of_rounds(scorers: dict, rounds: int) -> dict[str, float]:
    """Each scorer's best wall time in seconds over ``rounds`` rounds that run every scorer once, in turn."""
    best = dict.fromkeys(scorers, float("inf"))
    for _ in range(rounds):
        for name, fn in scorers.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def p(values, q):
    return float(np.percentile(values, q))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 2 s searches, 300 one-row calls, 2 batch rounds, 2 cold starts")
    ap.add_argument("--time-budget", type=float, default=None, help="search seconds per model (default 20)")
    ap.add_argument("--estimators", default="xgboost,lgbm,rf,lrl2,mlp",
                    help="one bundle per learner, comma-separated; 'auto' lets the search pick (default: %(default)s)")
    ap.add_argument("--iterations", type=int, default=None, help="one-row calls per scorer (default 3000)")
    ap.add_argument("--rounds", type=int, default=None, help="batch rounds (default 15)")
    ap.add_argument("--batch-rows", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    for name, full, quick in (("time_budget", 20, 2), ("iterations", 3000, 300), ("rounds", 15, 2)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    args.cold_runs = 2 if args.quick else 5

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
        f"thread for edgeml_runtime and the bare session. Batch times are the best of {args.rounds} rounds (each "
        f"round runs every scorer once, in turn); one-row latency is the median (p99) over {args.iterations:,} "
        "calls on raw records, taking turns with the bare session call by call. Search budget "
        f"{args.time_budget:g} s per model"
        f"{' (a --quick run: too few rounds and calls for firm numbers)' if args.quick else ''}. "
        "Produced by `make bench`.",
        "",
    ]
    summary, sections = [], []
    for estimator in args.estimators.split(","):
        target = target_for(estimator)
        print(f"building {estimator} for {target} on {data} (time budget {args.time_budget:g} s)…", file=sys.stderr)
        row, section = bench_one(work / estimator, data, label, drop, estimator, target, rows, args)
        summary.append(row)
        sections += section
    publish("runtime", "\n".join(lines + summary_table(summary) + sections))
    return 0


def target_for(estimator: str) -> str:
    """rpi4, or the first built-in target with an ONNX artifact that allows ``estimator`` (e.g. mlp)."""
    from edgeml.targets import list_targets, load_target

    if estimator == "auto" or estimator in load_target("rpi4").estimators:
        return "rpi4"
    for profile in list_targets():
        if estimator in profile.estimators and "onnx" in profile.formats:
            return profile.name
    raise SystemExit(f"no built-in target with ONNX artifacts allows estimator {estimator!r}")


def summary_table(summary: list[dict]) -> list[str]:
    lines = [
        "## Against the floors",
        "",
        f"Goals: a batch at most {BATCH_GOAL:g}× its floor, one row at most {ONE_ROW_GOAL:g}× the bare session. "
        "A list of dicts is measured against the extract-and-convert loop alone (the goal as set) and against the "
        "loop plus the bare session, which is what scoring it cannot do without: where the model itself takes "
        "more than half the loop's time (the random forest), the first goal is out of reach of any runtime.",
        "",
        "| model | NumPy columns ÷ bare session | CSV-text dicts ÷ loop | ÷ (loop + session) | typed dicts ÷ loop "
        "| ÷ (loop + session) | one row ÷ bare session |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summary:
        cells = [_verdict(s[k], BATCH_GOAL) for k in ("columns", "text", "text+", "typed", "typed+")]
        lines.append(f"| {s['model']} | {' | '.join(cells)} | {_verdict(s['one'], ONE_ROW_GOAL)} |")
    return [*lines, ""]


def _verdict(ratio: float, goal: float) -> str:
    return f"{ratio:.2f}× {'met' if ratio <= goal else '**not met**'}"


def bench_one(out: Path, data, label, drop, estimator, target, rows, args) -> tuple[dict, list[str]]:
    from edgeml.build import build
    from edgeml.config import BuildConfig
    from edgeml_runtime import Model

    result = build(BuildConfig(data=data, label=label, drop=drop, time_budget=args.time_budget, seed=args.seed,
                               estimators=() if estimator == "auto" else (estimator,), target=target, out=str(out)))
    model = Model.load(out, artifact="model.onnx")
    m = json.loads((out / "manifest.json").read_text())
    inputs = Inputs(model, rows)
    batch = batch_section(model, result.pipeline, inputs, out, args)
    one, one_ratio = one_row_section(model, result.pipeline, inputs, out, args)
    cold = cold_start(out, inputs.text[0], args.cold_runs)
    cfg = m["search"]["best_config"]
    size = ", ".join(f"{k} {cfg[k]}" for k in ("n_estimators", "max_leaves", "num_leaves", "hidden") if k in cfg)
    name = m["search"]["best_learner"]
    lines = [
        f"## {name} ({m['provenance']['model']['class']}{', ' + size if size else ''})",
        "",
        f"{len(model.manifest.schema.names)} raw inputs, {(out / 'model.onnx').stat().st_size / 1024:.1f} KiB ONNX "
        f"(target {target}), test accuracy {m['metrics']['test'].get('accuracy', float('nan')):.4f}.",
        "",
        *batch["lines"],
        *one,
        f"* Cold start in a fresh process (median of {args.cold_runs}): import {cold['import'] * 1000:.0f} ms + "
        f"load {cold['load'] * 1000:.0f} ms + first prediction {cold['first'] * 1000:.1f} ms = "
        f"**{cold['total']:.3f} s** (goal < 0.5 s); peak RSS **{cold['rss_mb']:.0f} MB** (goal < 100 MB).",
        "",
    ]
    return {"model": name, **batch["ratios"], "one": one_ratio}, lines


class Inputs:
    """The same rows every way a scorer takes them."""

    def __init__(self, model, rows: pd.DataFrame):
        from edgeml.data.preprocess import feature_frame
        from edgeml_runtime.features import FeatureEncoder

        schema = model.manifest.schema
        self.plan = [(c.name, c.kind) for c in schema.columns]
        self.text = rows.to_dict("records")  # every column of the file, as a device reads a CSV line
        numeric = [c.name for c in schema.columns if c.kind == "numeric"]
        self.typed = [{**r, **{name: float(r[name]) for name in numeric}} for r in self.text]
        self.columns = {name: _numpy_column(kind, rows[name]) for name, kind in self.plan}
        careful = FeatureEncoder(schema, careful=True)
        self.feeds, errors = careful.encode({n: rows[n].tolist() for n in schema.names}, len(rows))
        if errors:
            raise SystemExit(f"the benchmark rows do not all convert: {errors[min(errors)]}")
        self.frame = feature_frame(rows, schema, "benchmark rows")


def _numpy_column(kind: str, values: pd.Series) -> np.ndarray:
    if kind == "numeric":
        return values.to_numpy(np.float64)
    if kind == "datetime":
        return values.to_numpy("datetime64[us]")
    return values.to_numpy(str)


def extract_and_convert(records: list[dict], plan) -> list[list]:
    """The floor for a list of dicts: for each record, for each input, ``r.get(name)`` → float or category text
    into preallocated lists (datetimes parsed by ``datetime.fromisoformat``, booleans kept as they come). Nothing
    else: no checks, no arrays."""
    n = len(records)
    kinds = [(name, kind, [None] * n) for name, kind in plan]
    for i, r in enumerate(records):
        for name, kind, out in kinds:
            v = r.get(name)
            out[i] = float(v) if kind == "numeric" else datetime.fromisoformat(v) if kind == "datetime" else v
    return [out for _, _, out in kinds]


def batch_section(model, pipeline, inputs: Inputs, out: Path, args) -> dict:
    session = bare_session(out)
    single = single_threaded(pipeline)
    scorers = {
        "bare": lambda: session.run(None, inputs.feeds),
        "columns": lambda: model.predict(inputs.columns),
        "text loop": lambda: extract_and_convert(inputs.text, inputs.plan),
        "text": lambda: model.predict(inputs.text),
        "typed loop": lambda: extract_and_convert(inputs.typed, inputs.plan),
        "typed": lambda: model.predict(inputs.typed),
        "sklearn": lambda: pipeline.predict_proba(inputs.frame),
        "sklearn1": lambda: single.predict_proba(inputs.frame),
    }
    t = best_of_rounds(scorers, args.rounds)
    ratios = {"columns": t["columns"] / t["bare"]}
    for kind in ("text", "typed"):
        ratios[kind] = t[kind] / t[f"{kind} loop"]
        ratios[f"{kind}+"] = t[kind] / (t[f"{kind} loop"] + t["bare"])
    n = len(inputs.text)

    def row(what, scorer, key, against=""):
        return f"| {what} | {scorer} | {t[key] * 1000:,.2f} | {n / t[key]:,.0f} | {against} |"

    lines = [
        f"{n:,} rows at once (best of {args.rounds} rounds):",
        "",
        "| input | scorer | ms | rows/s | against its floor |",
        "|---|---|---:|---:|---|",
        row("ready tensors", "bare onnxruntime session", "bare", "floor"),
        row("mapping of NumPy columns", "edgeml_runtime `Model.predict`", "columns",
            f"{_verdict(ratios['columns'], BATCH_GOAL)} (bare session)"),
        row("list of dicts, CSV text", "extract-and-convert loop", "text loop", "floor"),
        row("list of dicts, CSV text", "edgeml_runtime `Model.predict`", "text",
            f"{_verdict(ratios['text'], BATCH_GOAL)} (loop); {_verdict(ratios['text+'], BATCH_GOAL)} (loop + session)"),
        row("list of dicts, typed (JSON)", "extract-and-convert loop", "typed loop", "floor"),
        row("list of dicts, typed (JSON)", "edgeml_runtime `Model.predict`", "typed",
            f"{_verdict(ratios['typed'], BATCH_GOAL)} (loop); {_verdict(ratios['typed+'], BATCH_GOAL)} "
            "(loop + session)"),
        row("feature DataFrame", "scikit-learn pipeline `predict_proba`", "sklearn"),
        row("feature DataFrame", "scikit-learn pipeline, `n_jobs=1`", "sklearn1"),
        "",
        f"* `Model.predict` on the list of CSV-text dicts takes {t['text'] / t['bare']:.1f}× the bare session: "
        "reading text is the cost (the extract loop alone takes "
        f"{t['text loop'] / t['bare']:.1f}×), not the runtime's checks.",
        "",
    ]
    return {"lines": lines, "ratios": ratios}


def one_row_section(model, pipeline, inputs: Inputs, out: Path, args) -> tuple[list[str], float]:
    session = bare_session(out)
    single = single_threaded(pipeline)
    one_records = [[r] for r in inputs.text[:500]]
    one_frames = [inputs.frame.iloc[i : i + 1] for i in range(500)]
    one_feeds = [{k: v[i : i + 1] for k, v in inputs.feeds.items()} for i in range(500)]
    ours_and_bare = timed({"edgeml_runtime `Model.predict`": (model.predict, one_records),
                           "bare onnxruntime session": (lambda f: session.run(None, f), one_feeds)}, args.iterations)
    sklearn = timed({"scikit-learn pipeline `predict_proba`": (pipeline.predict_proba, one_frames),
                     "scikit-learn pipeline, `n_jobs=1`": (single.predict_proba, one_frames)},
                    max(args.iterations // 10, 100))
    lat = {**ours_and_bare, **sklearn}
    med = {name: statistics.median(v) for name, v in lat.items()}
    ours, base = med["edgeml_runtime `Model.predict`"], med["bare onnxruntime session"]
    skl, skl1 = med["scikit-learn pipeline `predict_proba`"], med["scikit-learn pipeline, `n_jobs=1`"]
    lines = [
        "One row:",
        "",
        "| scorer | one row median (µs) | one row p99 (µs) | vs edgeml_runtime |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {med[name]:,.1f} | {p(v, 99):,.1f} | {med[name] / ours:.2f}× |" for name, v in lat.items()),
        "",
        f"* One row, edgeml_runtime vs bare onnxruntime: **{ours / base:.2f}×** the time "
        f"({_verdict(ours / base, ONE_ROW_GOAL)}, goal ≤ {ONE_ROW_GOAL}×); the runtime parses and checks raw "
        "values, the bare session is handed ready tensors.",
        f"* One row, edgeml_runtime vs scikit-learn: **{skl / ours:.0f}× faster** ({skl1 / ours:.0f}× against "
        "`n_jobs=1`; goal ≥ 20×).",
    ]
    return lines, ours / base


def bare_session(out: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(out / "model.onnx"), options, providers=["CPUExecutionProvider"])


def single_threaded(pipeline):
    single = copy.deepcopy(pipeline)
    if "n_jobs" in single.steps[-1][1].get_params():
        single.steps[-1][1].set_params(n_jobs=1)
    return single


def cold_start(out: Path, record: dict, runs: int) -> dict:
    colds = []
    for _ in range(runs):
        run = subprocess.run([sys.executable, "-c", COLD, str(out), json.dumps(record)],
                             capture_output=True, text=True, check=True)
        colds.append(json.loads(run.stdout))
    return {k: statistics.median(c[k] for c in colds) for k in colds[0]}


if __name__ == "__main__":
    sys.exit(main())
