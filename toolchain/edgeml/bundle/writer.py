"""Write a bundle: artifacts plus ``manifest.json`` in a folder, and a ``.tar.gz`` of it.

The folder is assembled under a temporary name beside its destination and
moved into place only when the build has verified it, so a failed build never
leaves a half-written bundle where a device or a rollout could pick it up.
"""

from __future__ import annotations

import gzip
import json
import platform
import re
import shutil
import tarfile
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from edgeml.errors import ConfigError
from edgeml_runtime.bundle import FORMAT_VERSION, MANIFEST, sha256_file

#: Packages whose versions go into every manifest's provenance.
PROVENANCE_PACKAGES = (
    "edgeml", "edgeml-runtime", "flaml", "scikit-learn", "lightgbm", "xgboost", "onnx", "skl2onnx",
    "onnxmltools", "onnxruntime", "numpy", "pandas",
)


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PROVENANCE_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def next_version(parent: Path, name: str) -> str:
    """One more than the highest ``<name>-<N>`` bundle already in ``parent`` (1 for the first)."""
    pattern = re.compile(rf"^{re.escape(name)}-(\d+)(?:\.tar\.gz)?$")
    taken = ([int(m.group(1)) for p in parent.glob(f"{name}-*") if (m := pattern.match(p.name))]
             if parent.is_dir() else [])
    return str(max(taken, default=0) + 1)


def staging_dir(out: Path, force: bool) -> Path:
    """A fresh temporary folder beside ``out``; refuses an existing ``out`` unless ``force``."""
    if out.exists() and not force:
        raise ConfigError(f"{out} already exists; choose another --out, or pass --force to replace it")
    if out.exists() and not (out / MANIFEST).is_file():
        raise ConfigError(f"{out} exists and is not an edgeml bundle (it has no {MANIFEST}); --force only replaces "
                          "a bundle. Choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.partial"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    return stage


def describe_artifact(folder: Path, path: str, fmt: str, precision: str, **extra) -> dict:
    file = folder / path
    return {"path": path, "format": fmt, "precision": precision, "bytes": file.stat().st_size,
            "sha256": sha256_file(file), **extra}


def write_manifest(folder: Path, manifest: dict) -> None:
    manifest = {"format_version": FORMAT_VERSION, **manifest}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(v):
    if hasattr(v, "item"):
        return v.item()
    if hasattr(v, "tolist"):
        return v.tolist()
    raise TypeError(f"cannot write {type(v).__name__} to a manifest")


def finish(stage: Path, out: Path) -> Path:
    """Move the verified bundle into place and pack ``<out>.tar.gz`` beside it; returns the archive."""
    if out.exists():
        shutil.rmtree(out)
    stage.rename(out)
    archive = out.parent / f"{out.name}.tar.gz"
    tmp = archive.with_name(archive.name + ".partial")
    _write_archive(out, tmp)
    tmp.replace(archive)
    return archive


def _write_archive(folder: Path, dest: Path) -> None:
    """``folder`` as a reproducible ``.tar.gz``: the same files give the same bytes, whoever packs them, whenever.

    Members are sorted, with a fixed time, owner and mode; the gzip header
    has time 0 and no file name.
    """
    paths = sorted(folder.rglob("*"), key=lambda p: p.relative_to(folder).as_posix())
    with open(dest, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_member(folder.name, directory=True))
        for path in paths:
            name = f"{folder.name}/{path.relative_to(folder).as_posix()}"
            if path.is_dir():
                tar.addfile(_member(name, directory=True))
            else:
                with open(path, "rb") as f:
                    tar.addfile(_member(name, size=path.stat().st_size), f)


def _member(name: str, *, directory: bool = False, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.size, info.mtime = size, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def now_utc() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
