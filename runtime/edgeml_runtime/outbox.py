"""A durable, bounded, ordered queue of messages waiting for the broker's acknowledgement.

Every drift window is written here *before* it is sent, and deleted only when
the broker acknowledges it (PUBACK at QoS 1), so a window survives a broker
that is down, a network that is gone and a process killed with ``kill -9``.
It is one SQLite file in WAL mode (plus its ``-wal``, ``-shm`` and ``.lock``
companions); only the standard library is needed.

* **Ordered**: ids increase with every :meth:`Outbox.put` and are never
  reused (``AUTOINCREMENT``); :meth:`Outbox.pending` returns oldest first.
* **Bounded**: the payload and topic bytes of the waiting messages stay within
  ``max_bytes``. A put that would pass it first deletes the oldest messages and
  counts them in :attr:`Outbox.dropped`, which the sender reports in its next
  message (``put(..., reports_dropped=n)`` takes ``n`` off the count in the
  same transaction; if that message is dropped in turn, its ``n`` is counted
  again, so a drop is never forgotten). A message put with ``keep=True`` (an
  update's steps, which a rollout must hear) is never dropped: it counts
  toward the bound, and the droppable messages around it go first.
* **Crash safe**: each put is one transaction, committed with
  ``synchronous=FULL`` by default (the WAL is fsynced: a window that
  :meth:`put` returned for survives a power cut, not only ``kill -9``). Acks
  commit with ``synchronous=NORMAL``: a power cut may forget the last acks,
  which only means those windows are sent again and de-duplicated by the
  consumer. ``bench/bench_outbox.py`` measures both settings.
* **Degrades, never stops scoring**: a message that cannot be decoded or
  sent (:meth:`Outbox.quarantine`) is moved to the ``quarantine`` table
  (bounded) and counted as dropped, so one poison row cannot block the rows
  behind it. A file that is not a database or fails SQLite's integrity check
  is renamed aside (``<name>.corrupt-<UTC time>``) and a new outbox started,
  with ``recover=True`` (what the agent uses); an outbox that cannot be
  created or written at all (a full disk) is kept in memory instead, and
  said so (:attr:`Outbox.durable` is False). The file's layout, those checks
  and that recovery are :mod:`.outboxfile`'s.
* **Sessions survive the outbox**: the session counter (the MQTT ``bdSeq``)
  is also kept in ``<name>.session``, written atomically, and the next
  session is one above the larger of the two; a quarantined or deleted
  outbox does not restart it at 1 (consumers de-duplicate on it).
* **One owner**: a second :class:`Outbox` on the same file (in this or another
  process) is refused, since two senders would send every window twice.

Example:

>>> import tempfile, os
>>> box = Outbox(os.path.join(tempfile.mkdtemp(), "outbox.db"))
>>> first = box.put("edgeml/plant/pi-07/drift", b'{"seq": 0}')
>>> second = box.put("edgeml/plant/pi-07/drift", b'{"seq": 1}')
>>> [m.payload for m in box.pending()]
[b'{"seq": 0}', b'{"seq": 1}']
>>> box.ack(first)
True
>>> len(box), box.next_session(), box.next_session()
(1, 1, 2)
>>> box.close()
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import OutboxError, SettingsError
from .outboxfile import Transaction, claim, open_database
from .statefile import read_counter, release_lock, write_counter

#: The default bound: 16 MiB of waiting messages (about 5,000 windows of 3 KB).
DEFAULT_MAX_BYTES = 16 * 2**20
#: The smallest bound accepted: room for a few windows.
MIN_MAX_BYTES = 64 * 1024
SYNCHRONOUS = ("FULL", "NORMAL")
#: Messages kept in the quarantine table (the oldest go first), and the bytes of each payload kept there.
QUARANTINE_ROWS, QUARANTINE_PAYLOAD = 100, 64 * 1024
log = logging.getLogger("edgeml_runtime.outbox")

@dataclass(frozen=True)
class OutboxSettings:
    """Where the outbox lives (``path``; None lets the agent choose one per device) and its bound, checked once.

    >>> OutboxSettings(max_bytes=1000)
    Traceback (most recent call last):
    ...
    edgeml_runtime.errors.SettingsError: max_bytes = 1000: is too small for an outbox; give at least 65536 (64 KiB); \
