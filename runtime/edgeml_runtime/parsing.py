"""From raw bytes to records, within limits: the reader core under ``score`` (:mod:`.records`) and ``run``
(:mod:`.stream`).

Both commands read bytes, never a decoded text stream, so one byte that is
not UTF-8 spoils one row, not the file. Lines end at ``\\n``, ``\\r\\n`` or a
lone ``\\r`` (old Mac files). Whatever is wrong with one line or record is a
:class:`~.errors.RowError` for its row, never an exception that ends the
input, and never a row that silently disappears: rows read = rows scored +
rows reported as errors. The bounds, each a row error when exceeded, are a
:class:`ReadLimits` (``[run]`` keys ``max_line_bytes``, ``max_value_chars``,
``max_depth``; the same flags on ``score``, which also takes
``--max-record-lines``).

Example:

>>> limits = ReadLimits(max_depth=3)
>>> parse_json('{"a": 1, "b": [2, 3]}', limits)
({'a': 1, 'b': [2, 3]}, None)
>>> parse_json('{"a": [[[1]]]}', limits)[1]
'is nested 4 levels deep, more than the limit of 3 (max_depth)'
>>> parse_json('{"a": "\\\\ud800"}', limits)[1]
"value of 'a' holds a lone UTF-16 surrogate (\\\\ud800…\\\\udfff), which is not text; send the character itself"
>>> s = LineSplitter(16)
>>> s.feed(b"a,b\\r\\n1,2\\r3,4\\n" + b"x" * 20 + b"\\nlast")
[b'a,b\\r\\n', b'1,2\\r', b'3,4\\n', OVERLONG]
>>> s.finish()
[b'last']
"""

from __future__ import annotations

import csv
import json
import re
from collections import deque
from dataclasses import dataclass
from itertools import accumulate

from .errors import InputError, SettingsError, check_count
from .headers import delimiter, read_header

#: Bytes read from a file or stdin at once (``read1``: what is there, at most this).
READ_BYTES = 64 * 1024
#: The largest ``max_line_bytes``: Python's csv module refuses fields above its own limit, set to this.
LINE_BYTES_CEILING = 64 * 2**20
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class ReadLimits:
    """Bounds on what one input row may be; beyond each, the row is an error and the rest is read on.

    ``max_line_bytes``: a line (a JSON Lines record, a CSV line or a CSV
    record whose quoted value spans lines) longer than this is cut off and
    reported; ``max_value_chars``: the longest text value; ``max_depth``: how
    deeply JSON arrays and objects may nest (the record itself is level 1);
    ``max_record_lines``: how many lines a quoted CSV value may span before
    its quote counts as unclosed (``score`` only: ``run`` reads one record
    per line).

    >>> ReadLimits(max_depth=0)
    Traceback (most recent call last):
    ...
    edgeml_runtime.errors.SettingsError: max_depth = 0: must be a whole number of levels, at least 1; give \
max_depth = 1 or more
    """

    max_line_bytes: int = 2**20
    max_value_chars: int = 2**16
    max_depth: int = 32
    max_record_lines: int = 100

    def __post_init__(self):
        check_count("max_line_bytes", self.max_line_bytes, 16, "bytes")
        check_count("max_value_chars", self.max_value_chars, 1, "characters")
        check_count("max_depth", self.max_depth, 1, "levels")
        check_count("max_record_lines", self.max_record_lines, 1, "lines")
        if self.max_line_bytes > LINE_BYTES_CEILING:
            raise SettingsError(key="max_line_bytes", value=self.max_line_bytes,
                                allowed=f"must be at most {LINE_BYTES_CEILING:,} (64 MiB)",
                                fix="records that long do not belong in a line-oriented file")


#: The limits a reader applies when given none.
DEFAULT_LIMITS = ReadLimits()


class _Overlong:
    """Marks a line cut at ``max_line_bytes``: the line is a row error, its rest was skipped."""

    def __repr__(self) -> str:
        return "OVERLONG"


