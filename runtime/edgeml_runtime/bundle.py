"""Read a bundle: ``manifest.json`` and its artifacts, checked byte for byte.

A bundle is a folder (or a ``.tar.gz`` of one) written by ``edgeml build``.
The manifest is the contract between host and device; nothing in a bundle is
a pickle. Loading refuses a bundle whose artifacts do not match the sizes and
SHA-256 digests the manifest records. The manifest's layout is
:mod:`edgeml_runtime.manifest`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import BundleError
from .manifest import Artifact, Manifest

MANIFEST = "manifest.json"


def sha256_file(path: os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest_json(bundle: os.PathLike) -> dict:
    """The bundle's ``manifest.json`` as plain JSON, unknown keys included: a :class:`BundleError` if the file is
    missing, not JSON, or not an object."""
    path = Path(bundle) / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleError(
            f"{bundle} is not a bundle: it has no {MANIFEST}. Pass the folder that `edgeml build` wrote, or its .tar.gz"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} cannot be read as text ({exc}); the bundle is damaged, copy it again") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}); the bundle is damaged, copy it again") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path} does not hold a JSON object; rebuild the bundle")
    return data


def read_manifest(bundle: os.PathLike) -> Manifest:
    """The bundle's ``manifest.json``, validated key by key (:class:`~edgeml_runtime.manifest.Manifest`)."""
    return Manifest.from_dict(read_manifest_json(bundle), where=str(Path(bundle) / MANIFEST))


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
