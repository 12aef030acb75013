"""Read records to score and write them back with their predictions.

CSV (delimiter decided from the header line by :func:`edgeml_runtime.headers.delimiter`, UTF-8
byte-order mark tolerated) and JSON Lines, from a file or standard input, in chunks so that a
large file never sits in memory.
A JSON line that does not parse is a row error like any other bad value.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import InputError, RowError
from .parsing import (
    DEFAULT_LIMITS,
    LINE_BYTES_CEILING,
    OVERLONG,
    CsvReader,
    ReadLimits,
    decode,
    overlong_reason,
    parse_json,
    read_lines,
)

FORMATS = ("csv", "jsonl")
CHUNK_ROWS = 4096
csv.field_size_limit(LINE_BYTES_CEILING)  # csv's own bound: ReadLimits.max_line_bytes stays below it


@dataclass
class Chunk:
    """Up to :data:`CHUNK_ROWS` records; ``first_row`` is the 1-based number of the first.

    A row that could not be parsed at all is ``None`` in ``records`` and has
    its :class:`RowError` in ``errors``. ``columns`` is the CSV header, its
    cells named by :func:`~.headers.read_header` as the host named them when
    it read the training file (an empty cell is ``column_<position>``, a
    repeated name ``<name>_2``); JSON records keep their keys exactly.
    """

    records: list[dict | None]
    first_row: int
    errors: list[RowError] = field(default_factory=list)
    columns: list[str] | None = None


def guess_format(path: str, fmt: str | None, *, stdin: str | None = None) -> str:
    """``fmt`` if given, else from the file name: ``.jsonl``, ``.ndjson`` and ``.json`` are JSON Lines, the rest CSV.

    Standard input (``-``) has no name: ``stdin`` is its format, or an error asks for one.

    >>> guess_format("readings.csv", None), guess_format("log.ndjson", None), guess_format("-", None, stdin="jsonl")
    ('csv', 'jsonl', 'jsonl')
    """
    if fmt:
        if fmt not in FORMATS:
            raise InputError(f"unknown input format {fmt!r}; use one of {', '.join(FORMATS)}")
        return fmt
    if path.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if path == "-":
        if stdin:
            return stdin
        raise InputError("reading from standard input needs --format csv or --format jsonl")
    return "csv"


def open_input(path: str):
    """The input as a binary stream (stdin's for ``-``): lines are cut and decoded one by one (:mod:`.parsing`)."""
    if path == "-":
        return contextlib.nullcontext(sys.stdin.buffer)
    try:
        return open(path, "rb")
    except OSError as exc:
        raise InputError(f"cannot open {path}: {exc.strerror}") from None


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


def read_chunks(stream, fmt: str, chunk_rows: int = CHUNK_ROWS, limits: ReadLimits = DEFAULT_LIMITS) -> Iterator[Chunk]:
    """Records from a binary ``stream`` in chunks; CSV values stay text, JSON values keep their types.

    Every row is a record or a :class:`RowError` in its chunk, none is lost.
    An input without a single non-blank line is an :class:`InputError` in
    both formats; a CSV header with no rows gives one empty chunk (so that
    the output gets its header).
    """
    lines = read_lines(stream, limits)
    return _csv_chunks(lines, chunk_rows, limits) if fmt == "csv" else _jsonl_chunks(lines, chunk_rows, limits)


def _empty() -> InputError:
    return InputError("the input is empty: expected at least one record (and, for CSV, a header line before it)")


def _csv_chunks(lines, chunk_rows, limits):
    reader = CsvReader(lines, limits)
    if reader.header is None:
        raise _empty()
    header = reader.header
    chunk = Chunk([], 1, columns=header)
    i = 0
    for values, reason in reader.rows():
        i += 1
        if reason is not None:
            chunk.errors.append(RowError(i, None, reason))
            chunk.records.append(None)
        else:
            chunk.records.append(dict(zip(header, values, strict=True)))
        if len(chunk.records) >= chunk_rows:
            yield chunk
            chunk = Chunk([], i + 1, columns=header)
    if chunk.records or chunk.first_row == 1:
        yield chunk


def _jsonl_chunks(lines, chunk_rows, limits):
    chunk = Chunk([], 1)
    n = 0
    for raw in lines:
        if raw is OVERLONG:
            record, reason = None, overlong_reason(limits)
        else:
            text, reason = decode(raw)
            if not text.strip():
                continue
            if reason is None:
                record, reason = parse_json(text, limits)
            else:
                record = None
        n += 1
        if reason is not None:
            chunk.errors.append(RowError(n, None, reason))
        chunk.records.append(record)
        if len(chunk.records) >= chunk_rows:
            yield chunk
            chunk = Chunk([], n + 1)
    if n == 0:
        raise _empty()
    if chunk.records:
        yield chunk


class RecordWriter:
    """Writes each scored record back with ``prediction`` and, for classifiers, ``proba_<class>`` columns.

    Those names are the writer's: an input column of the same name would be
    overwritten, so :meth:`check_columns` refuses it (rename it in the input).
    """

    def __init__(self, stream, fmt: str, classes: tuple):
        self.stream, self.fmt, self.classes = stream, fmt, classes
        self.proba_names = [f"proba_{c}" for c in classes]
        self.added = frozenset(["prediction", *self.proba_names])
        self.columns: list[str] | None = None  # the CSV header, so an input with no rows still gets one
        self._csv = None

    def clashes(self, names) -> list[str]:
        """The input column names among those the writer adds, in input order."""
        return [n for n in names if n in self.added]

    def check_columns(self, names, where: str) -> None:
        """Refuse input columns named like the output's own (``where`` says which input or row has them)."""
        clash = self.clashes(names)
        if clash:
            raise InputError(f"{where} has column(s) {', '.join(map(repr, clash))}, which the scored output adds "
                             f"itself ({', '.join(sorted(self.added))}); rename them in the input (e.g. "
                             f"{clash[0] + '_input'!r}) so that nothing is overwritten")

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


@dataclass
class ScoreReport:
    """What :func:`score_stream` did: ``rows`` read = ``scored`` + ``bad`` (rows reported as errors).

    ``errors`` holds the first ``keep_errors`` of them, in row order;
    ``ignored_columns`` the input columns that are not model inputs.
    """

    rows: int = 0
    scored: int = 0
    bad: int = 0
    errors: list[RowError] = field(default_factory=list)
    ignored_columns: tuple[str, ...] = ()


def score_stream(model, src, dst, fmt: str, *, on_error: str = "fail", limits: ReadLimits = DEFAULT_LIMITS,
                 chunk_rows: int = CHUNK_ROWS, keep_errors: int = 10, name: str = "the input") -> ScoreReport:
    """Score every record of the binary stream ``src`` with ``model`` and write them to the text stream ``dst``.

    ``on_error="fail"`` raises the first :class:`RowError`; ``"skip"``
    scores the other rows and reports the bad ones. Nothing is lost
    silently: every row read is either written with its prediction or
    counted in :attr:`ScoreReport.bad`. Input columns that clash with the
    output's, and CSV inputs lacking a model column, are an
    :class:`InputError` before anything is scored (``name`` names the input).
    """
    report = ScoreReport()
    writer = RecordWriter(dst, fmt, model.classes)
    for chunk in read_chunks(src, fmt, chunk_rows, limits):
        if chunk.columns is not None and writer.columns is None:
            missing = model.encoder.missing_columns(chunk.columns)
            if missing:
                raise InputError(f"{name} has no column(s) {', '.join(map(repr, missing))}; the model needs "
                                 f"{', '.join(map(repr, model.manifest.schema.names))}")
            writer.check_columns(chunk.columns, name)
            writer.columns = chunk.columns
        rows = [chunk.first_row + j for j, r in enumerate(chunk.records) if r is not None]
        records = [r for r in chunk.records if r is not None]
        if fmt == "jsonl":
            for row, record in zip(rows, records, strict=True):
                if not writer.added.isdisjoint(record):
                    writer.check_columns(record, f"{name}, row {row},")
        result = model.predict(records, on_error="skip", row_numbers=rows)
        errors = sorted(chunk.errors + list(result.errors), key=lambda e: e.row)
        if errors and on_error == "fail":
            raise errors[0]
        report.rows += len(chunk.records)
        report.bad += len(errors)
        report.errors += errors[: max(0, keep_errors - len(report.errors))]
        report.ignored_columns = report.ignored_columns or result.ignored_columns
        writer.write([records[i] for i in result.rows], result.labels, result.probabilities)
        report.scored += len(result)
    writer.finish()
    return report