the default is 16777216 (16 MiB)
    """

    path: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    #: The bound of the dead-letter files beside the outbox (:mod:`.deadletter`).
    dead_letter_max_bytes: int = 4 * 2**20

    def __post_init__(self):
        if not isinstance(self.max_bytes, int) or isinstance(self.max_bytes, bool) or self.max_bytes < MIN_MAX_BYTES:
            raise SettingsError(key="max_bytes", value=self.max_bytes, allowed="is too small for an outbox",
                                fix=f"give at least {MIN_MAX_BYTES} (64 KiB); the default is {DEFAULT_MAX_BYTES} "
                                    "(16 MiB)")
        if isinstance(self.dead_letter_max_bytes, bool) or not isinstance(self.dead_letter_max_bytes, int) or \
                self.dead_letter_max_bytes < MIN_MAX_BYTES:
            raise SettingsError(key="dead_letter_max_bytes", value=self.dead_letter_max_bytes,
                                allowed="is too small for the dead-letter files",
                                fix=f"give at least {MIN_MAX_BYTES} (64 KiB); the default is 4194304 (4 MiB)")


@dataclass(frozen=True, slots=True)
class Message:
    """One waiting message. ``enqueued`` is the Unix time of its :meth:`Outbox.put`."""

    id: int
    topic: str
    payload: bytes
    enqueued: float


class Outbox:
    """Messages waiting for the broker, on disk; thread-safe (one lock around one connection).

    ``recover=True`` quarantines a corrupt file and falls back to memory when
    the file cannot be created or written (see :mod:`.outboxfile`); without
    it both raise :class:`OutboxError`.
    """

    def __init__(self, path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES, *,
                 synchronous: str = "FULL", recover: bool = False):
        self.settings = OutboxSettings(str(path), max_bytes)  # checks the bound
        if synchronous not in SYNCHRONOUS:
            raise OutboxError(f"outbox synchronous={synchronous!r}; use one of {', '.join(SYNCHRONOUS)}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.durable = True
        self._sync = synchronous
        self._lock = threading.Lock()
        self._sync_now = None
        self._db = None
        self._session = 0                     # the last session given, in case neither file can be written
        self._session_file = self.path.with_name(self.path.name + ".session")
        self._lockfile = claim(self.path, recover)
        try:
            opened = open_database(self.path, recover=recover)
        except OutboxError:
            self._release()
            raise
        self._db, self.durable, self._bytes, self._count = opened.db, opened.durable, opened.bytes, opened.count

    # -- writing ---------------------------------------------------------
    def put(self, topic: str, payload: bytes | Callable[[int], bytes], *, reports_dropped: int = 0,
            unkept: int = 0, keep: bool = False) -> int:
        """Store a message durably and return its id, dropping the oldest ones if the bound needs it.

        ``payload`` is the message, or a function that makes it from the
        number of drops it reports: then it is called inside the transaction
        with :attr:`dropped` plus ``unkept`` (messages that were never stored,
        counted by the caller) plus the drops this put causes, so a drop is
        reported by the very message that caused it. With bytes,
        ``reports_dropped`` is how many earlier drops they report (read from
        :attr:`dropped` just before); it is taken off the count in the same
        transaction. ``keep=True``: the bound never drops this message (see the module docstring).
        """
        build = payload if callable(payload) else None
        with self._lock:
            with self._transaction(self._sync):
                before = self._db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()[0]
                reports = before + unkept if build else reports_dropped
                freed = removed = carried = 0
                for _ in range(8):  # a longer count may need one more drop; it settles at once in practice
                    data = build(reports) if build else payload
                    size = len(data) + len(topic.encode())
                    if size > self.max_bytes:
                        raise OutboxError(f"a {size}-byte message on {topic} does not fit in the outbox bound "
                                          f"({self.max_bytes} bytes); raise outbox_max_bytes")
                    excess = self._bytes - freed + size - self.max_bytes
                    if excess <= 0:
                        break
                    f, r, c = self._drop_oldest(excess)
                    freed, removed, carried = freed + f, removed + r, carried + c
                    if not build or not r:
                        break
                    reports = before + unkept + removed + carried
                cur = self._db.execute(
                    "INSERT INTO messages (topic, payload, size, reports_dropped, enqueued, keep) "
                    "VALUES (?, ?, ?, ?, ?, ?)", (topic, data, size, reports, time.time(), int(keep)))
                stored = min(reports - unkept, before + removed + carried) if build else reports
                self._db.execute("UPDATE counters SET value = MAX(value + ?, 0) WHERE name = 'dropped'",
                                 (removed + carried - stored,))
                if removed:
                    self._db.execute("UPDATE counters SET value = value + ? WHERE name = 'dropped_total'", (removed,))
            self._bytes += size - freed
            self._count += 1 - removed
            return cur.lastrowid

    def ack(self, msg_id: int) -> bool:
        """Forget a message the broker acknowledged; False if it was already gone (acked or dropped)."""
        with self._lock:
            with self._transaction("NORMAL"):
                row = self._db.execute("SELECT size FROM messages WHERE id = ?", (msg_id,)).fetchone()
                if row is not None:
                    self._db.execute("DELETE FROM messages WHERE id = ?", (msg_id,))
            if row is None:
                return False
            self._bytes -= row[0]
            self._count -= 1
            return True

    def quarantine(self, msg_id: int, reason: str) -> bool:
        """Move a message that cannot be decoded or sent to the quarantine table; it counts as dropped.

        The drops it was reporting are unreported again. The table keeps the
        last :data:`QUARANTINE_ROWS` (payloads cut to :data:`QUARANTINE_PAYLOAD`
        bytes) for a person to look at. False if the message was already gone.
        """
        with self._lock:
            with self._transaction(self._sync):
                row = self._db.execute("SELECT size, reports_dropped, topic, substr(payload, 1, ?) FROM messages "
                                       "WHERE id = ?", (QUARANTINE_PAYLOAD, msg_id)).fetchone()
                if row is None:
                    return False
                size, carried, topic, head = row
                self._db.execute("DELETE FROM messages WHERE id = ?", (msg_id,))
                self._db.execute("INSERT OR REPLACE INTO quarantine VALUES (?, ?, ?, ?, ?)",
                                 (msg_id, topic, head, reason, time.time()))
                self._db.execute("DELETE FROM quarantine WHERE id NOT IN (SELECT id FROM quarantine ORDER BY id "
                                 "DESC LIMIT ?)", (QUARANTINE_ROWS,))
                for name, n in (("dropped", 1 + (carried if isinstance(carried, int) else 0)), ("dropped_total", 1),
                                ("quarantined", 1)):
                    self._db.execute("UPDATE counters SET value = value + ? WHERE name = ?", (n, name))
            self._bytes -= size if isinstance(size, int) else 0
            self._count -= 1
        log.error("outbox %s: message %d moved to quarantine and counted as dropped: %s", self.path, msg_id, reason)
        return True

    def next_session(self) -> int:
        """Increment and return the session counter (the MQTT ``bdSeq``): 1, 2, 3, …; never raises.

        The next session is one above the largest of the outbox's counter, the
        ``.session`` file and the last one given; both are written (the file
        atomically). If neither can be written (a full disk), the number is
        still one above the last, and a warning says a restart may repeat it.
        """
        with self._lock:
            try:
                stored = self._conn().execute("SELECT value FROM counters WHERE name = 'session'").fetchone()[0]
            except (sqlite3.Error, OutboxError):
                stored = 0
            value = max(stored, read_counter(self._session_file), self._session) + 1
            self._session = value
            kept = []
            try:
                with self._transaction("FULL"):
                    self._db.execute("UPDATE counters SET value = ? WHERE name = 'session'", (value,))
                kept.append("outbox")
            except OutboxError:
                pass
            try:
                write_counter(self._session_file, value)
                kept.append("file")
            except OSError as exc:
                log.warning("cannot write the session file %s (%s)", self._session_file, exc.strerror)
            if not kept or not self.durable and kept == ["outbox"]:
                log.warning("session %d is not stored anywhere durable: after a restart it may be used again, "
                            "and consumers may take that session's windows for duplicates", value)
            return value

    # -- reading ---------------------------------------------------------
    def pending(self, limit: int = 100, after: int = 0) -> list[Message]:
        """Up to ``limit`` waiting messages with an id above ``after``, oldest first.

        A row that is not a text topic and a byte payload (written by
        something else, or damaged) is quarantined, not returned.
        """
        with self._lock:
            try:
                rows = self._conn().execute(
                    "SELECT id, topic, payload, enqueued FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                    (after, limit)).fetchall()
            except sqlite3.Error as exc:  # damaged while open: the caller waits and tries again, it never crashes
                raise OutboxError(f"the outbox {self.path} cannot be read: {exc}") from None
        out, poison = [], []
        for i, t, p, e in rows:
            if isinstance(t, str) and isinstance(p, bytes) and isinstance(e, int | float):
                out.append(Message(i, t, p, float(e)))
            else:
                poison.append((i, f"a stored row of types topic {type(t).__name__}, payload {type(p).__name__}"))
                break  # keep the order: the rows after it come with the next call
        for i, why in poison:
            self.quarantine(i, f"cannot be decoded ({why})")
        return out

    @property
    def dropped(self) -> int:
        """Messages dropped to keep the bound and not yet reported by a later message."""
        return self._counter("dropped")

    @property
    def dropped_total(self) -> int:
        """Messages ever dropped from this outbox (quarantined ones included)."""
        return self._counter("dropped_total")

    @property
    def quarantined(self) -> int:
        """Messages ever moved to the quarantine table because they could not be decoded or sent."""
        return self._counter("quarantined")

    @property
    def last_id(self) -> int:
        """The highest id ever given (0 for a new outbox), whether or not that message is still here."""
        with self._lock:
            row = self._conn().execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
        return row[0] if row else 0

    @property
    def bytes(self) -> int:
        """Payload and topic bytes of the waiting messages (what the bound limits)."""
        return self._bytes

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"Outbox({str(self.path)!r}, {self._count} waiting, {self._bytes}/{self.max_bytes} bytes)"

    # -- lifetime --------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._close_db()
            self._release()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals -------------------------------------------------------
    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise OutboxError(f"the outbox {self.path} is closed")
        return self._db

    def _transaction(self, synchronous: str):
        self._conn()
        if synchronous != self._sync_now:
            self._db.execute(f"PRAGMA synchronous = {synchronous}")
            self._sync_now = synchronous
        return Transaction(self._db, self.path)

    def _drop_oldest(self, excess: int) -> tuple[int, int, int]:
        """Delete the oldest messages (never those put with ``keep``) until ``excess`` bytes are freed.

        Returns (bytes freed, rows deleted, the drops those rows were
        reporting); the caller counts them, since the message it stores may
        report them itself.
        """
        freed = removed = reported = 0
        last = 0
        while freed < excess:
            batch = self._db.execute("SELECT id, size, reports_dropped FROM messages WHERE id > ? AND keep = 0 "
                                     "ORDER BY id LIMIT 256", (last,)).fetchall()
            if not batch:
                break  # cannot happen while _bytes is right; never loop forever if it is not
            for msg_id, size, carried in batch:
                freed += size
                removed += 1
                reported += carried
                last = msg_id
                if freed >= excess:
                    break
        self._db.execute("DELETE FROM messages WHERE id <= ? AND keep = 0", (last,))
        return freed, removed, reported

    def _counter(self, name: str) -> int:
        with self._lock:
            return self._conn().execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0]

    def _release(self) -> None:
        release_lock(self._lockfile)
        self._lockfile = None
