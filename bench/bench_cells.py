"""What reading values written as people write them costs a device: the runtime's encoder against a floor.

A device turns each raw value into a model input with
``edgeml_runtime.features.FeatureEncoder``, by the column's kind and format
(:mod:`edgeml_runtime.textnumbers`, :mod:`edgeml_runtime.dates`). The floor
is what a hand-written reader that already knows the format does with the
standard library alone: ``float()`` after replacing the decimal comma, or
``datetime.strptime`` with the one pattern (``fromisoformat`` for ISO 8601),
then the same parts. pandas (``to_numeric``/``to_datetime`` with the format
given) is shown for scale: it is what the host could use, never a device.
Every reader gets the same column of text and must give the same numbers
(checked); the table gives values per second (best of three runs) and the
encoder's time as a multiple of the floor's.

    .venv/bin/python bench/bench_cells.py [--values 100000]
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import time
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from common import publish

from edgeml_runtime.features import FeatureEncoder
from edgeml_runtime.schema import InputColumn, InputSchema, NumberFormat

PARTS = ("month", "day", "dayofweek", "hour")
_EURO = str.maketrans(",.", ".,")


def numbers(n: int, rng: random.Random, fmt: str) -> list[str]:
    values = [round(rng.uniform(0, 5000), 2) for _ in range(n)]
    if fmt == "plain":
        return [str(v) for v in values]
    if fmt == "comma":
        return [str(v).replace(".", ",") for v in values]
    return [f"{v:,.2f}".translate(_EURO) + " €" for v in values]  # 1.234,56 €


def dates(n: int, rng: random.Random, pattern: str) -> list[str]:
    start = datetime(2020, 1, 1)
    return [(start + timedelta(minutes=rng.randrange(0, 3 * 365 * 24 * 60))).strftime(pattern) for _ in range(n)]


def floor_number(texts: list[str], kind: str) -> np.ndarray:
    if kind == "plain":
        values = [float(t) for t in texts]
    elif kind == "comma":
        values = [float(t.replace(",", ".")) for t in texts]
    else:
        values = [float(t.removesuffix(" €").replace(".", "").replace(",", ".")) for t in texts]
    return np.array(values, np.float32).reshape(-1, 1)


def floor_date(texts: list[str], pattern: str | None) -> np.ndarray:
    read = datetime.fromisoformat if pattern is None else (lambda t: datetime.strptime(t, pattern))
    rows = [(d.month, d.day, d.weekday(), d.hour) for d in map(read, texts)]
    return np.array(rows, np.float32)


def pandas_number(texts: list[str], kind: str) -> np.ndarray:
    s = pd.Series(texts)
    if kind == "comma":
        s = s.str.replace(",", ".", regex=False)
    elif kind == "euro":
        s = s.str.removesuffix(" €").str.replace(".", "", regex=False).str.replace(",", ".", regex=False)
    return pd.to_numeric(s).to_numpy(np.float32).reshape(-1, 1)


def pandas_date(texts: list[str], pattern: str | None) -> np.ndarray:
    d = pd.to_datetime(pd.Series(texts), format="ISO8601" if pattern is None else pattern)
    return np.stack([d.dt.month, d.dt.day, d.dt.dayofweek, d.dt.hour], axis=1).astype(np.float32)


def encoder(column: InputColumn):
    enc = FeatureEncoder(InputSchema((column,)))

    def read(texts: list[str]) -> np.ndarray:
        feeds, errors = enc.encode({column.name: texts}, len(texts))
        if errors:
            raise SystemExit(f"{column.name}: the encoder refused {len(errors)} values")
        return np.concatenate([feeds[f] for f in column.features], axis=1)

    return read


def best(read, texts: list[str], runs: int = 3) -> tuple[float, np.ndarray]:
    seconds, out = math.inf, None
    for _ in range(runs):
        t = time.perf_counter()
        out = read(texts)
        seconds = min(seconds, time.perf_counter() - t)
    return seconds, out


def cases(n: int):
    rng = random.Random(0)
    for kind, fmt, example in (("plain", None, "1234.56"), ("comma", NumberFormat(",", ""), "1234,56"),
                               ("euro", NumberFormat(",", "."), "1.234,56 €")):
        column = InputColumn("x", "numeric", ("x",), number_format=fmt)
        yield example, numbers(n, rng, kind), encoder(column), (lambda t, k=kind: floor_number(t, k)), \
            (lambda t, k=kind: pandas_number(t, k))
    for pattern, order, example in ((None, None, "2021-03-04T05:06:00"), ("%d-%m-%Y %H:%M", "dmy", "04-03-2021 05:06"),
                                    ("%m/%d/%Y %I:%M %p", "mdy", "03/04/2021 05:06 AM"),
                                    ("%d %b %Y %H:%M", "ymd", "4 Mar 2021 05:06")):
        texts = dates(n, rng, "%Y-%m-%dT%H:%M:%S" if pattern is None else pattern)
        column = InputColumn("t", "datetime", tuple(f"t__{p}" for p in PARTS), date_order=order, parts=PARTS)
        yield example, texts, encoder(column), (lambda t, p=pattern: floor_date(t, p)), \
            (lambda t, p=pattern: pandas_date(t, p))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--values", type=int, default=100_000)
    args = ap.parse_args(argv)
    n = args.values
    lines = [f"# Cells: values written as text, read by the runtime's encoder ({n:,} values a column)", "",
             f"{platform.machine()}, Python {platform.python_version()}; best of 3 runs; the same text, the same "
             "float32 model inputs (checked). Floor: a hand-written reader that knows the format (stdlib only).",
             "", "| written as | floor values/s | encoder values/s | encoder vs. floor | pandas values/s (host) |",
             "|---|---:|---:|---:|---:|"]
    for example, texts, ours, floor, panda in cases(n):
        base, want = best(floor, texts)
        mine, got = best(ours, texts)
        theirs, also = best(panda, texts)
        if not (np.array_equal(got, want) and np.array_equal(also, want)):
            raise SystemExit(f"{example}: the readers disagree")
        lines.append(f"| `{example}` | {n / base:,.0f} | {n / mine:,.0f} | {mine / base:.2f}× | {n / theirs:,.0f} |")
    publish("cells", "\n".join(lines))


if __name__ == "__main__":
    main()
