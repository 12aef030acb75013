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
    try:
        link = os.lstat(path)
    except FileNotFoundError:
        link = None
    except OSError as exc:
        raise InputError(f"--output {path}: {exc.strerror}") from None
    target = _target(path, link)
    if target is not None and source != "-" and os.path.exists(source) and os.path.samefile(source, path):
        raise InputError(f"--output {path} is the input file; write the scored records to another file")
    if target is not None and (stat.S_ISCHR(target.st_mode) or stat.S_ISFIFO(target.st_mode)):
        with _open_direct(path) as out:
            yield out
        return
    with _replacing(path, target) as out:
        yield out


def _target(path: str, link: os.stat_result | None) -> os.stat_result | None:
    """What ``path`` is (None: nothing yet); refuses what cannot take scored records."""
    if link is None:
        return None
    target = link
    if stat.S_ISLNK(link.st_mode):
        try:
            target = os.stat(path)
        except OSError:
            raise InputError(f"--output {path} is a symbolic link to {os.readlink(path)!r}, which does not exist; "
                             "give a file path that is not a link") from None
        if not (stat.S_ISCHR(target.st_mode) or stat.S_ISFIFO(target.st_mode)):
            raise InputError(f"--output {path} is a symbolic link (to {os.path.realpath(path)}); scored records "
                             "are not written through links: give the target itself, or remove the link (for "
                             "standard output: --output -)")
    if stat.S_ISDIR(target.st_mode):
        raise InputError(f"--output {path} is a folder; give the path of a file to write, e.g. "
                         f"{os.path.join(path, 'scored.csv')}")
    if not (stat.S_ISREG(target.st_mode) or stat.S_ISCHR(target.st_mode) or stat.S_ISFIFO(target.st_mode)):
        raise InputError(f"--output {path} is neither a regular file, a character device nor a FIFO; give a file "
                         "path")
    return target


@contextlib.contextmanager
def _open_direct(path: str):
    try:
        out = open(path, "w", encoding="utf-8", newline="")
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
