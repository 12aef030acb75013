"""Read a bundle: ``manifest.json`` and its artifacts, checked byte for byte.

A bundle is a folder (or a ``.tar.gz`` of one) written by ``edgeml build``.
The manifest is the contract between host and device; nothing in a bundle is
a pickle. Loading refuses a bundle whose artifacts do not match the sizes and
SHA-256 digests the manifest records.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BundleError
from .schema import InputSchema

MANIFEST = "manifest.json"
#: The manifest layout this runtime reads. Bumped on incompatible changes.
FORMAT_VERSION = 1

_REQUIRED = ("format_version", "name", "version", "task", "label", "inputs", "artifacts")


def sha256_file(path: os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Artifact:
    """One model file in a bundle, as the manifest describes it."""

    path: str
    format: str
    precision: str
    bytes: int
    sha256: str
    outputs: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> Artifact:
        known = {"path", "format", "precision", "bytes", "sha256", "outputs"}
        try:
            return cls(
                path=d["path"],
                format=d["format"],
                precision=d.get("precision", "fp32"),
                bytes=int(d["bytes"]),
                sha256=d["sha256"],
                outputs=dict(d.get("outputs") or {}),
                extra={k: v for k, v in d.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"manifest artifact entry {d!r} is malformed ({exc}); rebuild the bundle") from exc


@dataclass(frozen=True)
class Manifest:
    """The parts of ``manifest.json`` the runtime uses; ``data`` keeps all of it."""

    data: dict
    schema: InputSchema
    artifacts: tuple[Artifact, ...]

    name = property(lambda self: self.data["name"])
    version = property(lambda self: str(self.data["version"]))
    task = property(lambda self: self.data["task"])
    label = property(lambda self: self.data["label"])
    classes = property(lambda self: tuple(self.data.get("classes") or ()))

    @property
    def formats(self) -> tuple[str, ...]:
        """The target profile's formats, in its order of preference (the artifacts' order when not recorded)."""
        target = self.data.get("target")
        formats = target.get("formats") if isinstance(target, dict) else None
        return tuple(formats) if isinstance(formats, list) else tuple(dict.fromkeys(a.format for a in self.artifacts))

    @classmethod
    def from_dict(cls, data: dict, where: str = MANIFEST) -> Manifest:
        if not isinstance(data, dict):
            raise BundleError(f"{where} does not hold a JSON object; rebuild the bundle")
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise BundleError(f"{where} lacks {', '.join(missing)}; it was not written by edgeml build")
        if data["format_version"] != FORMAT_VERSION:
            raise BundleError(
                f"{where} has format_version {data['format_version']!r}; this runtime reads "
                f"{FORMAT_VERSION}. Install the edgeml-runtime release that matches the bundle"
            )
        if data["task"] not in ("classification", "regression"):
            raise BundleError(f"{where} has task {data['task']!r}; expected classification or regression")
        if data["task"] == "classification" and not data.get("classes"):
            raise BundleError(f"{where} is a classification bundle without 'classes'")
        return cls(
            data=data,
            schema=InputSchema.from_list(data["inputs"]),
            artifacts=tuple(Artifact.from_dict(a) for a in data["artifacts"]),
        )


def read_manifest(bundle: os.PathLike) -> Manifest:
    path = Path(bundle) / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleError(
            f"{bundle} is not a bundle: it has no {MANIFEST}. Pass the folder that `edgeml build` wrote"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}); the bundle is damaged, copy it again") from None
    return Manifest.from_dict(data, where=str(path))


def verify_artifact(bundle: os.PathLike, artifact: Artifact) -> Path:
    """The artifact's path, after checking that its size and SHA-256 match the manifest."""
    path = Path(bundle) / artifact.path
    if not path.is_file():
        raise BundleError(f"{path} is listed in the manifest but missing; copy the whole bundle again")
    size = path.stat().st_size
    digest = sha256_file(path)
    if size != artifact.bytes or digest != artifact.sha256:
        raise BundleError(
            f"{path} does not match the manifest (expected {artifact.bytes} bytes, sha256 "
            f"{artifact.sha256[:12]}…; found {size} bytes, sha256 {digest[:12]}…). "
            "The file was changed or damaged after the build: copy the bundle again"
        )
    return path


@contextmanager
def open_bundle(path: os.PathLike):
    """The bundle folder for ``path``: the folder itself, or a ``.tar.gz`` unpacked into a temporary folder
    that is removed on leaving the ``with`` block (engines hold their model in memory by then)."""
    p = Path(path)
    if p.is_dir():
        yield p
        return
    if not (p.is_file() and p.name.endswith((".tar.gz", ".tgz"))):
        raise BundleError(f"{p} does not exist or is not a bundle folder or .tar.gz")
    dest = Path(tempfile.mkdtemp(prefix="edgeml-bundle-"))
    try:
        try:
            with tarfile.open(p, "r:gz") as tar:
                tar.extractall(dest, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise BundleError(f"{p} is not a readable bundle archive ({exc})") from None
        inner = [d for d in dest.iterdir() if d.is_dir()]
        yield inner[0] if len(inner) == 1 and not (dest / MANIFEST).exists() else dest
    finally:
        shutil.rmtree(dest, ignore_errors=True)
