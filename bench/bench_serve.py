"""What ``edgeml-runtime serve`` costs: request rates and latencies under wrk, beside the model alone, its cold start
and memory beside ``score``'s, and the HTTP stack it runs on beside the standard library's and uvicorn.

Builds one bundle (ai4i2020 from ../shared/datasets when present, else the
built-in demo data), starts ``edgeml-runtime serve`` on it in its own process
exactly as a user would, and loads it with wrk (a load generator in C, one
thread, keep-alive connections) in this one run:

* ``/predict`` and ``/v2/models/{name}/infer`` with one-row and 100-row
  requests, and ``/v2/health/live``, each at 1, 16 and 64 connections:
  requests/s, rows/s, p50 and p99 latency; 503 answers (the in-flight bound)
  counted apart, from the server's own ``/metrics``;
* ``Model.predict`` in this process on the same records: what the model
  costs without HTTP;
* cold start to the first answered ``/predict`` and peak RSS of ``serve``,
  next to ``score`` on one row, alternating runs; goal within 1.5x;
* the same tiny app (``bench/serve_stacks.py``) on edgeml's asyncio server,
  the standard library's ``ThreadingHTTPServer`` and uvicorn (uvloop and
  httptools, and pure-Python h11), health and one-row predict: the
  measurement ``serve``'s stack was chosen by.

Goals on this machine (issue 17): one-row ``/predict`` at least half the
request rate of ``/v2/health/live``, at least 2,000 requests/s at 16
connections, p99 under 2 ms at one connection. Writes bench/results/serve.md.
Needs wrk (``make bench-deps``); run it alone on the machine.

    .venv/bin/python bench/bench_serve.py [--quick] [--seconds 3] [--time-budget 15]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import classification_data, publish
from load import Wrk, cpu_seconds, cpu_times, free_port, in_rounds, peak_rss_mb, request, steal_share, stop, wait_answer

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
CONNECTIONS = (1, 16, 64)
HALF_GOAL, RATE_GOAL, P99_GOAL_MS, COLD_GOAL = 0.5, 2_000, 2.0, 1.5

#: Runs an ``edgeml-runtime`` command and writes its own peak RSS (VmHWM, kB) to argv[1] at exit: getrusage's
#: ru_maxrss of a child would include the bench process's, inherited across a vfork-and-exec.
LAUNCH = r"""
import atexit, sys
out = sys.argv.pop(1)
def hwm():
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    with open(out, "w") as f:
        f.write(str(kb))
atexit.register(hwm)
from edgeml_runtime.cli import main
sys.exit(main(sys.argv[1:]))
"""


def answered_by_code(port: int) -> dict[str, int]:
    """The server's own count of answers by status code, from its ``/metrics``."""
    status, text = request(port, "GET", "/metrics")
    assert status == 200, text
    counts: dict[str, int] = {}
    for line in text.decode().splitlines():
        if line.startswith("edgeml_http_requests_total{"):
            code = re.search(r'code="(\d+)"', line).group(1)
            counts[code] = counts.get(code, 0) + int(float(line.rsplit(" ", 1)[1]))
    return counts


def typed_records(data: str, inputs: list[dict], n: int) -> list[dict]:
    """``n`` rows of the data file as JSON gives them: numbers as numbers, text as text, blanks as null."""
    kinds = {i["name"]: i["datatype"] for i in inputs}
    out = []
    with open(data, newline="") as f:
        for row in csv.DictReader(f):
            record = {}
            for name, kind in kinds.items():
                value = row.get(name, "")
                record[name] = None if value == "" else value if kind == "BYTES" else float(value)
            out.append(record)
            if len(out) == n:
                return out
    return out


def infer_body(records: list[dict], inputs: list[dict]) -> bytes:
    tensors = [{"name": i["name"], "shape": [len(records)], "datatype": i["datatype"],
                "data": [r[i["name"]] if i["datatype"] in ("BYTES", "FP32", "FP64") or r[i["name"]] is None
                         else int(r[i["name"]]) for r in records]} for i in inputs]
    return json.dumps({"id": "bench", "inputs": tensors}).encode()


