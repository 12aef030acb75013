"""Sources of records for ``edgeml-runtime run``: a file or stdin (optionally followed as it
grows), read on a thread into a queue, so the scoring loop can close drift windows on time
even while no record arrives.

Each queued :class:`Item` is one input row: its 1-based number and either the record or
the :class:`RowError` that made it unreadable. :data:`END` marks the end of the input. A
reader that fails (an I/O error, or a bug) keeps the exception in :attr:`FileSource.error`
before it puts :data:`END`, so the run ends non-zero saying so, never with a clean "done".
"""

from __future__ import annotations

import csv
import logging
import os
import queue
import sys
import threading
from dataclasses import dataclass

from .errors import InputError, RowError
from .headers import delimiter, read_header
from .parsing import (
    DEFAULT_LIMITS,
    OVERLONG,
    READ_BYTES,
    LineSplitter,
    ReadLimits,
    decode,
    overlong_reason,
    parse_json,
)

log = logging.getLogger("edgeml_runtime.stream")

END = object()
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Item:
    row: int
    record: dict | None
    error: RowError | None = None


class LineParser:
    """Turns input lines into records: JSON objects, or CSV rows under the first line's header.

    The contract, which the MQTT input relies on: :meth:`parse` never
    raises, whatever it is given. It returns None for a line that is no row
    (blank, or the CSV header) and otherwise an :class:`Item`: the record, or
    a :class:`RowError` saying why the line is not one. The bounds of
    :class:`~.parsing.ReadLimits` are each a row error: a line over
    ``max_line_bytes`` (bytes; characters for text), text that is not UTF-8
    or holds a lone surrogate, JSON nested deeper than ``max_depth``, a text
    value over ``max_value_chars``. In CSV a record is one line: a quote
    still open at its end is a row error (``run`` reads no value across
    lines), and a header that cannot be read makes every row an error that
    names the header's problem.

    >>> p = LineParser("csv")
    >>> p.parse(b"a,b\\n"), p.parse(b"1,2\\n").record, p.parse(b'3,"4\\n').error.reason[:32]
    (None, {'a': '1', 'b': '2'}, 'opens a quoted value that is not')
    """

    def __init__(self, fmt: str, limits: ReadLimits = DEFAULT_LIMITS):
        self.fmt, self.limits = fmt, limits
        self.header: list[str] | None = None
        self.header_problem: str | None = None
        self.delimiter = ","
        self.rows = 0

    def parse(self, raw) -> Item | None:
        """One line (bytes, text, or :data:`~.parsing.OVERLONG`) as an Item, or None for a blank or header line."""
        try:
            return self._parse(raw)
        except Exception as exc:  # the contract: a bug in here costs one row, never the stream
            log.debug("parsing a line failed", exc_info=True)
            return self._bad(f"could not be read ({type(exc).__name__}: {exc})")

    def parse_all(self, data: bytes) -> list[Item]:
        """The Items of a payload of one or more lines (an MQTT message), cut as a file's lines are; never raises."""
        try:
            splitter = LineSplitter(self.limits.max_line_bytes)
            lines = [*splitter.feed(bytes(data)), *splitter.finish()]
        except Exception as exc:  # not bytes-like
            return [self._bad(f"could not be read ({type(exc).__name__}: {exc})")]
        return [item for item in map(self.parse, lines) if item is not None]

    def reset(self) -> None:
        """A new CSV file starts with its header again (row numbers go on)."""
        self.header, self.header_problem = None, None

    def _parse(self, raw) -> Item | None:
        line = self._text(raw)
        if not isinstance(line, str):
            return line  # the Item of an unreadable line, or None for a blank one
        line = line.lstrip("\ufeff")
        if not line.strip():
            return None
        if self.fmt == "csv":
            return self._csv(line)
        record, reason = parse_json(line, self.limits)
        return self._bad(reason) if reason is not None else self._ok(record)

    def _text(self, raw) -> str | Item | None:
        if raw is OVERLONG:
            return self._bad(overlong_reason(self.limits))
        if isinstance(raw, str):
            if len(raw) > self.limits.max_line_bytes:
                return self._bad(overlong_reason(self.limits))
            try:
                raw.encode("utf-8")
            except UnicodeEncodeError:
                return self._bad("holds a lone UTF-16 surrogate (\\ud800…\\udfff), which is not text")
            return raw
        if not isinstance(raw, bytes | bytearray | memoryview):
            return self._bad(f"is a {type(raw).__name__}, not bytes or text")
        raw = bytes(raw)
        if len(raw) > self.limits.max_line_bytes:
            return self._bad(overlong_reason(self.limits))
        text, problem = decode(raw)
        if problem is None:
            return text
        if self.fmt == "csv" and self.header is None:
            self.header, self.header_problem = [], problem
            return None
        return self._bad(problem)

    def _csv(self, line: str) -> Item | None:
        if self.header is None:
            self._read_header(line)
            return None
        if self.header_problem is not None:
            return self._bad(f"cannot be read: the CSV header (its first line) {self.header_problem}; fix the header")
        values, reason = self._values(line)
        if reason is None and not values:
            return None  # csv reads some lines of blanks as no fields: not a row, as in score
        if reason is None and len(values) != len(self.header):
            reason = f"has {len(values)} fields, the header has {len(self.header)}"
        if reason is None and len(line) > self.limits.max_value_chars:
            longest = max(values, key=len)
            if len(longest) > self.limits.max_value_chars:
                reason = (f"value of {self.header[values.index(longest)]!r:.60} is {len(longest):,} characters "
                          f"long, more than the limit of {self.limits.max_value_chars:,} (max_value_chars)")
        return self._bad(reason) if reason is not None else self._ok(dict(zip(self.header, values, strict=True)))

    def _read_header(self, line: str) -> None:
        self.delimiter = delimiter(line)  # decided as the host decides it, from the header
        values, reason = self._values(line)
        names = list(read_header(values).names)  # named as the host named the same header line
        self.header, self.header_problem = (names, None) if reason is None else ([], reason)

    def _values(self, line: str) -> tuple[list[str], str | None]:
        one = _OneLine(line)
        try:
            values = next(csv.reader(one, delimiter=self.delimiter, quotechar='"'), [])
        except csv.Error as exc:
            return [], f"is not valid CSV ({exc})"
        if one.wanted_more:
            return [], ("opens a quoted value that is not closed on its line; run reads each CSV record from one "
                        'line: close the quote (a quote inside a quoted value is written twice: "")')
        return values, None

    def _ok(self, record: dict) -> Item:
        self.rows += 1
        return Item(self.rows, record)

    def _bad(self, reason: str) -> Item:
        self.rows += 1
        return Item(self.rows, None, RowError(self.rows, None, reason))


