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
  again, so a drop is never forgotten).
* **Crash safe**: each put is one transaction, committed with
  ``synchronous=FULL`` by default (the WAL is fsynced: a window that
  :meth:`put` returned for survives a power cut, not only ``kill -9``). Acks
  commit with ``synchronous=NORMAL``: a power cut may forget the last acks,
  which only means those windows are sent again and de-duplicated by the
  consumer. ``bench/bench_outbox.py`` measures both settings.
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

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import OutboxError, SettingsError

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process guard, the rest works
    fcntl = None

#: The default bound: 16 MiB of waiting messages (about 5,000 windows of 3 KB).
DEFAULT_MAX_BYTES = 16 * 2**20
#: The smallest bound accepted: room for a few windows.
MIN_MAX_BYTES = 64 * 1024
#: The layout this module writes, kept in SQLite's ``user_version``.
LAYOUT = 1
SYNCHRONOUS = ("FULL", "NORMAL")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    topic           TEXT    NOT NULL,
    payload         BLOB    NOT NULL,
    size            INTEGER NOT NULL,
    reports_dropped INTEGER NOT NULL DEFAULT 0,
    enqueued        REAL    NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO counters VALUES ('session', 0), ('dropped', 0), ('dropped_total', 0);
"""


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

    def __post_init__(self):
        if not isinstance(self.max_bytes, int) or isinstance(self.max_bytes, bool) or self.max_bytes < MIN_MAX_BYTES:
            raise SettingsError(key="max_bytes", value=self.max_bytes, allowed="is too small for an outbox",
                                fix=f"give at least {MIN_MAX_BYTES} (64 KiB); the default is {DEFAULT_MAX_BYTES} "
                                    "(16 MiB)")


@dataclass(frozen=True, slots=True)
class Message:
    """One waiting message. ``enqueued`` is the Unix time of its :meth:`Outbox.put`."""

    id: int
    topic: str
    payload: bytes
    enqueued: float


class Outbox:
    """Messages waiting for the broker, on disk; thread-safe (one lock around one connection)."""

    def __init__(self, path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES, *,
                 synchronous: str = "FULL"):
        self.settings = OutboxSettings(str(path), max_bytes)  # checks the bound
        if synchronous not in SYNCHRONOUS:
            raise OutboxError(f"outbox synchronous={synchronous!r}; use one of {', '.join(SYNCHRONOUS)}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._sync = synchronous
        self._lock = threading.Lock()
        self._sync_now = None
        self._lockfile = self._claim()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
            self._open()
        except sqlite3.Error as exc:
            self._release()
            raise OutboxError(f"cannot open the outbox {self.path}: {exc}. Check its folder is writable; if the "
                              "file is not an outbox, point the outbox setting at another file") from None
        except OutboxError:
            self._release()
            raise

    # -- writing ---------------------------------------------------------
    def put(self, topic: str, payload: bytes, *, reports_dropped: int = 0) -> int:
        """Store a message durably and return its id, dropping the oldest ones if the bound needs it.

        ``reports_dropped`` is how many earlier drops ``payload`` reports (read
        from :attr:`dropped` just before); it is taken off the count in the same
        transaction.
        """
        size = len(payload) + len(topic.encode())
        if size > self.max_bytes:
            raise OutboxError(f"a {size}-byte message on {topic} does not fit in the outbox bound "
                              f"({self.max_bytes} bytes); raise outbox_max_bytes")
        with self._lock:
            with self._transaction(self._sync):
                excess = self._bytes + size - self.max_bytes
                freed, removed = self._drop_oldest(excess) if excess > 0 else (0, 0)
                cur = self._db.execute(
                    "INSERT INTO messages (topic, payload, size, reports_dropped, enqueued) VALUES (?, ?, ?, ?, ?)",
                    (topic, payload, size, reports_dropped, time.time()))
                if reports_dropped:
                    self._db.execute("UPDATE counters SET value = MAX(value - ?, 0) WHERE name = 'dropped'",
                                     (reports_dropped,))
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

    def next_session(self) -> int:
        """Increment and return the persisted session counter (the MQTT ``bdSeq``): 1, 2, 3, …"""
        with self._lock, self._transaction("FULL"):
            self._db.execute("UPDATE counters SET value = value + 1 WHERE name = 'session'")
            return self._db.execute("SELECT value FROM counters WHERE name = 'session'").fetchone()[0]

    # -- reading ---------------------------------------------------------
    def pending(self, limit: int = 100, after: int = 0) -> list[Message]:
        """Up to ``limit`` waiting messages with an id above ``after``, oldest first."""
        with self._lock:
            rows = self._conn().execute(
                "SELECT id, topic, payload, enqueued FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                (after, limit)).fetchall()
        return [Message(i, t, bytes(p), e) for i, t, p, e in rows]

    @property
    def dropped(self) -> int:
        """Messages dropped to keep the bound and not yet reported by a later message."""
        return self._counter("dropped")

    @property
    def dropped_total(self) -> int:
        """Messages ever dropped from this outbox."""
        return self._counter("dropped_total")

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
            if self._db is not None:
                self._db.close()
                self._db = None
            self._release()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals -------------------------------------------------------
    def _open(self) -> None:
        db = self._db
        layout = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if layout not in (0, LAYOUT) or (layout == 0 and tables):
            raise OutboxError(f"{self.path} is not an outbox this runtime can read (layout {layout}, tables "
                              f"{', '.join(sorted(tables)) or 'none'}); point outbox at another file")
        if db.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
            raise OutboxError(f"{self.path}: SQLite cannot use WAL mode on this file system; put the outbox "
                              "on a local disk")
        db.executescript(_SCHEMA + f"PRAGMA user_version = {LAYOUT};")
        self._bytes, self._count = db.execute("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM messages").fetchone()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise OutboxError(f"the outbox {self.path} is closed")
        return self._db

    def _transaction(self, synchronous: str):
        self._conn()
        if synchronous != self._sync_now:
            self._db.execute(f"PRAGMA synchronous = {synchronous}")
            self._sync_now = synchronous
        return _Transaction(self._db, self.path)

    def _drop_oldest(self, excess: int) -> tuple[int, int]:
        """Delete the oldest messages until ``excess`` bytes are freed; (bytes freed, rows deleted)."""
        freed = removed = reported = 0
        last = 0
        while freed < excess:
            batch = self._db.execute("SELECT id, size, reports_dropped FROM messages WHERE id > ? ORDER BY id "
                                     "LIMIT 256", (last,)).fetchall()
            if not batch:
                break  # cannot happen while _bytes is right; never loop forever if it is not
            for msg_id, size, carried in batch:
                freed += size
                removed += 1
                reported += carried
                last = msg_id
                if freed >= excess:
                    break
        self._db.execute("DELETE FROM messages WHERE id <= ?", (last,))
        # The drops the deleted messages were reporting are unreported again.
        self._db.execute("UPDATE counters SET value = value + ? WHERE name = 'dropped'", (removed + reported,))
        self._db.execute("UPDATE counters SET value = value + ? WHERE name = 'dropped_total'", (removed,))
        return freed, removed

    def _counter(self, name: str) -> int:
        with self._lock:
            return self._conn().execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0]

    def _claim(self):
        """Hold an exclusive lock on ``<path>.lock`` while open; the OS releases it if the process dies."""
        if fcntl is None:
            return None
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = open(lock_path, "a+")
        except OSError as exc:
            raise OutboxError(f"cannot create the outbox {self.path}: {exc.strerror}; check the folder "
                              "exists and is writable") from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            owner = f.read().strip() or "?"
            f.close()
            raise OutboxError(f"the outbox {self.path} is in use by another process (pid {owner}); give each "
                              "runtime its own outbox file") from None
        f.truncate(0)
        f.write(str(os.getpid()))
        f.flush()
        return f

    def _release(self) -> None:
        if self._lockfile is not None:
            self._lockfile.close()  # closing the file releases the flock
            self._lockfile = None


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, or ``ROLLBACK`` on any error (then raised as :class:`OutboxError`)."""

    def __init__(self, db: sqlite3.Connection, path: Path):
        self.db, self.path = db, path

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, exc, tb):
        if kind is None:
            try:
                self.db.execute("COMMIT")
                return False
            except sqlite3.Error as e:
                exc = e
        try:
            self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the failed COMMIT already ended the transaction
        if isinstance(exc, sqlite3.Error):
            raise OutboxError(f"the outbox {self.path} cannot be written: {exc}; check the disk has room") from exc
        return False