def in_process(bundle: Path, one: list[dict], hundred: list[dict], seconds: float) -> dict[int, dict]:
    """``Model.predict`` on the same requests' records, in this process: rows/request -> rate and latencies."""
    from edgeml_runtime import Model

    model = Model.load(bundle)
    out = {}
    for rows, batches in ((1, [[r] for r in one]), (100, [hundred])):
        for batch in batches[:50]:
            model.predict(batch)
        times, end, i = [], time.perf_counter() + seconds, 0
        while time.perf_counter() < end:
            t = time.perf_counter_ns()
            model.predict(batches[i % len(batches)])
            times.append((time.perf_counter_ns() - t) / 1e6)
            i += 1
        times.sort()
        out[rows] = {"rate": len(times) / sum(times) * 1000, "p50_ms": times[len(times) // 2],
                     "p99_ms": times[int(len(times) * 0.99)]}
    return out


def cold_starts(bundle: Path, record: dict, inputs: list[dict], work: Path, runs: int) -> dict[str, list[dict]]:
    """``serve`` to its first answered ``/predict`` and ``score`` of a one-row file, alternating: seconds, RSS."""
    one_csv = work / "one.csv"
    with open(one_csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[i["name"] for i in inputs])
        w.writeheader()
        w.writerow({k: "" if v is None else v for k, v in record.items()})
    body = json.dumps(record).encode()
    out = {"serve": [], "score": []}
    env = {**os.environ, "EDGEML_RUNTIME_CONFIG": ""}
    for i in range(runs):
        hwm = work / f"hwm-{i}"
        port = free_port()
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", LAUNCH, str(hwm), "serve", str(bundle), "--port", str(port),
                                 "--log-level", "warning"], env=env)
        try:
            t1 = wait_answer(port, "POST", "/predict", body, proc)
        finally:
            stop(proc)
        out["serve"].append({"seconds": t1 - t0, "rss_mb": int(hwm.read_text()) / 1024})
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", LAUNCH, str(hwm), "score", str(bundle), "--input", str(one_csv),
                        "--output", str(work / "scored.csv")], env=env, check=True)
        out["score"].append({"seconds": time.perf_counter() - t0, "rss_mb": int(hwm.read_text()) / 1024})
    return out


def loaded(wrk: Wrk, port: int, pid: int, method: str, path: str, body, connections: int,
           with_codes: bool = False) -> dict:
    """One wrk run, with the server's CPU time per request (and its answers by status code)."""
    before = answered_by_code(port) if with_codes else {}
    cpu = cpu_seconds(pid)
    result = wrk(port, method, path, body, connections)
    result["cpu_us"] = (cpu_seconds(pid) - cpu) / max(1, result["requests"]) * 1e6
    if with_codes:
        after = answered_by_code(port)
        result["by_code"] = {k: after.get(k, 0) - before.get(k, 0) for k in after
                             if after.get(k, 0) != before.get(k, 0)}
    return result


def measure_serve(bundle: Path, data: str, wrk: Wrk, args) -> dict:
    port = free_port()
    proc = subprocess.Popen([str(BIN / "edgeml-runtime"), "serve", str(bundle), "--port", str(port),
                             "--log-level", "warning"])
    try:
        wait_answer(port, "GET", "/v2/health/ready", None, proc)
        meta = json.loads(request(port, "GET", "/v2")[1])
        name = json.loads((bundle / "manifest.json").read_text())["name"]
        inputs = json.loads(request(port, "GET", f"/v2/models/{name}")[1])["inputs"]
        records = typed_records(data, inputs, 1_000)
        kinds = {("/v2/health/live", 0): ("GET", None)}
        for rows in (1, 100):
            chosen = records[:rows]
            kinds[("/predict", rows)] = ("POST", json.dumps(chosen[0] if rows == 1 else chosen).encode())
            kinds[(f"/v2/models/{name}/infer", rows)] = ("POST", infer_body(chosen, inputs))
        for (path, _), (method, body) in kinds.items():  # each answers, and warms up
            wait_answer(port, method, path, body, proc)

        def run(job):
            (path, rows), c = job
            method, body = kinds[(path, rows)]
            result = loaded(wrk, port, proc.pid, method, path, body, c, with_codes=True)
            print(f"  serve {path} {rows} row(s), {c} conn: {result['rate']:,.0f} req/s, p99 "
                  f"{result['p99_ms']:.2f} ms, {result['cpu_us']:.0f} µs CPU/request", file=sys.stderr)
            return result

        jobs = [(kind, c) for kind in kinds for c in CONNECTIONS]
        table = {(path, rows, c): r for ((path, rows), c), r in in_rounds(jobs, args.rounds, run).items()}
        rss = peak_rss_mb(proc.pid)
    finally:
        stop(proc)
    model = in_process(bundle, records, records[:100], min(args.seconds, 2.0))
    return {"table": table, "in_process": model, "records": records, "inputs": inputs, "server": meta,
            "rss_mb": rss, "name": name}


