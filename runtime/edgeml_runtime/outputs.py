"""Where ``score`` writes: a file replaced whole and only on success, a device or pipe written as it is, or stdout.

A regular file is never written in place: the records go to a temporary
file created beside it, exclusively (``O_CREAT | O_EXCL`` under a random
name, so a planted ``<out>.partial`` or any other link is never followed or
reused), flushed to disk, given the old file's mode (and owner, when allowed),
and renamed over the target when scoring succeeded. A failure leaves the old
file as it was. A character device or a FIFO (``/dev/null``, a named pipe,
``/dev/stdout``) cannot be replaced by a rename and need not be: it is
opened and written directly. Anything else is refused with the fix: a
folder, a block device or socket, and a symbolic link to a regular file
(whose target the rename would not touch; give the target itself).

``run`` writes as it scores, so its outputs (``--output``, ``--drift-output``)
cannot wait for a rename at the end: :func:`stream_file` opens them in place,
with the same refusals, without following a link (``O_NOFOLLOW``), keeping an
existing file's mode, and truncating (``--output``) or appending (windows).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile

from .errors import InputError
from .records import open_text

#: Mode of a new output file, before the umask (as ``open()`` creates files).
NEW_FILE_MODE = 0o666


@contextlib.contextmanager
def output_file(path: str, source: str):
    """A text stream for the scored records; see the module docstring. ``source`` is the input path (``-``: stdin)."""
    if path == "-":
        with open_text("-", "w") as out:
            yield out
        return
    target = _checked(path, source)
    if target is not None and (stat.S_ISCHR(target.st_mode) or stat.S_ISFIFO(target.st_mode)):
        with _open_direct(path) as out:
            yield out
        return
    with _replacing(path, target) as out:
        yield out


@contextlib.contextmanager
def stream_file(path: str, *, source: str = "-", append: bool = False, flag: str = "--output"):
    """A text stream ``run`` writes to as it goes (``-``: stdout, left open); see the module docstring."""
    if path == "-":
        out = open_text("-", "w")
        try:
            yield out
        finally:
            out.flush()
            out.detach()  # stdout stays open for whoever writes next, also when this wrapper is collected
        return
    target = _checked(path, source, flag)
    if target is not None and (stat.S_ISCHR(target.st_mode) or stat.S_ISFIFO(target.st_mode)):
        with _open_direct(path, "a" if append else "w") as out:
            yield out
        return
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
    try:
        fd = os.open(path, flags, NEW_FILE_MODE)  # an existing file keeps its mode; a link planted since: ELOOP
    except OSError as exc:
        raise InputError(f"cannot write to {path} ({flag}): {exc.strerror}") from None
    with open(fd, "w", encoding="utf-8", newline="", closefd=True) as out:
        yield out


def _checked(path: str, source: str, flag: str = "--output") -> os.stat_result | None:
    """What ``path`` is now (None: nothing yet), refusing what cannot take records and the input file itself."""
    try:
        link = os.lstat(path)
    except FileNotFoundError:
        link = None
    except OSError as exc:
        raise InputError(f"{flag} {path}: {exc.strerror}") from None
    target = _target(path, link, flag)
    if target is not None and source != "-" and os.path.exists(source) and os.path.samefile(source, path):
        raise InputError(f"{flag} {path} is the input file; write the scored records to another file")
    return target


def _target(path: str, link: os.stat_result | None, flag: str = "--output") -> os.stat_result | None:
    """What ``path`` is (None: nothing yet); refuses what cannot take scored records."""
    if link is None:
        return None
    target = link
    if stat.S_ISLNK(link.st_mode):
        try:
            target = os.stat(path)
        except OSError:
            raise InputError(f"{flag} {path} is a symbolic link to {os.readlink(path)!r}, which does not exist; "
                             "give a file path that is not a link") from None
        if not (stat.S_ISCHR(target.st_mode) or stat.S_ISFIFO(target.st_mode)):
            raise InputError(f"{flag} {path} is a symbolic link (to {os.path.realpath(path)}); scored records "
                             "are not written through links: give the target itself, or remove the link (for "
                             "standard output: --output -)")
    if stat.S_ISDIR(target.st_mode):
        raise InputError(f"{flag} {path} is a folder; give the path of a file to write, e.g. "
                         f"{os.path.join(path, 'scored.csv')}")
    if not (stat.S_ISREG(target.st_mode) or stat.S_ISCHR(target.st_mode) or stat.S_ISFIFO(target.st_mode)):
        raise InputError(f"{flag} {path} is neither a regular file, a character device nor a FIFO; give a file "
                         "path")
    return target


@contextlib.contextmanager
def _open_direct(path: str, mode: str = "w"):
    try:
        out = open(path, mode, encoding="utf-8", newline="")
    except OSError as exc:
        raise InputError(f"cannot write to {path}: {exc.strerror}") from None
    with out:
        yield out


@contextlib.contextmanager
def _replacing(path: str, old: os.stat_result | None):
    """A new file beside ``path`` (exclusive, random name), renamed over it on success, removed on failure."""
    folder, name = os.path.split(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=folder)  # O_EXCL, mode 0600
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror} in {folder}") from None
    try:
        if old is not None:
            os.fchmod(fd, stat.S_IMODE(old.st_mode))
            if (old.st_uid, old.st_gid) != (os.getuid(), os.getgid()):
                with contextlib.suppress(PermissionError):
                    os.fchown(fd, old.st_uid, old.st_gid)
        else:
            os.fchmod(fd, NEW_FILE_MODE & ~_umask())
        with open(fd, "w", encoding="utf-8", newline="", closefd=True) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
