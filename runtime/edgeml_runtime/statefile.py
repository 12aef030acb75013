"""Small files beside the outbox: its lock, the session counter (written atomically), moving a damaged one aside.

One process owns an outbox: it holds an exclusive ``flock`` on
``<name>.lock`` while it has it open, and the OS releases the lock if the
process dies (:func:`claim_lock`).

The session counter (the MQTT ``bdSeq``) must never go back: consumers
de-duplicate drift windows on (device, session, seq), so a session number
used twice makes them discard real windows. The outbox keeps it too, but an
outbox can be lost (a damaged file moved aside, a deleted file); this file,
one decimal number, survives that. It is replaced atomically (written to a
temporary file in the same folder, fsynced, renamed, the folder fsynced), so
a crash leaves the old number or the new one, never half of one.

Example:

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "o.db.session")
>>> read_counter(path), write_counter(path, 7), read_counter(path)
(0, None, 7)
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process guard, the rest works
    fcntl = None

#: The companions SQLite keeps beside an outbox file; they are moved aside with it.
COMPANIONS = ("-wal", "-shm", "-journal")


def read_counter(path: str | os.PathLike) -> int:
    """The number in ``path``; 0 if the file is missing, unreadable or not a number (nothing to recover)."""
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return 0
    return int(text) if text.isdigit() and len(text) < 19 else 0


def write_counter(path: str | os.PathLike, value: int) -> None:
    """Replace ``path`` with ``value`` atomically and durably; raises OSError (e.g. a full disk)."""
    write_atomically(path, f"{value}\n".encode("ascii"))


def write_atomically(path: str | os.PathLike, data: bytes, *, mode: int | None = None, hidden: bool = False) -> Path:
    """Replace ``path`` with ``data``: a temporary file in the same folder (``<name>.*.tmp``, or ``.<name>.*.tmp``
    when ``hidden``; with ``mode`` from its creation on), fsynced, renamed, the folder fsynced. A crash leaves the
    old file or the new one, and at worst the temporary file. Raises OSError (e.g. a full disk)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{'.' if hidden else ''}{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_folder(path.parent)
    return path


def quarantine_files(path: str | os.PathLike) -> Path:
    """Rename a damaged outbox (and its SQLite companions) to ``<name>.corrupt-<UTC time>``; the new name."""
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    os.replace(path, aside)
    for suffix in COMPANIONS:
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            os.replace(companion, aside.with_name(aside.name + suffix))
    _fsync_folder(path.parent)
    return aside


class LockHeld(Exception):
    """Another process holds the outbox's lock; ``owner`` is the pid it wrote (or ``?``)."""

    def __init__(self, owner: str):
        super().__init__(f"held by pid {owner}")
        self.owner = owner


def claim_lock(path: Path, *, tolerate_full_disk: bool = False):
    """Lock ``<path>.lock`` exclusively and write our pid in it; the open file (None without ``fcntl``).

    Raises :class:`LockHeld` if another process has it, OSError if the file
    cannot be created. The lock needs only the file: with
    ``tolerate_full_disk`` a pid that cannot be written is not an error.
    """
    if fcntl is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path.with_name(path.name + ".lock"), "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        owner = f.read().strip() or "?"
        f.close()
        raise LockHeld(owner) from None
    try:
        f.truncate(0)
        f.write(str(os.getpid()))
        f.flush()
    except OSError:
        if not tolerate_full_disk:
            release_lock(f)
            raise
    return f


def release_lock(f) -> None:
    """Close the lock file, which releases the lock (also when its pid could not be flushed)."""
    if f is not None:
        try:
            f.close()
        except OSError:
            pass


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