def measure_stacks(bundle: Path, record: dict, wrk: Wrk, args) -> list[dict]:
    """Every stack of serve_stacks.py started at once, then loaded in turns."""
    import importlib.util

    import serve_stacks

    body = json.dumps(record).encode()
    out, running = [], {}
    try:
        for stack in serve_stacks.STACKS:
            needs = "uvicorn" if stack.startswith("uvicorn") else "uvloop" if stack.endswith("uvloop") else None
            if needs and importlib.util.find_spec(needs) is None:
                out.append({"stack": stack, "missing": f"{needs} is not installed: make bench-deps"})
                continue
            port = free_port()
            running[stack] = (port, subprocess.Popen([sys.executable, str(HERE / "serve_stacks.py"), stack,
                                                      str(bundle), str(port)]))
        for port, proc in running.values():
            wait_answer(port, "GET", "/v2/health/live", None, proc)
            wait_answer(port, "POST", "/predict", body, proc)

        def run(job):
            stack, path, c = job
            port, proc = running[stack]
            method, payload = ("GET", None) if path == "/v2/health/live" else ("POST", body)
            result = loaded(wrk, port, proc.pid, method, path, payload, c)
            print(f"  {stack} {path} {c} conn: {result['rate']:,.0f} req/s, {result['cpu_us']:.0f} µs CPU/request",
                  file=sys.stderr)
            return result

        jobs = [(stack, path, c) for stack in running for path in ("/v2/health/live", "/predict") for c in CONNECTIONS]
        results = in_rounds(jobs, args.rounds, run)
        for stack, (_, proc) in running.items():
            row = {"stack": stack, "rss_mb": peak_rss_mb(proc.pid)}
            row.update({(path, c): r for (st, path, c), r in results.items() if st == stack})
            out.append(row)
    finally:
        for _, proc in running.values():
            stop(proc)
    order = {s: i for i, s in enumerate(serve_stacks.STACKS)}
    return sorted(out, key=lambda row: order[row["stack"]])


