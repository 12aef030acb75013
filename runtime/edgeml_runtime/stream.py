"""Sources of records for ``edgeml-runtime run``: a file or stdin (optionally followed as it
grows), read on a thread into a queue, so the scoring loop can close drift windows on time
even while no record arrives.

Each queued :class:`Item` is one input row: its 1-based number and either the record or
the :class:`RowError` that made it unreadable. :data:`END` marks the end of the input.
"""

from __future__ import annotations

import csv
import io
import json
import os
import queue
import sys
import threading
from dataclasses import dataclass

from .errors import InputError, RowError

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
        self.rows = 0

    def parse(self, line: str) -> Item | None:
        if not line.strip():
            return None
        if self.fmt == "csv" and self.header is None:
            self.header = next(csv.reader([line]))
            return None
        self.rows += 1
        if self.fmt == "csv":
            values = next(csv.reader([line]))
            if len(values) != len(self.header):
                return Item(self.rows, None, RowError(self.rows, None, f"has {len(values)} fields, the header has {len(self.header)}"))
            return Item(self.rows, dict(zip(self.header, values)))
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
                self._pump(io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig"), follow=False)
            else:
                self._read_file()
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
        f = open(self.path, encoding="utf-8-sig", newline="")
        inode = os.fstat(f.fileno()).st_ino
        partial = ""
        try:
            while not self.stop.is_set():
                line = f.readline()
                if line:
                    if not line.endswith("\n"):
                        partial += line
                        continue
                    self._emit(partial + line)
                    partial = ""
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
                    f = open(self.path, encoding="utf-8-sig", newline="")
                    inode, partial = os.fstat(f.fileno()).st_ino, ""
                    self.parser.header = None  # a new CSV file starts with its header again
        finally:
            f.close()