OVERLONG = _Overlong()


def overlong_reason(limits: ReadLimits) -> str:
    return (f"is longer than the limit of {limits.max_line_bytes:,} bytes (max_line_bytes); the rest of the line "
            "was skipped")


class LineSplitter:
    """Cuts bytes, fed in pieces as they arrive, into lines that keep their endings; never holds more than a line.

    :meth:`feed` returns the lines completed so far; a line longer than
    ``max_bytes`` comes out once as :data:`OVERLONG` and its rest is dropped
    up to its end. :meth:`finish` returns the last line if it has no ending.
    A ``\\r`` at the end of a piece is held back until the next byte says
    whether a ``\\n`` follows. A UTF-8 byte-order mark at the very start is dropped.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._buf = b""
        self._skipping = False
        self._started = False

    def feed(self, data: bytes) -> list:
        if not self._started:
            data = self._strip_bom(data)
        if self._skipping:
            cut = _first_end(data)
            if cut < 0:
                return []
            data, self._skipping = data[cut:], False
        buf = self._buf + data
        lines = buf.splitlines(keepends=True)
        self._buf = b""
        if lines and (lines[-1].endswith(b"\r") or not lines[-1].endswith(b"\n")):
            self._buf = lines.pop()  # no ending yet, or a "\r" that a "\n" may follow
        out = [OVERLONG if len(line) > self.max_bytes else line for line in lines]
        if len(self._buf) > self.max_bytes:
            out.append(OVERLONG)
            self._skipping = not self._buf.endswith(b"\r")  # a complete line needs no skipping
            self._buf = b""
        return out

    def finish(self) -> list:
        """The last line, when the input ended without a line ending (or a held-back ``\\r``)."""
        buf, self._buf, self._skipping = self._buf, b"", False
        if not buf:
            return []
        return [OVERLONG if len(buf) > self.max_bytes else buf]

    def _strip_bom(self, data: bytes) -> bytes:
        head = self._buf + data
        self._buf = b""
        if len(head) < len(_BOM) and _BOM.startswith(head):
            self._buf = head  # too short to tell yet: keep it for the next piece
            return b""
        self._started = True
        return head[len(_BOM):] if head.startswith(_BOM) else head


def _first_end(data: bytes) -> int:
    """Where the first line ending in ``data`` ends (past ``\\r\\n``), or -1."""
    n, r = data.find(b"\n"), data.find(b"\r")
    if r >= 0 and (n < 0 or r < n):
        return r + 2 if data[r + 1 : r + 2] == b"\n" else r + 1
    return n + 1 if n >= 0 else -1


def read_lines(stream, limits: ReadLimits):
    """Lines of a binary ``stream`` (a file, stdin's buffer, BytesIO) as :class:`LineSplitter` cuts them."""
    splitter = LineSplitter(limits.max_line_bytes)
    read = getattr(stream, "read1", stream.read)
    while data := read(READ_BYTES):
        yield from splitter.feed(data)
    yield from splitter.finish()


def decode(raw: bytes) -> tuple[str, str | None]:
    """A line as text, and why it is not UTF-8 (None when it is); bad bytes become U+FFFD in the text."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return raw.decode("utf-8", "replace"), (f"is not UTF-8 text ({exc.reason} at byte {exc.start} of the line); "
                                                "re-save the file as UTF-8")


# --- JSON -----------------------------------------------------------------------------------

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def json_depth(text: str) -> int:
    """How deeply arrays and objects nest in ``text`` (brackets inside strings do not count), without parsing it.

    >>> json_depth('{"a": [1, {"b": "[[["}]}'), json_depth("3")
    (3, 0)
    """
    steps = [_STEP[c] for c in _BRACKET.findall(_STRING.sub("", text))]
    return max(accumulate(steps), default=0)


def parse_json(text: str, limits: ReadLimits) -> tuple[dict | None, str | None]:
    """One JSON Lines record: ``(record, None)``, or ``(None, why it cannot be one)``; never raises.

    The nesting depth is checked before :func:`json.loads` (which would
    recurse until Python's limit), and the values after (:func:`value_problem`).
    """
    if text.count("[") + text.count("{") > limits.max_depth:
        depth = json_depth(text)
        if depth > limits.max_depth:
            return None, f"is nested {depth} levels deep, more than the limit of {limits.max_depth} (max_depth)"
    try:
        record = json.loads(text)
    except RecursionError:  # cannot happen within max_depth; kept so that no input ends the reader
        return None, "is nested too deeply to read"
    except ValueError as exc:  # also too many digits in an integer
        return None, f"is not valid JSON ({exc})"
    if not isinstance(record, dict):
        return None, f"is a JSON {type(record).__name__}, not an object"
    if len(text) <= limits.max_value_chars and text.isascii() and "\\u" not in text:
        return record, None  # no value is longer than its line; ASCII without a \u escape holds no surrogate
    problem = value_problem(record, limits, escapes="\\u" in text)
    return (None, problem) if problem else (record, None)


def value_problem(record: dict, limits: ReadLimits, *, escapes: bool = True) -> str | None:
    """Why a parsed record's values cannot be read (None if they can): text over ``max_value_chars``, or a lone
    surrogate (JSON ``"\\ud800"``), which is no character and which no engine can take.

    ``escapes=False`` says the source had no ``\\u`` escape, the only way JSON text can hold a surrogate.
    """
    limit = limits.max_value_chars
    for key, value in record.items():
        if type(value) is str and len(value) > limit:
            return (f"value of {_shown(key)} is {len(value):,} characters long, more than the limit of {limit:,} "
                    "(max_value_chars)")
    if escapes:
        for key, value in record.items():
            if not _is_text(key) or not _is_text(value):
                return (f"value of {_shown(key)} holds a lone UTF-16 surrogate (\\ud800…\\udfff), which is not text; "
                        "send the character itself")
    return None


def _is_text(value) -> bool:
    """False if ``value`` (a key, or a JSON value at any depth) holds a string that is not encodable as UTF-8."""
    if type(value) is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if type(value) is list:
        return all(map(_is_text, value))
    if type(value) is dict:
        return all(_is_text(k) and _is_text(v) for k, v in value.items())
    return True


def _shown(key: str) -> str:
    """A key as a message shows it: quoted, cut at 40 characters, surrogates escaped."""
    text = repr(key[:40]) + ("…" if len(key) > 40 else "")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# --- CSV ------------------------------------------------------------------------------------

class _TooLong(Exception):
    """Raised through csv's reader by :class:`_RecordLines` when a record outgrows the limits."""


class _RecordLines:
    """The lines csv's reader pulls, one record at a time: decoded, bounded, and replayable.

    csv asks for another line only while a quoted value is open. Past
    ``max_record_lines`` lines or ``max_line_bytes`` bytes, :class:`_TooLong`
    ends the record; :meth:`replay` then puts back all but its first line, so
    reading resumes right after the line that opened the quote: one row is
    lost to an unclosed quote, and it is reported. ``eof`` is set when the
    input ended inside a record (a quote open to the end).
    """

    def __init__(self, lines, limits: ReadLimits):
        self._source, self.limits = iter(lines), limits
        self._back: deque = deque()
        self.begin()

    def begin(self) -> None:
        self.current: list = []
        self.size, self.problem, self.eof = 0, None, False

    def replay(self) -> None:
        self._back.extendleft(reversed(self.current[1:]))

    def push(self, raw) -> None:
        self._back.appendleft(raw)

    def take(self):
        """The next raw line (bytes or :data:`OVERLONG`), or None at the end."""
        if self._back:
            return self._back.popleft()
        return next(self._source, None)

    def __iter__(self):
        return self

    def __next__(self) -> str:
        raw = self.take()
        if raw is None:
            self.eof = bool(self.current)
            raise StopIteration
        self.current.append(raw)
        if raw is OVERLONG:
            self.problem = self.problem or overlong_reason(self.limits)
            text = "\n"  # the cut line reads as empty; its row is reported, not scored
            if len(self.current) == 1:
                text = "?\n"  # an empty line would be skipped as blank: keep the row
        else:
            text, bad = decode(raw)
            self.problem = self.problem or bad
            self.size += len(raw)
        if len(self.current) > self.limits.max_record_lines or self.size > self.limits.max_line_bytes:
            raise _TooLong
        return text


class CsvReader:
    """CSV records from lines as :class:`LineSplitter` cuts them: the header, then one entry per row.

    The delimiter is decided from the header line as the host decides it (:func:`~.headers.delimiter`).
    A quoted value may span lines (up to ``max_record_lines``). :meth:`rows`
    yields ``(values, None)`` for a readable row and ``(None, reason)`` for
    one that is not; blank lines are not rows. A header that cannot be read
    is an :class:`~.errors.InputError` for the whole input. The header's cells
    are named by :func:`~.headers.read_header` (empty and repeated cells
    named, whitespace tidied, as the host names them); ``header_notes`` says
    what was renamed.
    """

    def __init__(self, lines, limits: ReadLimits):
        self.limits = limits
        self._lines = _RecordLines(lines, limits)
        self.header: list[str] | None = None
        self.header_notes: tuple[str, ...] = ()
        self.delimiter = ","
        first = self._lines.take()
        while first is not None and first is not OVERLONG and not first.strip():
            first = self._lines.take()
        if first is None:
            return
        if first is not OVERLONG:
            self.delimiter = delimiter(decode(first)[0])  # decided as the host decides it, from the header
        self._lines.push(first)
        self._reader = csv.reader(self._lines, delimiter=self.delimiter, quotechar='"')
        values, reason = self._record()
        if reason is not None:
            raise InputError(f"the CSV header (the first line) {reason}; fix the header line")
        named = read_header(values)  # the names the host gave the same header line
        self.header = list(named.names)
        self.header_notes = named.notes

    def rows(self):
        """``(values, None)`` or ``(None, reason)`` per row, to the end of the input."""
        if self.header is None:
            return
        width = len(self.header)
        while True:
            values, reason = self._record()
            if values is None and reason is None:
                return
            if reason is None and len(values) != width:
                reason = f"has {len(values)} fields, the header has {width}"
            elif reason is None and self._lines.size > self.limits.max_value_chars:
                longest = max(values, key=len)
                if len(longest) > self.limits.max_value_chars:
                    column = self.header[values.index(longest)]
                    reason = (f"value of {_shown(column)} is {len(longest):,} characters long, more than the limit "
                              f"of {self.limits.max_value_chars:,} (max_value_chars)")
            yield (None, reason) if reason is not None else (values, None)

    def _record(self) -> tuple[list[str] | None, str | None]:
        """The next non-blank record: ``(values, problem)``; ``(None, None)`` at the end of the input."""
        lines = self._lines
        while True:
            lines.begin()
            try:
                values = next(self._reader)
            except StopIteration:
                return None, None
            except _TooLong:
                lines.replay()
                if lines.size > self.limits.max_line_bytes:
                    return None, (f"opens a quoted value that is still open after {self.limits.max_line_bytes:,} "
                                  f"bytes (max_line_bytes); {_CLOSE}")
                return None, (f"opens a quoted value that is still open after {self.limits.max_record_lines} lines "
                              f"(max_record_lines); {_CLOSE}")
            except csv.Error as exc:
                return None, f"is not valid CSV ({exc})"
            if lines.eof:
                lines.replay()
                return None, f"opens a quoted value that runs to the end of the input; {_CLOSE}"
            if not values and lines.problem is None:
                continue  # a blank line is not a row
            return values, lines.problem


_CLOSE = 'close the quote (a quote inside a quoted value is written twice: "")'
