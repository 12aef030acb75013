"""Put a finished bundle in place: one build per output at a time, staged and synced, swapped atomically.

A build writes ``<out>`` and ``<out>.tar.gz``; beside them, in the same
folder, it keeps:

* ``.<name>.lock``: held (``fcntl.flock``) for the whole build, holding the
  writer's pid, so that a second build to the same ``--out`` stops at once
  with "another build is writing …" instead of deleting the first one's files;
* ``.<name>.partial/``: the staging folder, where the bundle is assembled and
  verified. The runtime refuses to load a folder of that name, and refuses a
  draft manifest (one written while artifacts are verified) wherever it is:
  the finished manifest, with the sample rows, is written last and is the
  bundle's mark of completion;
* ``.<name>.tar.gz.partial``: the archive, packed from the staging folder
  before anything is moved, so the folder and the archive put in place are the
  same bundle.

:func:`finish` syncs every file to disk, then replaces: the old archive is
removed first (an old archive never sits beside a new folder), the staging
folder and ``<out>`` are exchanged in one ``renameat2(RENAME_EXCHANGE)``
where Linux offers it (else ``<out>`` is renamed to ``.<name>.old`` and the
stage into place), the new archive is renamed in, and the old bundle is
deleted. A build killed at any point leaves the old bundle or the new one;
the next build to that ``--out`` (:func:`recover`, under the lock) puts back
an old folder caught half-way, removes leftovers and repacks a missing
archive from the folder (the archive is reproducible: the same files give the
same bytes).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import gzip
import os
import shutil
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgeml.errors import BundleError, ConfigError
from edgeml_runtime.bundle import MANIFEST, read_manifest


def _beside(out: Path, suffix: str) -> Path:
    return out.parent / f".{out.name}{suffix}"


def lock_path(out: Path) -> Path:
    return _beside(out, ".lock")


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold the lock on ``out`` for the ``with`` block; a :class:`BundleError` naming the holder if it is taken.

    The lock file stays (removing it would let a third build lock a file the
    second still holds); the kernel releases the lock when the holder exits,
    however it exits.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    path = lock_path(out)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise BundleError(f"another build is writing {out} (pid {holder}); wait for it to finish, or choose "
                              "another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def staging_dir(out: Path, force: bool) -> Path:
    """A fresh staging folder beside ``out``, after :func:`recover`; refuses an existing ``out`` unless ``force``.

    Call it holding :func:`locked`.
    """
    recover(out)
    if out.exists() and not force:
        raise ConfigError(f"{out} already exists; choose another --out, or pass --force to replace it")
    if out.exists() and not (out.is_dir() and (out / MANIFEST).is_file()):
        raise ConfigError(f"{out} exists and is not an edgeml bundle (it has no {MANIFEST}); --force only replaces "
                          "a bundle. Choose another --out")
    stage = _beside(out, ".partial")
    stage.mkdir()
    return stage


def recover(out: Path) -> None:
    """Finish or undo what a killed build left beside ``out`` (see the module docstring). Call it holding the lock."""
    old, stage, archive = _beside(out, ".old"), _beside(out, ".partial"), _archive(out)
    if old.exists() and not out.exists():
        old.rename(out)  # killed between moving the old bundle aside and the new one in
    for leftover in (old, stage):
        if leftover.exists():
            shutil.rmtree(leftover)
    _beside(out, ".tar.gz.partial").unlink(missing_ok=True)
    if out.is_dir() and not archive.exists():
        try:
            read_manifest(out)
        except BundleError:
            return  # not a finished bundle: nothing to pack (staging_dir says what it is)
        _pack(out, out.name, archive)


def finish(stage: Path, out: Path) -> Path:
    """Move the verified bundle in ``stage`` to ``out``, with ``<out>.tar.gz`` beside it; returns the archive."""
    archive = _archive(out)
    packing = _beside(out, ".tar.gz.partial")
    _sync_tree(stage)
    _pack(stage, out.name, packing, keep=True)
    archive.unlink(missing_ok=True)
    if out.exists():
        if _exchange(stage, out):
            shutil.rmtree(stage)  # the old bundle, now under the staging name
        else:
            old = _beside(out, ".old")
            out.rename(old)
            stage.rename(out)
            _sync_dir(out.parent)
            shutil.rmtree(old)
    else:
        stage.rename(out)
    packing.replace(archive)
    _sync_dir(out.parent)
    return archive


def _archive(out: Path) -> Path:
    return out.parent / f"{out.name}.tar.gz"


def _pack(folder: Path, name: str, dest: Path, *, keep: bool = False) -> None:
    """``folder`` packed as ``name/`` into ``dest`` (through a temporary file unless ``keep``), synced."""
    tmp = dest if keep else dest.with_name(dest.name + ".partial")
    write_archive(folder, tmp, name)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    if not keep:
        tmp.replace(dest)


def write_archive(folder: Path, dest: Path, name: str | None = None) -> None:
    """``folder`` as a reproducible ``.tar.gz`` of ``name/`` (the folder's name by default): the same files give
    the same bytes, whoever packs them, whenever.

    Members are sorted, with a fixed time, owner and mode; the gzip header
    has time 0 and no file name.
    """
    name = name or folder.name
    paths = sorted(folder.rglob("*"), key=lambda p: p.relative_to(folder).as_posix())
    with open(dest, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_member(name, directory=True))
        for path in paths:
            member = f"{name}/{path.relative_to(folder).as_posix()}"
            if path.is_dir():
                tar.addfile(_member(member, directory=True))
            else:
                with open(path, "rb") as f:
                    tar.addfile(_member(member, size=path.stat().st_size), f)


def _member(name: str, *, directory: bool = False, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.size, info.mtime = size, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _sync_tree(folder: Path) -> None:
    """Every file of ``folder`` and the folder itself on disk, so that a crash after the rename keeps them."""
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    _sync_dir(folder)


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where that is not available."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EXDEV, errno.EPERM):
        return False
    raise OSError(code, os.strerror(code), str(b))


__all__ = ["finish", "lock_path", "locked", "recover", "staging_dir", "write_archive"]
