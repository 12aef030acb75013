"""How many drift windows per second the durable outbox sustains.

The payload is the documented example window (``edgeml_runtime/schemas/examples/drift.json``)
widened to twelve input columns: about 3 KB of compact JSON. For ``synchronous=FULL`` (the default: every
put is fsynced, so a window survives a power cut) and ``NORMAL`` (survives a
killed process, not a power cut), it measures:

* put + ack: the steady state, each window written and then acknowledged;
* put only: the broker is unreachable and windows pile up;
* put into a full outbox: each put also drops the oldest window;

and, when Mosquitto is installed, the whole path: ``Telemetry.send_drift`` to
a local broker at QoS 1 until every window is acknowledged and deleted.

The outbox lives in bench/out/ (on the project's disk, not a tmpfs). Writes a
Markdown table to bench/results/outbox.md and prints it.

    .venv/bin/python bench/bench_outbox.py [--windows 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, publish

from edgeml_runtime.outbox import MIN_MAX_BYTES, Outbox

OUT = ROOT / "bench" / "out"
TOPIC = "edgeml/plant-a/pi-07/drift"


def _payload() -> bytes:
    """The documented example window (six input columns) widened to a twelve-column model: about 3 KB."""
    from edgeml_runtime.protocol import examples

    doc = examples()["drift"]
    doc["columns"].update({f"{name} (line 2)": dict(c) for name, c in doc["columns"].items()})
    return json.dumps(doc, separators=(",", ":")).encode()


PAYLOAD = _payload()


def measure(op, n: int, runs: int = 3) -> dict:
    """Per-call latency (µs) of ``op()`` over ``n`` calls, and the rate: the best of ``runs`` runs."""
    clock = time.perf_counter_ns
    best = None
    for _ in range(runs):
        lat = []
        began = clock()
        for _ in range(n):
            t0 = clock()
            op()
            lat.append((clock() - t0) / 1000)
        rate = n / ((clock() - began) / 1e9)
        if best is None or rate > best["rate"]:
            lat.sort()
            best = {"rate": rate, "median": statistics.median(lat), "p99": lat[int(0.99 * (n - 1))]}
    return best


def outbox_rows(n: int, folder: Path) -> list[tuple]:
    rows = []
    for sync in ("FULL", "NORMAL"):
        path = folder / f"{sync.lower()}.db"

        with Outbox(path, synchronous=sync) as box:
            rows.append(("put + ack", sync, measure(lambda: box.ack(box.put(TOPIC, PAYLOAD)), n)))
            rows.append(("put only", sync, measure(lambda: box.put(TOPIC, PAYLOAD), n)))

        full = folder / f"{sync.lower()}-full.db"
        with Outbox(full, max_bytes=MIN_MAX_BYTES * 4, synchronous=sync) as box:
            while box.bytes + len(PAYLOAD) + len(TOPIC) <= box.max_bytes:
                box.put(TOPIC, PAYLOAD)
            rows.append(("put into a full outbox (drops the oldest)", sync,
                         measure(lambda: box.put(TOPIC, PAYLOAD), n)))
    return rows


def end_to_end(n: int, folder: Path) -> dict | None:
    sys.path.insert(0, str(ROOT / "tests"))
    from broker import Broker, mosquitto_path, wait_until

    from edgeml_runtime.mqtt import MqttSettings
    from edgeml_runtime.protocol import ENVELOPE_KEYS, DeviceTopics, VerdictRule, describe_window
    from edgeml_runtime.telemetry import Telemetry

    if mosquitto_path() is None:
        return None
    example = json.loads(PAYLOAD)
    window = {k: v for k, v in example.items() if k not in ENVELOPE_KEYS}
    with Broker(folder / "mosquitto") as broker, Outbox(folder / "e2e.db") as box:
        t = Telemetry(MqttSettings(broker.url), DeviceTopics("plant-a", "pi-07"), outbox=box,
                      birth={"model": example["model"], "window": describe_window(1000, 300.0, VerdictRule())})
        t.start()
        wait_until(lambda: t.stats["connected"], what="the connection")
        began = time.perf_counter()
        for _ in range(n):
            t.send_drift(window)
        wait_until(lambda: t.stats["acked"] == n, timeout=300, interval=0.005, what="every ack")
        elapsed = time.perf_counter() - began
        t.stop()
    return {"rate": n / elapsed, "median": None, "p99": None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--windows", type=int, default=1000, help="windows per run; each row is the best of 3 runs "
                    "(default 1000)")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="outbox-", dir=OUT))
    try:
        rows = outbox_rows(args.windows, folder)
        e2e = end_to_end(args.windows, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if e2e is not None:
        rows.append(("send_drift → Mosquitto (QoS 1) → PUBACK → delete", "FULL", e2e))

    def fmt(v):
        return "–" if v is None else f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"

    lines = [
        "# Outbox benchmark", "",
        f"Payload: the documented drift window widened to 12 input columns, {len(PAYLOAD):,} bytes of JSON. "
        f"Each row is the best of 3 runs of {args.windows:,} windows (the end-to-end row: one run); latencies are "
        "per window in that run. "
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}; outbox file on the project's disk (bench/out). "
        "This virtual machine's disk is noisy: fsync latency varies several-fold between runs, so read the FULL "
        "rows as an order of magnitude. Produced by `make bench` (`bench/bench_outbox.py`).", "",
        "| operation | synchronous | windows/s | median µs | p99 µs |",
        "|---|---|---:|---:|---:|",
    ]
    lines += [f"| {op} | {sync} | {fmt(r['rate'])} | {fmt(r['median'])} | {fmt(r['p99'])} |" for op, sync, r in rows]
    full = next(r["rate"] for op, sync, r in rows if op == "put + ack" and sync == "FULL")
    lines += ["", f"* A device closes a window every few minutes (default: 1,000 rows or 300 s); with every put "
              f"fsynced (FULL, the default) the outbox still takes **{full:,.0f} windows/s** here, so durability "
              "costs nothing that matters and the default stays FULL. On an SD card an fsync takes milliseconds: "
              "expect tens to hundreds of windows per second, still far above the need.",
              "* Acks always commit with synchronous=NORMAL: a power cut can forget the last acks, which only "
              "resends those windows (consumers de-duplicate on fleet, device, session, seq)."]
    if e2e is None:
        lines.append("* Mosquitto is not installed here: the end-to-end row is missing.")
    publish("outbox", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