class _OneLine:
    """An iterator of one line for csv's reader; notes whether the reader wanted another (a quote left open)."""

    def __init__(self, line: str):
        self.line, self.wanted_more = line, False

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if self.line is None:
            self.wanted_more = True
            raise StopIteration
        line, self.line = self.line, None
        return line


class FileSource(threading.Thread):
    """Reads ``path`` (or stdin for ``-``) line by line into ``out``, as :class:`LineParser` Items.

    With ``follow``, waits at the end of a file for more lines instead of
    ending, and reopens the file when it is truncated or replaced (log
    rotation). Lines are cut as :class:`~.parsing.LineSplitter` cuts them
    (``\\n``, ``\\r\\n`` or a lone ``\\r``; at most ``max_line_bytes`` held).
    If reading fails, :attr:`error` holds why, and :data:`END` still follows.
    """

    def __init__(self, path: str, fmt: str, out: queue.Queue, *, follow: bool, stop: threading.Event,
                 limits: ReadLimits = DEFAULT_LIMITS):
        super().__init__(name="edgeml-input", daemon=True)
        self.path, self.out, self.follow, self.stop = path, out, follow, stop
        self.parser = LineParser(fmt, limits)
        self.error: BaseException | None = None
        if path != "-" and not os.path.exists(path) and not follow:
            raise InputError(f"input file {path} does not exist")

    def run(self) -> None:
        try:
            if self.path == "-":
                self._pump(sys.stdin.buffer)
            else:
                self._read_file()
        except Exception as exc:  # never end quietly: the scoring loop would take it for the end of the input
            self.error = exc
            log.error("reading %s failed after %d rows (%s: %s); no more records will be read", self.path,
                      self.parser.rows, type(exc).__name__, exc)
            log.debug("the reader's traceback", exc_info=True)
        finally:
            self.out.put(END)

    def _emit(self, lines) -> None:
        for line in lines:
            item = self.parser.parse(line)
            if item is not None:
                self.out.put(item)

    def _splitter(self) -> LineSplitter:
        return LineSplitter(self.parser.limits.max_line_bytes)

    def _pump(self, stream) -> None:
        splitter = self._splitter()
        read = getattr(stream, "read1", stream.read)
        while not self.stop.is_set():
            data = read(READ_BYTES)
            if not data:
                break
            self._emit(splitter.feed(data))
        else:
            return
        self._emit(splitter.finish())

    def _read_file(self) -> None:
        while not os.path.exists(self.path):
            if self.stop.wait(POLL_SECONDS):
                return
        f = open(self.path, "rb")
        inode = os.fstat(f.fileno()).st_ino
        splitter = self._splitter()
        try:
            while not self.stop.is_set():
                data = f.read1(READ_BYTES)
                if data:
                    self._emit(splitter.feed(data))
                    continue
                if not self.follow:
                    self._emit(splitter.finish())
                    return
                if self.stop.wait(POLL_SECONDS):
                    return
                try:
                    st = os.stat(self.path)
                except FileNotFoundError:
                    continue
                if st.st_ino != inode or st.st_size < f.tell():
                    self._emit(splitter.finish())  # the old file's last line, even without its line ending
                    f.close()
                    f = open(self.path, "rb")
                    inode, splitter = os.fstat(f.fileno()).st_ino, self._splitter()
                    self.parser.reset()
        finally:
            f.close()
