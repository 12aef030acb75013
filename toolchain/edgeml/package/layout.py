"""The package folder and its ``.tar.gz``, written atomically and reproducibly.

Everything is built in a temporary folder beside the destination and renamed into place when whole, so a
failed or interrupted ``edgeml package`` leaves no half package. The ``.tar.gz`` lists its members sorted, with
mtime 0, owner root and modes 0644/0755, so the same inputs give the same bytes.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from edgeml.package.wheels import PackageError

EXECUTABLE = ("install.sh", "uninstall.sh")


def write_atomically(dest: Path, fill: Callable[[Path], None]) -> Path:
    """Run ``fill(stage)`` on a fresh folder beside ``dest``, then rename it to ``dest`` (which must not exist
    or be an empty folder)."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise PackageError(f"{dest} already exists and is not an empty folder; remove it or pass another -o")
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        stage.chmod(0o755)
        fill(stage)
        for name in EXECUTABLE:
            if (stage / name).exists():
                (stage / name).chmod(0o755)
        if dest.exists():
            dest.rmdir()
        stage.rename(dest)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return dest


def _normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode = 0o755 if info.isdir() or info.mode & 0o100 else 0o644
    return info


def write_tar(folder: Path, archive: Path | None = None) -> Path:
    """``folder`` as ``<folder>.tar.gz`` (one top folder named like it), byte-for-byte reproducible."""
    archive = archive or folder.with_name(folder.name + ".tar.gz")
    fd, tmp = tempfile.mkstemp(prefix=f".{archive.name}.", suffix=".partial", dir=archive.parent)
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(folder, arcname=folder.name, recursive=False, filter=_normalize)
            for path in sorted(folder.rglob("*")):
                tar.add(path, arcname=f"{folder.name}/{path.relative_to(folder).as_posix()}", recursive=False,
                        filter=_normalize)
        os.replace(tmp, archive)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return archive
