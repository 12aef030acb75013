"""Input a device could not use, kept aside for a person: a bounded JSON Lines file beside the outbox.

Each line is one refused input message, or one input row that could not be
read, with when it came, from which topic, why, how big it was and its first
:data:`PREVIEW_BYTES` bytes (as text, undecodable bytes replaced; JSON
escapes the rest, so the file is plain ASCII). The file stays within
``max_bytes``: when the next line would pass half of it, the file becomes
``<name>.1`` (replacing the previous one) and a new one starts, so at most
``max_bytes`` are kept in the two. Writing never raises: a dead letter that
cannot be written (a full disk) is counted in :attr:`DeadLetters.unwritten`
and logged once.

Example:

>>> import json, tempfile, os
>>> letters = DeadLetters(os.path.join(tempfile.mkdtemp(), "o.db.deadletter.jsonl"))
>>> letters.add(topic="sensors/x", reason="is 300 bytes; at most 256 are read", payload=b"x" * 300, kind="message")
>>> entry = json.loads(open(letters.path).read())
>>> entry["kind"], entry["bytes"], len(entry["payload"]), entry["truncated"], letters.count
('message', 300, 300, False, 1)
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .errors import shorten
from .payloads import utc_now

#: The default bound of the dead-letter files (the file and its one older generation).
DEFAULT_MAX_BYTES = 4 * 2**20
#: The smallest bound accepted.
MIN_MAX_BYTES = 64 * 1024
#: How much of each refused payload is kept.
PREVIEW_BYTES = 4096
KINDS = ("message", "row", "dropped")

log = logging.getLogger("edgeml_runtime.deadletter")


class DeadLetters:
    """The dead-letter file of one device (see the module docstring). Thread-safe enough: one writer thread."""

    def __init__(self, path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES):
        self.path = Path(path)
        self.max_bytes = max(max_bytes, MIN_MAX_BYTES)
        self.count = 0          # letters written since start
        self.unwritten = 0      # letters that could not be written
        self._size: int | None = None

    def add(self, *, topic: str | None, reason: str, payload: bytes, kind: str) -> None:
        """Keep one letter; ``kind`` is ``message`` (refused whole), ``row`` (a bad row) or ``dropped`` (no room)."""
        entry = {"time": utc_now(), "kind": kind, "topic": topic, "reason": shorten(reason, 500),
                 "bytes": len(payload), "payload": payload[:PREVIEW_BYTES].decode("utf-8", errors="replace"),
                 "truncated": len(payload) > PREVIEW_BYTES}
        line = (json.dumps(entry) + "\n").encode("ascii")
        try:
            if self._size is None:
                self._size = self.path.stat().st_size if self.path.exists() else 0
            if self._size and self._size + len(line) > self.max_bytes // 2:
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                self._size = 0
            with open(self.path, "ab") as f:
                f.write(line)
            self._size += len(line)
            self.count += 1
        except OSError as exc:
            self._size = None
            self.unwritten += 1
            if self.unwritten == 1:
                log.error("cannot write the dead-letter file %s (%s); refused input is counted, not kept",
                          self.path, exc.strerror or exc)
