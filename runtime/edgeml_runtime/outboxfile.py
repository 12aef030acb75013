"""The outbox's SQLite file: its layout, the checks made when it is opened, recovery, and its transactions.

:class:`~.outbox.Outbox` keeps the queue's rules (order, the bound, drop
counts, sessions); this module keeps the file they live in:

* **One owner**: :func:`claim` takes the outbox's lock (:func:`~.statefile.claim_lock`)
  before the file is opened; a second owner is refused.
* **Layout**: the ``messages``, ``counters`` and ``quarantine`` tables, and
  :data:`LAYOUT` in SQLite's ``user_version``. A file of another layout, or
  with tables and no layout, is refused, never rewritten. Opening also runs
  SQLite's ``quick_check`` and switches the file to WAL mode.
* **Recovery** (``recover=True``, what the agent uses): a file that is not a
  database or fails the check is moved aside (``<name>.corrupt-<UTC time>``,
  :func:`~.statefile.quarantine_files`) and a new one started; a file that
  cannot be created or written (a full disk) is replaced by a database in
  memory, and said so (:attr:`Opened.durable` is False).
* **Transactions** (:class:`Transaction`): ``BEGIN IMMEDIATE`` … ``COMMIT``;
  a SQLite error rolls back and is raised as :class:`~.errors.OutboxError`.

Example:

>>> import tempfile
>>> opened = open_database(Path(tempfile.mkdtemp()) / "outbox.db", recover=False)
>>> opened.durable, opened.bytes, opened.count
(True, 0, 0)
>>> opened.db.close()
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from .errors import OutboxError
from .statefile import LockHeld, claim_lock, quarantine_files

#: The layout this module writes, kept in SQLite's ``user_version``: 2 added ``messages.keep`` (a message the bound
#: never drops: an update's steps); a layout-1 file is upgraded in place when opened.
LAYOUT = 2
log = logging.getLogger("edgeml_runtime.outbox")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    topic           TEXT    NOT NULL,
    payload         BLOB    NOT NULL,
    size            INTEGER NOT NULL,
    reports_dropped INTEGER NOT NULL DEFAULT 0,
    enqueued        REAL    NOT NULL,
    keep            INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (
    id      INTEGER PRIMARY KEY,
    topic   BLOB,
    payload BLOB,
    reason  TEXT    NOT NULL,
    moved   REAL    NOT NULL
);
INSERT OR IGNORE INTO counters VALUES ('session', 0), ('dropped', 0), ('dropped_total', 0), ('quarantined', 0);
"""


@dataclass(frozen=True)
class Opened:
    """An opened outbox database: the connection, whether it is on disk, and the bytes and count it holds."""

    db: sqlite3.Connection
    durable: bool
    bytes: int
    count: int


def claim(path: Path, recover: bool = False):
    """Lock the outbox at ``path`` for this process; the open lock file (None when going on unlocked).

    Raises :class:`OutboxError` if another process holds it, or the lock
    cannot be created; with ``recover``, a disk too full for even an empty
    lock file is logged and the outbox goes on unlocked (it will be in memory).
    """
    try:
        return claim_lock(path, tolerate_full_disk=recover)
    except OSError as exc:
        if recover and exc.errno == errno.ENOSPC:  # not even an empty lock file fits: go on unlocked, in memory
            log.error("cannot create the outbox lock beside %s (%s)", path, exc.strerror)
            return None
        raise OutboxError(f"cannot create the outbox {path}: {exc.strerror}; check the folder exists, is "
                          "writable and has room") from None
    except LockHeld as exc:
        raise OutboxError(f"the outbox {path} is in use by another process (pid {exc.owner}); give each "
                          "runtime its own outbox file") from None


def open_database(path: Path, *, recover: bool) -> Opened:
    """Open (or create) the outbox database at ``path``, recovering as the module docstring says if ``recover``.

    Raises :class:`OutboxError` for a file it cannot use (without
    ``recover``) or one of another layout; the caller releases its lock.
    """
    try:
        return _connect(path, path)
    except sqlite3.OperationalError as exc:  # cannot create, read or write it: a full disk, a read-only folder
        if not recover:
            raise OutboxError(f"cannot open the outbox {path}: {exc}. Check its folder is writable and "
                              "the disk has room") from None
        return _in_memory(path, exc)
    except sqlite3.DatabaseError as exc:     # not a database, or a damaged one
        if not recover:
            raise OutboxError(f"cannot open the outbox {path}: {exc}. If the file is not an outbox, "
                              "point the outbox setting at another file") from None
        aside = quarantine_files(path)
        log.error("outbox %s is damaged (%s): moved aside to %s; starting a new outbox (the windows it held "
                  "are lost; its session numbers are not)", path, exc, aside)
        try:
            return _connect(path, path)
        except sqlite3.Error as again:
            return _in_memory(path, again)


def _connect(target: Path | str, path: Path, *, durable: bool = True) -> Opened:
    """Connect to ``target`` and check and prepare it (:func:`_prepare`); the connection is closed if that fails."""
    db = sqlite3.connect(target, isolation_level=None, check_same_thread=False, timeout=5.0)
    try:
        size, count = _prepare(db, path)
    except BaseException:
        db.close()
        raise
    return Opened(db, durable, size, count)


def _in_memory(path: Path, exc: Exception) -> Opened:
    """The fallback when no file can be used: the same outbox in memory, lost at exit, and said so."""
    log.error("outbox %s cannot be used (%s): keeping drift windows in memory only; they are lost if the "
              "process stops before the broker has them. Free space or fix the folder, then restart", path, exc)
    return _connect(":memory:", path, durable=False)


def _prepare(db: sqlite3.Connection, path: Path) -> tuple[int, int]:
    """Check the layout and integrity, switch to WAL, create what is missing; the bytes and count waiting."""
    layout = db.execute("PRAGMA user_version").fetchone()[0]
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if layout not in (0, 1, LAYOUT) or (layout == 0 and tables):
        raise OutboxError(f"{path} is not an outbox this runtime can read (layout {layout}, tables "
                          f"{', '.join(sorted(tables)) or 'none'}); point outbox at another file")
    check = db.execute("PRAGMA quick_check").fetchone()[0]
    if check != "ok":
        raise sqlite3.DatabaseError(f"integrity check failed: {check}")
    if db.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() not in ("wal", "memory"):
        raise OutboxError(f"{path}: SQLite cannot use WAL mode on this file system; put the outbox "
                          "on a local disk")
    if layout == 1:  # layout 2 added messages.keep; the messages waiting in a layout-1 file are all droppable
        db.execute("ALTER TABLE messages ADD COLUMN keep INTEGER NOT NULL DEFAULT 0")
    db.executescript(_SCHEMA + f"PRAGMA user_version = {LAYOUT};")
    return db.execute("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM messages").fetchone()


class Transaction:
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
