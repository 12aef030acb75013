"""Sources of records for ``edgeml-runtime run``: a file or stdin (optionally followed as it
grows), read on a thread into a queue, so the scoring loop can close drift windows on time
even while no record arrives.

Each queued :class:`Item` is one input row: its 1-based number and either the record or
the :class:`RowError` that made it unreadable. :data:`END` marks the end of the input.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import queue
import sys
import threading
from dataclasses import dataclass

from .errors import InputError, RowError

log = logging.getLogger("edgeml_runtime.stream")

END = object()
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Item:
    row: int
    record: dict | None
    error: RowError | None = None


class LineParser:
    """Turns input lines into records: JSON objects, or CSV rows under the first line's header."""

    def __init__(self, fmt: str):
        self.fmt = fmt
        self.header: list[str] | None = None
        self.delimiter = ","
        self.rows = 0

    def parse(self, raw: bytes | str) -> Item | None:
        if isinstance(raw, bytes):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                if not raw.strip():
                    return None
                self.rows += 1
                return Item(self.rows, None,
                            RowError(self.rows, None, f"is not UTF-8 text ({exc.reason} at byte {exc.start})"))
        else:
            line = raw
        line = line.lstrip("\ufeff")
        if not line.strip():
            return None
        if self.fmt == "csv" and self.header is None:
            try:
                self.delimiter = csv.Sniffer().sniff(line, delimiters=",;\t|").delimiter
            except csv.Error:
                self.delimiter = ","
            self.header = next(csv.reader([line], delimiter=self.delimiter))
            return None
        self.rows += 1
        if self.fmt == "csv":
            values = next(csv.reader([line], delimiter=self.delimiter))
            if len(values) != len(self.header):
                return Item(self.rows, None,
                            RowError(self.rows, None, f"has {len(values)} fields, the header has {len(self.header)}"))
            return Item(self.rows, dict(zip(self.header, values, strict=False)))
        try:
            record = json.loads(line)
        except ValueError as exc:
            return Item(self.rows, None, RowError(self.rows, None, f"is not valid JSON ({exc})"))
        if not isinstance(record, dict):
            return Item(self.rows, None, RowError(self.rows, None, f"is a JSON {type(record).__name__}, not an object"))
        return Item(self.rows, record)


class FileSource(threading.Thread):
    """Reads ``path`` (or stdin for ``-``) line by line into ``out``.

    With ``follow``, waits at the end of a file for more lines instead of
    ending, and reopens the file when it is truncated or replaced (log rotation).
    """

    def __init__(self, path: str, fmt: str, out: queue.Queue, *, follow: bool, stop: threading.Event):
        super().__init__(name="edgeml-input", daemon=True)
        self.path, self.out, self.follow, self.stop = path, out, follow, stop
        self.parser = LineParser(fmt)
        if path != "-" and not os.path.exists(path) and not follow:
            raise InputError(f"input file {path} does not exist")

    def run(self) -> None:
        try:
            if self.path == "-":
                self._pump(sys.stdin.buffer, follow=False)
            else:
                self._read_file()
        except Exception:  # never die silently: the scoring loop would just see the input end
            log.exception("reading %s failed; no more records will be read", self.path)
        finally:
            self.out.put(END)

    def _emit(self, line: str) -> None:
        item = self.parser.parse(line)
        if item is not None:
            self.out.put(item)

    def _pump(self, stream, follow: bool) -> None:
        for line in stream:
            if self.stop.is_set():
                return
            self._emit(line)

    def _read_file(self) -> None:
        while not os.path.exists(self.path):
            if self.stop.wait(POLL_SECONDS):
                return
        f = open(self.path, "rb")
        inode = os.fstat(f.fileno()).st_ino
        partial = b""
        try:
            while not self.stop.is_set():
                line = f.readline()
                if line:
                    if not line.endswith(b"\n"):
                        partial += line
                        continue
                    self._emit(partial + line)
                    partial = b""
                    continue
                if not self.follow:
                    if partial:
                        self._emit(partial)
                    return
                if self.stop.wait(POLL_SECONDS):
                    return
                try:
                    st = os.stat(self.path)
                except FileNotFoundError:
                    continue
                if st.st_ino != inode or st.st_size < f.tell():
                    f.close()
                    f = open(self.path, "rb")
                    inode, partial = os.fstat(f.fileno()).st_ino, b""
                    self.parser.header = None  # a new CSV file starts with its header again
        finally:
            f.close()