def build_bundle(work: Path, args) -> tuple[Path, str]:
    from edgeml.build import build
    from edgeml.config import BuildConfig

    data, label, drop = classification_data(work, seed=args.seed)
    out = work / "bundle"
    build(BuildConfig(data=data, label=label, drop=drop, time_budget=args.time_budget, seed=args.seed,
                      estimators=(args.estimator,), target="rpi4", out=str(out)))
    return out, data


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def render(s: dict, cold: dict, stacks: list[dict], bundle: Path, data: str, args) -> str:
    import onnxruntime

    from edgeml_runtime.serve.app import INLINE_ROWS

    m = json.loads((bundle / "manifest.json").read_text())
    table = s["table"]
    infer = f"/v2/models/{s['name']}/infer"
    health = {c: table[("/v2/health/live", 0, c)] for c in CONNECTIONS}
    one = {c: table[("/predict", 1, c)] for c in CONNECTIONS}
    cold_med = {k: {f: statistics.median(r[f] for r in v) for f in ("seconds", "rss_mb")} for k, v in cold.items()}
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("[")[0].strip()
    lines = [
        "# Serving benchmark",
        "",
        f"Model: {m['search']['best_learner']} ({m['provenance']['model']['class']}), {len(s['inputs'])} raw inputs, "
        f"bundle {m['name']} v{m['version']} from {Path(data).name}. Machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}; the "
        f"hypervisor took {args.steal:.0%} of the CPU time during the load (steal, from /proc/stat). Load: "
        f"{wrk_version}, one thread, keep-alive connections, on the same machine as the server (the two share its "
        f"cores); each row is the median of {args.rounds} runs of {args.seconds:g} s, every row's runs taking turns. "
        "The server is `edgeml-runtime serve` as a user starts it (default settings, no broker, no drift file); "
        "`CPU µs` is the server process's own CPU time per request (user + system), which the neighbours on a busy "
        "machine do not change as they change the rates; 503 and other answers are the server's own counts from its "
        "`/metrics`. Produced by `make bench` (`bench/bench_serve.py`).",
        "",
        "## Goals",
        "",
        "| goal | measured | |",
        "|---|---:|---|",
    ]
    for c in CONNECTIONS:
        ratio = one[c]["rate"] / health[c]["rate"]
        lines.append(f"| one-row `/predict` ≥ 0.5× the rate of `/v2/health/live`, {c} connection{'s' * (c > 1)} | "
                     f"{ratio:.2f}× ({one[c]['rate']:,.0f} ÷ {health[c]['rate']:,.0f}) | "
                     f"{verdict(ratio >= HALF_GOAL)} |")
    lines += [
        f"| one-row `/predict` ≥ {RATE_GOAL:,} requests/s at 16 connections | {one[16]['rate']:,.0f} | "
        f"{verdict(one[16]['rate'] >= RATE_GOAL)} |",
        f"| one-row `/predict` p99 < {P99_GOAL_MS:g} ms at one connection | {one[1]['p99_ms']:.2f} ms | "
        f"{verdict(one[1]['p99_ms'] < P99_GOAL_MS)} |",
    ]
    for field, what in (("seconds", "cold start to the first answer"), ("rss_mb", "peak RSS")):
        ratio = cold_med["serve"][field] / cold_med["score"][field]
        unit = "s" if field == "seconds" else "MiB"
        lines.append(f"| `serve` {what} ≤ {COLD_GOAL:g}× `score`'s | {ratio:.2f}× ({cold_med['serve'][field]:.2f} "
                     f"÷ {cold_med['score'][field]:.2f} {unit}) | {verdict(ratio <= COLD_GOAL)} |")
    model1 = s["in_process"][1]["p50_ms"] * 1000
    http_us, predict_us = health[16]["cpu_us"], one[16]["cpu_us"]
    lines += [
        "",
        f"Where a one-row `/predict` goes (server CPU per request at 16 connections): {predict_us:.0f} µs, against "
        f"{http_us:.0f} µs for the health check, an empty route on the same server; of the {predict_us - http_us:.0f}"
        f" µs between them, `Model.predict` in-process takes {model1:.0f} µs (median), and reading the JSON, "
        "counting the row into the drift window, the metrics and writing the answer the rest. The first goal asks "
        "all of a request's own work to cost no more than an HTTP round trip: with this model the model call alone "
        f"is {model1 / http_us:.1f}× the round trip's CPU.",
        "",
        "## Requests",
        "",
        "| endpoint | rows/request | connections | requests/s | rows/s | p50 ms | p99 ms | CPU µs | 503 | other "
        "non-2xx | socket errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for path, rows in (("/v2/health/live", 0), ("/predict", 1), (infer, 1), ("/predict", 100), (infer, 100)):
        for c in CONNECTIONS:
            r = table[(path, rows, c)]
            codes = r["by_code"]
            other = sum(v for k, v in codes.items() if k not in ("200", "503"))
            per_rows = f"{r['rate'] * rows:,.0f}" if rows else "–"
            lines.append(f"| `{path}` | {rows or '–'} | {c} | {r['rate']:,.0f} | {per_rows} | {r['p50_ms']:.2f} | "
                         f"{r['p99_ms']:.2f} | "
                         f"{r['cpu_us']:.0f} | {codes.get('503', 0)} | {other} | {r['socket_errors']} |")
        if rows and path == infer:
            mp = s["in_process"][rows]
            lines.append(f"| `Model.predict` in this process | {rows} | – | {mp['rate']:,.0f} | "
                         f"{mp['rate'] * rows:,.0f} | {mp['p50_ms']:.3f} | {mp['p99_ms']:.3f} | – | – | – | – |")
    lines += [
        "",
        f"Requests of at most {INLINE_ROWS} rows are scored on the event loop, larger ones on the worker threads "
        "(`workers`, with `request_timeout`); 503 counts requests beyond `max_in_flight`. The server's peak RSS after "
        f"all of the above: {s['rss_mb']:.0f} MiB.",
        "",
        "## Cold start and memory, `serve` beside `score`",
        "",
        f"Median of {len(cold['serve'])} alternating runs, each a fresh process: `serve` from its start to the first "
        "answered one-row `/predict` (the client polls every 2 ms), `score` from its start to its exit after scoring "
        "a one-row CSV file. Peak RSS is each process's own VmHWM.",
        "",
        "| command | seconds | peak RSS MiB |",
        "|---|---:|---:|",
    ]
    for k in ("serve", "score"):
        lines.append(f"| `edgeml-runtime {k}` | {cold_med[k]['seconds']:.2f} | {cold_med[k]['rss_mb']:.0f} |")
    lines += stacks_section(stacks)
    return "\n".join(lines)


def stacks_section(stacks: list[dict]) -> list[str]:
    import serve_stacks

    lines = [
        "",
        "## The HTTP stack",
        "",
        "One tiny app (`bench/serve_stacks.py`: a constant health answer, and one JSON record scored by "
        "`Model.predict`) on each stack, so that only the stack differs. uvicorn serves a bare ASGI app, the upper "
        "bound of any framework on it; `uvicorn` runs on " + _parts(serve_stacks) + ", `uvicorn-h11` on the "
        "standard asyncio loop with the pure-Python h11 parser; `http.server` is the standard library's "
        "ThreadingHTTPServer (a thread per connection). Requests/s, and the server's CPU µs per request:",
        "",
        "| stack | health, 1 conn | health, 16 | health, 64 | predict, 1 conn | predict, 16 | predict, 64 | "
        "peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in stacks:
        if "missing" in s:
            lines.append(f"| {s['stack']} | {s['missing']} | | | | | | |")
            continue
        cells = [f"{s[(p, c)]['rate']:,.0f} ({s[(p, c)]['cpu_us']:.0f} µs)" for p in ("/v2/health/live", "/predict")
                 for c in CONNECTIONS]
        lines.append(f"| {s['stack']} | {' | '.join(cells)} | {s['rss_mb']:.0f} |")
    base = next((s for s in stacks if s["stack"] == "edgeml"), None)
    if base is not None:
        lines += ["", "The others against edgeml's own server, one-row predict at 1, 16 and 64 connections "
                      "(their requests/s ÷ edgeml's; their CPU per request ÷ edgeml's):", ""]
        for s in stacks:
            if s is base or "missing" in s:
                continue
            rates = ", ".join(f"{s[('/predict', c)]['rate'] / base[('/predict', c)]['rate']:.2f}×" for c in CONNECTIONS)
            cpu = ", ".join(f"{s[('/predict', c)]['cpu_us'] / base[('/predict', c)]['cpu_us']:.2f}×"
                            for c in CONNECTIONS)
            lines.append(f"* {s['stack']}: rate {rates}; CPU {cpu}")
    return lines


def _parts(serve_stacks) -> str:
    try:
        return serve_stacks.uvicorn_parts()
    except ImportError:
        return "(not installed)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one 1 s run per row, 2 cold starts, a 5 s search")
    p.add_argument("--seconds", type=float, default=2.0, help="seconds of each wrk run")
    p.add_argument("--rounds", type=int, default=3, help="runs of each table row, taking turns; the median is kept")
    p.add_argument("--time-budget", type=float, default=15.0, help="search budget of the bundle's build")
    p.add_argument("--estimator", default="lgbm", help="the learner of the bundle's build")
    p.add_argument("--cold-runs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", type=Path, default=None, help="folder of serve.md (default bench/results)")
    args = p.parse_args()
    if args.quick:
        args.seconds, args.rounds, args.cold_runs, args.time_budget = 1.0, 1, 2, 5.0
    if shutil.which("wrk") is None:
        raise SystemExit("bench_serve needs wrk, a load generator not written in Python: make bench-deps "
                         "(apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="edgeml-bench-serve-") as tmp:
        work = Path(tmp)
        print("building the bundle ...", file=sys.stderr)
        bundle, data = build_bundle(work, args)
        wrk = Wrk(work, args.seconds)
        print("loading edgeml-runtime serve ...", file=sys.stderr)
        ticks = cpu_times()
        s = measure_serve(bundle, data, wrk, args)
        print("HTTP stacks ...", file=sys.stderr)
        stacks = measure_stacks(bundle, s["records"][0], wrk, args)
        args.steal = steal_share(ticks, cpu_times())
        print("cold starts ...", file=sys.stderr)
        cold = cold_starts(bundle, s["records"][0], s["inputs"], work, args.cold_runs)
        text = render(s, cold, stacks, bundle, data, args)
    publish("serve", text, *([args.results] if args.results else []))


if __name__ == "__main__":
    main()
