"""Read records to score and write them back with their predictions.

CSV (delimiter sniffed, UTF-8 byte-order mark tolerated) and JSON Lines, from
a file or standard input, in chunks so that a large file never sits in memory.
A JSON line that does not parse is a row error like any other bad value.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from .errors import InputError, RowError

FORMATS = ("csv", "jsonl")
CHUNK_ROWS = 4096
csv.field_size_limit(64 * 2**20)  # a 64 MiB field, not the 128 KiB default, before csv calls a row broken


@dataclass
class Chunk:
    """Up to :data:`CHUNK_ROWS` records; ``first_row`` is the 1-based number of the first.

    A row that could not be parsed at all is ``None`` in ``records`` and has
    its :class:`RowError` in ``errors``. ``columns`` is the CSV header.
    """

    records: list[dict | None]
    first_row: int
    errors: list[RowError] = field(default_factory=list)
    columns: list[str] | None = None


def guess_format(path: str, fmt: str | None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise InputError(f"unknown input format {fmt!r}; use one of {', '.join(FORMATS)}")
        return fmt
    if path.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if path == "-":
        raise InputError("reading from standard input needs --format csv or --format jsonl")
    return "csv"


def open_text(path: str, mode: str = "r"):
    if path == "-":
        stream = sys.stdin if mode == "r" else sys.stdout
        if mode == "r":
            return io.TextIOWrapper(stream.buffer, encoding="utf-8-sig", newline="")
        return io.TextIOWrapper(stream.buffer, encoding="utf-8", newline="", write_through=True)
    try:
        return open(path, mode, encoding="utf-8-sig" if mode == "r" else "utf-8", newline="")
    except OSError as exc:
        raise InputError(f"cannot open {path}: {exc.strerror}") from None


def read_chunks(stream, fmt: str, chunk_rows: int = CHUNK_ROWS) -> Iterator[Chunk]:
    """Records from ``stream`` in chunks; CSV values stay text, JSON values keep their types."""
    return _csv_chunks(stream, chunk_rows) if fmt == "csv" else _jsonl_chunks(stream, chunk_rows)


def _csv_chunks(stream, chunk_rows):
    head = stream.read(64 * 1024)
    if not head.strip():
        raise InputError("the input is empty: expected a header line and at least one row")
    try:
        dialect = csv.Sniffer().sniff(head.splitlines()[0], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(_chain(head, stream), delimiter=dialect.delimiter, quotechar='"')
    header = next(reader)
    if len(set(header)) != len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        raise InputError(f"the CSV header repeats column(s) {', '.join(map(repr, dupes))}")
    width = len(header)
    chunk = Chunk([], 1, columns=header)
    i = 0
    for row in reader:
        if not row:
            continue  # blank lines are not rows: they do not count in row numbers either
        i += 1
        if len(row) != width:
            chunk.errors.append(RowError(i, None, f"has {len(row)} fields, the header has {width}"))
            chunk.records.append(None)
        else:
            chunk.records.append(dict(zip(header, row, strict=False)))
        if len(chunk.records) >= chunk_rows:
            yield chunk
            chunk = Chunk([], i + 1, columns=header)
    if chunk.records or chunk.first_row == 1:
        yield chunk


def _jsonl_chunks(stream, chunk_rows):
    chunk = Chunk([], 1)
    n = 0
    for line in stream:
        if not line.strip():
            continue
        n += 1
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"expected a JSON object, got {type(record).__name__}")
        except ValueError as exc:
            chunk.errors.append(RowError(n, None, f"is not a JSON object ({exc})"))
            record = None
        chunk.records.append(record)
        if len(chunk.records) >= chunk_rows:
            yield chunk
            chunk = Chunk([], n + 1)
    if chunk.records or n == 0:
        yield chunk


def _chain(head: str, rest):
    """Lines of ``head`` followed by the rest of the stream, without reading it all."""
    buf = io.StringIO(head)
    pending = ""
    for line in buf:
        if not line.endswith("\n"):
            pending = line
            break
        yield line
    for line in rest:
        if pending:
            line, pending = pending + line, ""
        yield line
    if pending:
        yield pending


@contextmanager
def output_file(path: str, source: str):
    """A text stream for the scored records: stdout for ``-``; otherwise a temporary file beside ``path``
    that replaces it only when scoring succeeds, so a failure never leaves a half-written or emptied file."""
    if path == "-":
        with open_text("-", "w") as out:
            yield out
        return
    if source != "-" and os.path.exists(source) and os.path.exists(path) and os.path.samefile(source, path):
        raise InputError(f"--output {path} is the input file; write the scored records to another file")
    tmp = f"{path}.partial"
    try:
        with open_text(tmp, "w") as out:
            yield out
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class RecordWriter:
    """Writes each scored record back with ``prediction`` and, for classifiers, ``proba_<class>`` columns."""

    def __init__(self, stream, fmt: str, classes: tuple):
        self.stream, self.fmt, self.classes = stream, fmt, classes
        self.proba_names = [f"proba_{c}" for c in classes]
        self.columns: list[str] | None = None  # the CSV header, so an input with no rows still gets one
        self._csv = None

    def finish(self) -> None:
        """Write the CSV header if no row was written (an input with a header and no rows)."""
        if self.fmt == "csv" and self._csv is None and self.columns is not None:
            csv.writer(self.stream).writerow([*self.columns, "prediction", *self.proba_names])

    def write(self, records: list[dict], labels, probabilities) -> None:
        for j, record in enumerate(records):
            out = dict(record)
            label = labels[j]
            out["prediction"] = label.item() if hasattr(label, "item") else label
            if probabilities is not None:
                for name, p in zip(self.proba_names, probabilities[j].tolist(), strict=False):
                    out[name] = round(p, 6)
            if self.fmt == "jsonl":
                self.stream.write(json.dumps(out, default=str) + "\n")
            else:
                if self._csv is None:
                    self._csv = csv.DictWriter(self.stream, fieldnames=list(out), extrasaction="ignore")
                    self._csv.writeheader()
                self._csv.writerow(out)
