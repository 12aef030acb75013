"""Records read from an MQTT input topic: every message handled, acknowledged once, and accounted for.

paho acknowledges a QoS 1 message (PUBACK) when ``on_message`` returns; if
the callback raises, no PUBACK is sent, the exception ends the connection,
and the broker redelivers the message on every reconnect: one poison message
stops the device for good. So :meth:`TopicRecords.on_message` never raises.
Each message ends one of three ways, each counted:

* **read**: each non-blank line (cut as a file's lines are) becomes an
  :class:`~.stream.Item` on the queue, a record or its
  :class:`~.errors.RowError` from :meth:`~.stream.LineParser.parse`, which
  bounds each line (the window counts that row as bad; the line is also kept
  as a ``row`` dead letter);
* **refused** whole, kept as a ``message`` dead letter: larger than
  ``max_bytes``, or its handling failed in a way nobody foresaw;
* **dropped**: a line that found the queue full for a second (the scorer
  is behind), kept as a ``dropped`` dead letter.

Example:

>>> import queue
>>> from types import SimpleNamespace
>>> inbox = TopicRecords("sensors/x", queue.Queue(), max_bytes=64)
>>> inbox.on_message(None, None, SimpleNamespace(topic="sensors/x", payload=b'{"rpm": 1500}\\n[1]'))
>>> inbox.on_message(None, None, SimpleNamespace(topic="sensors/x", payload=b"x" * 65))
>>> inbox.counts
{'records_received': 2, 'records_dropped': 0, 'messages_refused': 1, 'row_errors': 1}
"""

from __future__ import annotations

import logging
import queue
import threading

from .deadletter import DeadLetters
from .errors import RowError, shorten
from .parsing import OVERLONG, LineSplitter
from .stream import Item, LineParser

#: The default size limit of one input message.
DEFAULT_MAX_BYTES = 1 * 2**20
#: How long a line waits for room in the queue before it is dropped.
PUT_SECONDS = 1.0
#: What a dead letter keeps of a line too long to be one (the start of its message).
PREVIEW = 4096
#: Refusals logged one by one; after that they are counted only.
LOGGED = 20
#: The deepest nesting of a value a record may hold (a reading is flat; deeper lists exhaust the stack later).
MAX_DEPTH = 32


class TopicRecords:
    """The ``on_message`` handler of an input topic (see the module docstring)."""

    def __init__(self, topic: str, items: queue.Queue, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 dead_letters: DeadLetters | None = None, log: logging.Logger | None = None):
        self.topic, self.items, self.max_bytes = topic, items, max_bytes
        self.dead_letters = dead_letters
        self.log = log or logging.getLogger("edgeml_runtime.inbox")
        self.parser = LineParser("jsonl")
        self._lock = threading.Lock()
        self.counts = dict(records_received=0, records_dropped=0, messages_refused=0, row_errors=0)
        self._logged = 0

    def on_message(self, client, userdata, message) -> None:
        """paho's callback: read ``message`` into the queue. Never raises, so paho always acknowledges it."""
        try:
            payload = bytes(message.payload)
        except Exception:  # noqa: BLE001  (a payload paho could not give; nothing to read)
            payload = b""
        try:
            self._read(message, payload)
        except Exception as exc:  # noqa: BLE001  (a bug or a foreign failure must not stop the input)
            self._refuse(message, payload, f"could not be handled ({type(exc).__name__}: {shorten(str(exc))})")

    def _read(self, message, payload: bytes) -> None:
        if len(payload) > self.max_bytes:
            self._refuse(message, payload, f"is {len(payload)} bytes; input messages of at most {self.max_bytes} "
                                           "bytes are read (setting input_max_bytes)")
            return
        splitter = LineSplitter(self.parser.limits.max_line_bytes)  # lines cut as a file's are (\n, \r\n, \r)
        for line in [*splitter.feed(payload), *splitter.finish()]:
            item = self._parse(line)
            line = payload[:PREVIEW] if line is OVERLONG else line
            if item is None:
                continue
            if item.error is not None:
                self._count("row_errors")
                self._letter(message, line, f"row {item.row}: {item.error.reason}", "row")
            try:
                self.items.put(item, timeout=PUT_SECONDS)
                self._count("records_received")
            except queue.Full:
                self._count("records_dropped")
                self._letter(message, line, f"row {item.row}: the input queue stayed full; the record was not "
                                            "scored", "dropped")
                self._warn("input queue full: dropped record %d from %s", item.row, _topic(message))

    def _parse(self, line: bytes) -> Item | None:
        """One line as an Item; the parser should never raise, and if it does the line is a row error."""
        try:
            item = self.parser.parse(line)
        except Exception as exc:  # noqa: BLE001  (e.g. RecursionError for JSON nested too deep)
            self.parser.rows += 1
            row = self.parser.rows
            return Item(row, None, RowError(row, None, f"could not be read ({type(exc).__name__})"))
        problem = _problem(item.record) if item is not None and item.record is not None else None
        if problem:
            return Item(item.row, None, RowError(item.row, None, problem))
        return item

    def _refuse(self, message, payload: bytes, reason: str) -> None:
        self._count("messages_refused")
        self._letter(message, payload, reason, "message")
        self._warn("input message on %s refused and kept as a dead letter: it %s", _topic(message), reason)

    def _letter(self, message, payload: bytes, reason: str, kind: str) -> None:
        if self.dead_letters is not None:
            self.dead_letters.add(topic=_topic(message), reason=reason, payload=payload, kind=kind)

    def _count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    def _warn(self, msg: str, *args) -> None:
        self._logged += 1
        if self._logged <= LOGGED:
            self.log.warning(msg, *args)
        elif self._logged == LOGGED + 1:
            self.log.warning("more refused input: counting it (stats, dead-letter file), not logging each")


def _topic(message) -> str | None:
    try:
        return message.topic
    except Exception:  # noqa: BLE001  (paho raises for a topic that is not UTF-8)
        return None


def _problem(record: dict) -> str | None:
    """Why ``record`` cannot be scored safely, or None: text that cannot be UTF-8 (a lone surrogate), or a value
    nested deeper than :data:`MAX_DEPTH` (its repr in an error message would exhaust the stack)."""
    for key, value in record.items():
        try:
            key.encode("utf-8")
            if isinstance(value, str):
                value.encode("utf-8")
        except (UnicodeEncodeError, AttributeError):
            return "holds text that is not valid Unicode (a lone surrogate such as \\ud800)"
        if isinstance(value, list | dict) and _depth(value) > MAX_DEPTH:
            return f"column {key!r} holds a value nested more than {MAX_DEPTH} levels deep"
    return None


def _depth(value) -> int:
    """How deep lists and objects nest in ``value``, counted without recursion (stops past MAX_DEPTH)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > MAX_DEPTH:
            break
        children = v.values() if isinstance(v, dict) else v
        stack.extend((c, d + 1) for c in children if isinstance(c, list | dict))
    return deepest
