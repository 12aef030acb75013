"""What the bounded readers cost: ``edgeml_runtime.records.read_chunks`` against the standard library's floor.

The runtime reads bytes, not a decoded text stream, so that one byte that is
not UTF-8 spoils one row; it cuts lines itself (``\\n``, ``\\r\\n`` or a lone
``\\r``), bounds each line, value and JSON nesting depth, and accounts for
every row (:mod:`edgeml_runtime.parsing`). The floor is what a reader with
none of that does: ``csv.DictReader`` over a text file, and ``json.loads``
on each line of one. Both sides produce the same records (checked) from the
same file, on the same machine, in one run; the table gives rows per second
(the best of three runs) and the runtime's time as a multiple of the floor's.

    .venv/bin/python bench/bench_readers.py [--rows 200000]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import random
import tempfile
import time
from pathlib import Path

from common import publish

from edgeml_runtime.records import read_chunks

COLUMNS = ("air_temp", "process_temp", "rpm", "torque", "wear")


def write_tables(folder: Path, rows: int, seed: int = 0) -> dict[str, Path]:
    """The same ``rows`` readings as CSV and as JSON Lines: five numeric columns and one categorical."""
    rng = random.Random(seed)
    data = [{**{c: round(rng.uniform(0, 1000), 3) for c in COLUMNS}, "type": rng.choice("LMH")} for _ in range(rows)]
    paths = {"csv": folder / "readings.csv", "jsonl": folder / "readings.jsonl"}
    with open(paths["csv"], "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=[*COLUMNS, "type"])
        w.writeheader()
        w.writerows(data)
    with open(paths["jsonl"], "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in data)
    return paths


def floor_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def floor_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def runtime_reader(fmt: str):
    def read(path: Path) -> list[dict]:
        with open(path, "rb") as f:
            return [r for chunk in read_chunks(f, fmt) for r in chunk.records]
    return read


def best_seconds(read, path: Path, runs: int = 3) -> tuple[float, list[dict]]:
    best, records = float("inf"), []
    for _ in range(runs):
        t = time.perf_counter()
        records = read(path)
        best = min(best, time.perf_counter() - t)
    return best, records


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    args = ap.parse_args(argv)
    lines = [f"# Readers: bounded byte-level reading against the standard library ({args.rows:,} rows)", "",
             f"{platform.machine()}, Python {platform.python_version()}; best of 3 runs; same file, same records.",
             "", "| format | reader | rows/s | time vs. floor |", "|---|---|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_tables(Path(tmp), args.rows)
        for fmt, floor in (("csv", floor_csv), ("jsonl", floor_jsonl)):
            base, expected = best_seconds(floor, paths[fmt])
            ours, got = best_seconds(runtime_reader(fmt), paths[fmt])
            if got != expected:
                raise SystemExit(f"{fmt}: the runtime's reader and the floor read different records")
            name = "csv.DictReader" if fmt == "csv" else "json.loads per line"
            lines.append(f"| {fmt} | {name} (floor: no limits, text stream) | {args.rows / base:,.0f} | 1.00× |")
            lines.append(f"| {fmt} | edgeml_runtime read_chunks (bounded, bytes) | {args.rows / ours:,.0f} | "
                         f"{ours / base:.2f}× |")
    publish("readers", "\n".join(lines))


if __name__ == "__main__":
    main()
