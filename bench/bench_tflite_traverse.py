"""Tree ensembles in TFLite, GEMM form against gather-based traversal: file size, one-row latency, batch throughput.

For random forests of 50 trees at depths 4, 8 and 12, a LightGBM and an
XGBoost model (fixed hyper-parameters, seed 0) on ai4i2020 (binary) and
ccpp (regression), builds both forms of the same :class:`Forest` as a
``.tflite`` file (the preprocessed inputs ``features`` [n, D] -> trees ->
output head) and runs each in the LiteRT interpreter, one thread:

* file bytes, and the bytes :func:`gemm_bytes` / :func:`traversal_bytes` predicted;
* one-row latency: median and p99 of set input + ``invoke`` + read output;
* batch throughput: rows per second of one 1,000-row ``invoke`` (median of 7);
* the largest difference from the host model's probabilities (or values);
* the form :func:`preferred_form` picks, and whether it was the faster one.

A GEMM file predicted above ``--gemm-limit`` MB is not built (its size is
the prediction). Writes bench/results/tflite_traverse.md and prints it.
Needs ../shared/datasets.

    .venv/bin/python bench/bench_tflite_traverse.py [--iterations 2000]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

BATCH = 1000


def models(task: str) -> dict:
    from lightgbm import LGBMClassifier, LGBMRegressor
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from xgboost import XGBClassifier, XGBRegressor

    c = task == "classification"
    rf = RandomForestClassifier if c else RandomForestRegressor
    out = {f"rf (50 trees, depth {d})": rf(n_estimators=50, max_depth=d, random_state=0, n_jobs=1) for d in (4, 8, 12)}
    out["lgbm (100 trees × 31 leaves)"] = (LGBMClassifier if c else LGBMRegressor)(
        n_estimators=100, num_leaves=31, random_state=0, verbose=-1)
    out["xgboost (100 trees, depth 6)"] = (XGBClassifier if c else XGBRegressor)(
        n_estimators=100, max_depth=6, random_state=0, n_jobs=1)
    return out


def build(forest, width: int, form: str) -> bytes:
    from edgeml.export.tflite.graph import Graph
    from edgeml.export.tflite.pipeline import Weights, emit_head, emit_trees
    from edgeml.export.tflite.traverse import emit_traversal, traversal_arrays
    from edgeml.export.tflite.trees import pack_forest

    g = Graph()
    z = g.input("features", (width,))
    if form == "traversal":
        raw = emit_traversal(g, z, traversal_arrays(forest), Weights(g, "fp32"))
    else:
        raw = emit_trees(g, z, pack_forest(forest), Weights(g, "fp32"))
    g.output(emit_head(g, raw, forest.head), "output")
    return g.serialize()


class Runner:
    """One interpreter (one thread) sized for ``rows`` rows: ``__call__`` sets the input, invokes, reads the output."""

    def __init__(self, data: bytes, rows: int, width: int):
        from ai_edge_litert.interpreter import Interpreter

        self.it = Interpreter(model_content=data, num_threads=1)
        self.input = self.it.get_input_details()[0]["index"]
        self.output = self.it.get_output_details()[0]["index"]
        self.it.resize_tensor_input(self.input, [rows, width])
        self.it.allocate_tensors()

    def __call__(self, Z: np.ndarray) -> np.ndarray:
        self.it.set_tensor(self.input, Z)
        self.it.invoke()
        return self.it.get_tensor(self.output)


def measure(data: bytes, Z: np.ndarray, iterations: int) -> tuple[np.ndarray, float, float, float]:
    """(outputs for ``Z``, one-row median µs, one-row p99 µs, rows/s on a 1,000-row batch)."""
    width = Z.shape[1]
    batch = np.ascontiguousarray(np.resize(Z, (BATCH, width)), np.float32)
    many = Runner(data, BATCH, width)
    seconds = []
    for _ in range(7):
        t = time.perf_counter()
        many(batch)
        seconds.append(time.perf_counter() - t)
    out = Runner(data, len(Z), width)(Z).copy()
    one, row = Runner(data, 1, width), Z[:1]
    for _ in range(50):
        one(row)
    lat = []
    for _ in range(iterations):
        t = time.perf_counter_ns()
        one(row)
        lat.append((time.perf_counter_ns() - t) / 1000)
    lat.sort()
    return out, statistics.median(lat), lat[int(0.99 * len(lat))], BATCH / statistics.median(seconds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--gemm-limit", type=float, default=200.0, help="largest GEMM file to build, in MB")
    args = parser.parse_args(argv)

    from common import publish
    from test_tflite import prepared

    from edgeml.export.tflite.traverse import (
        gemm_bytes,
        preferred_form,
        traversal_arrays,
        traversal_bytes,
    )
    from edgeml.export.tflite.trees import read_forest

    rows = []
    for key in ("ai4i", "ccpp"):
        _, task, _, pre, features, y, _ = prepared(key)
        Z = np.ascontiguousarray(pre.transform(features["test"]), np.float32)
        for name, model in models(task).items():
            model.fit(pre.transform(features["train"]), y["train"])
            host = model.predict_proba(Z) if task == "classification" else model.predict(Z)[:, None]
            forest = read_forest(model, task)
            arrays = traversal_arrays(forest)
            result = {"key": key, "model": name, "nodes": arrays.nodes, "depth": arrays.depth}
            for form, predict in (("gemm", gemm_bytes), ("traversal", traversal_bytes)):
                predicted = predict(forest)
                if form == "gemm" and predicted > args.gemm_limit * 1e6:
                    result[form] = {"bytes": predicted, "predicted": predicted, "built": False}
                    continue
                data = build(forest, Z.shape[1], form)
                out, med, p99, per_s = measure(data, Z, args.iterations)
                result[form] = {"bytes": len(data), "predicted": predicted, "built": True, "median": med,
                                "p99": p99, "per_s": per_s, "diff": float(np.max(np.abs(out - host)))}
            result["preferred"] = preferred_form(forest)
            rows.append(result)
            print(result, flush=True)
    publish("tflite_traverse", report(rows, args))
    return 0


def report(rows: list[dict], args) -> str:
    lines = [
        "# Tree ensembles in TFLite: GEMM form against gather-based traversal",
        "",
        (f"`bench/bench_tflite_traverse.py`, {platform.machine()}, Python {platform.python_version()}, LiteRT "
         "interpreter, one thread. Each file is the preprocessed inputs → the trees → the output head "
         "(no preprocessing). Latency is set input + `invoke` + read output on one test row (median / p99 over "
         f"{args.iterations} calls); throughput is one {BATCH:,}-row `invoke` (median of 7). *×* columns are "
         "GEMM ÷ traversal for bytes and latency, traversal ÷ GEMM for throughput: above 1, traversal wins. "
         "*nodes* and *depth* are the traversal's node table and number of steps; *preferred* is what "
         "`preferred_form` picks with its latency model (the GEMM form's predicted size against the traversal's "
         "depth and trees). *max diff* is the largest difference of the traversal's output from the host "
         "model's probabilities (or values)."),
        "",
        ("| data | model | nodes | depth | GEMM bytes | traversal bytes | × bytes | GEMM 1-row µs (p99) "
         "| traversal 1-row µs (p99) | × latency | GEMM rows/s | traversal rows/s | × rows/s | preferred | max diff |"),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        g, t = r["gemm"], r["traversal"]
        if g["built"]:
            gemm = (f"{g['bytes']:,}", f"{g['median']:.0f} ({g['p99']:.0f})", f"{g['per_s']:,.0f}",
                    f"{g['median'] / t['median']:.1f}", f"{t['per_s'] / g['per_s']:.1f}")
        else:
            gemm = (f"~{g['bytes']:,} (predicted, not built)", "—", "—", "—", "—")
        lines.append(f"| {r['key']} | {r['model']} | {r['nodes']:,} | {r['depth']} | {gemm[0]} | {t['bytes']:,} | "
                     f"{g['bytes'] / t['bytes']:.1f} | {gemm[1]} | {t['median']:.0f} ({t['p99']:.0f}) | {gemm[3]} | "
                     f"{gemm[2]} | {t['per_s']:,.0f} | {gemm[4]} | {r['preferred']} | {t['diff']:.2g} |")
    worst = max(abs(f["predicted"] - f["bytes"]) / f["bytes"] for r in rows for f in (r["gemm"], r["traversal"])
                if f["built"])
    faster = [r for r in rows if r["gemm"]["built"]]
    right = sum((r["gemm"]["median"] > r["traversal"]["median"]) == (r["preferred"] == "traversal") for r in faster)
    lines += ["", (f"Size predictions (`gemm_bytes`, `traversal_bytes`, made before building) were within "
                   f"{worst:.1%} of every file built. `preferred_form` picked the form with the lower one-row "
                   f"latency in {right} of {len(faster)} models.")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
