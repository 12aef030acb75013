"""``edgeml-runtime bench``: how fast a bundle runs on this device, and the speed factor that implies.

A target profile's ``speed_factor`` (how many times slower than the build
machine a one-row prediction runs on the device) is an estimate; the build
predicts the device's one-row latency with it (``search.best_predicted_latency_ms``).
Run here, on the device itself, :func:`bench` measures, through the same
:class:`~edgeml_runtime.Model` that ``run`` and ``score`` use:

* **one-row latency**: ``predict`` on one record, repeated (median and p99
  over every call, after a warm-up);
* **batch throughput**: rows per second for batches of ``batch_rows`` records
  (the median batch);
* **cold start**: a fresh Python process from its start to its first
  prediction (import, load with every hash checked, one row), the median of
  a few;
* **peak RSS** of this process and of the cold-start processes;
* the **implied speed factor**: the profile's factor times measured over
  predicted one-row latency, i.e. the factor that would have made the build's
  prediction right. Put it in a profile that extends the built-in one.

The records are the bundle's sample rows (``samples.json``), cycled to fill a
batch. Every figure states how many measurements it comes from.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

from .bundle import open_bundle
from .model import Model
from .samples import read_samples

#: One-row calls made before timing (the first calls build caches).
WARMUP_CALLS = 20
#: The fewest one-row calls and batches timed, however short ``seconds`` is.
MIN_CALLS = 50
MIN_BATCHES = 3

_COLD = """
import json, sys
from edgeml_runtime import Model
Model.load(sys.argv[1], artifact=sys.argv[2]).predict([json.loads(sys.argv[3])])
"""


def bench(bundle: str | os.PathLike, *, artifact: str | None = None, precision: str | None = None,
          seconds: float = 4.0, batch_rows: int = 1000, cold_starts: int = 3, progress=None) -> dict:
    """The measurements as one JSON-ready dict (see the module docstring); ``seconds`` is split between the
    one-row and the batch timing; ``progress(text)`` hears each stage."""
    say = progress or (lambda text: None)
    model = Model.load(bundle, artifact=artifact, precision=precision)
    with open_bundle(bundle) as b:
        records = list(read_samples(b, model.manifest).rows)
    inputs = set(model.manifest.schema.names)
    records = [{k: v for k, v in r.items() if k in inputs} for r in records]
    say(f"one-row latency of {model.artifact.path} ({model.artifact.format} {model.artifact.precision})")
    one = _one_row(model, records, seconds / 2)
    say(f"batches of {batch_rows:,} rows")
    batch = (records * (batch_rows // len(records) + 1))[:batch_rows]
    batches = _timed(lambda: model.predict(batch), seconds / 2, MIN_BATCHES)
    say(f"cold start ({cold_starts} fresh processes)")
    cold = [_cold_start(bundle, model.artifact.path, records[0]) for _ in range(cold_starts)]
    median_ms = float(np.median(one)) * 1e3
    return {
        "bundle": {"name": model.manifest.name, "version": model.manifest.version,
                   "identity": model.manifest.identity, "target": model.manifest.target.name},
        "artifact": {"path": model.artifact.path, "format": model.artifact.format,
                     "precision": model.artifact.precision},
        "one_row_ms": {"median": median_ms, "p99": float(np.percentile(one, 99)) * 1e3, "calls": len(one)},
        "batch": {"rows": batch_rows, "rows_per_second": batch_rows / float(np.median(batches)),
                  "batches": len(batches)},
        "cold_start_s": {"median": statistics.median(cold), "runs": len(cold)},
        "peak_rss_mb": {"this_process": _rss_mb(resource.RUSAGE_SELF),
                        "cold_start": _rss_mb(resource.RUSAGE_CHILDREN)},
        "speed_factor": speed_factor(model.manifest, median_ms),
    }


def speed_factor(manifest, measured_ms: float) -> dict:
    """The profile's assumed factor, the build's predicted one-row latency and the factor they imply."""
    assumed = manifest.target.budgets.speed_factor
    predicted = manifest.search.best_predicted_latency_ms
    implied = assumed * measured_ms / predicted if assumed and predicted else None
    why = None if implied is not None else (
        "the build predicted no one-row latency for this model" if not predicted else
        "the profile states no speed factor")
    return {"assumed": assumed, "predicted_ms": predicted, "measured_ms": measured_ms, "implied": implied,
            **({"why_none": why} if why else {})}


def _one_row(model: Model, records: list[dict], seconds: float) -> list[float]:
    for i in range(WARMUP_CALLS):
        model.predict([records[i % len(records)]])
    times, i, until = [], 0, time.perf_counter() + seconds
    while len(times) < MIN_CALLS or time.perf_counter() < until:
        record = [records[i % len(records)]]
        started = time.perf_counter()
        model.predict(record)
        times.append(time.perf_counter() - started)
        i += 1
    return times


def _timed(call, seconds: float, at_least: int) -> list[float]:
    call()  # warm-up
    times, until = [], time.perf_counter() + seconds
    while len(times) < at_least or time.perf_counter() < until:
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


def _cold_start(bundle, artifact: str, record: dict) -> float:
    """Seconds from starting a fresh interpreter to the end of its first prediction: start-up, imports, the
    bundle loaded with every hash checked, one row scored."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _COLD, str(bundle), artifact, json.dumps(record)],
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"the cold-start process failed: {done.stderr.strip()[-500:]}")
    return time.perf_counter() - started


def _rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # kilobytes on Linux


def describe(result: dict) -> str:
    """The measurements as a short table for a person."""
    a, one, b, cold, rss, sf = (result[k] for k in ("artifact", "one_row_ms", "batch", "cold_start_s",
                                                    "peak_rss_mb", "speed_factor"))
    lines = [f"{result['bundle']['name']} {result['bundle']['version']} ({result['bundle']['target']} profile), "
             f"{a['path']} ({a['format']} {a['precision']}):",
             f"  one row      median {one['median']:.3f} ms, p99 {one['p99']:.3f} ms   ({one['calls']:,} calls)",
             f"  batch        {b['rows_per_second']:,.0f} rows/s   ({b['batches']} batches of {b['rows']:,} rows)",
             f"  cold start   {cold['median']:.2f} s to the first prediction   (median of {cold['runs']} processes)",
             f"  peak RSS     {rss['this_process']:.0f} MB here, {rss['cold_start']:.0f} MB for a cold start"]
    if sf["implied"] is not None:
        lines += [f"  speed factor {sf['implied']:.1f} measured (the profile assumes {sf['assumed']:g}: predicted "
                  f"{sf['predicted_ms']:.3f} ms, measured {sf['measured_ms']:.3f} ms)",
                  "", "To build for this board with it, write a profile that extends the built-in one:",
                  f'  extends = "{result["bundle"]["target"]}"',
                  "  [budgets]", f"  speed_factor = {sf['implied']:.1f}"]
    else:
        lines.append(f"  speed factor -   ({sf['why_none']})")
    return "\n".join(lines)


__all__ = ["bench", "describe", "speed_factor"]
