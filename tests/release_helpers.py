"""Releases for the rollout tests, made by the real ``edgeml.fleet.keys`` and ``edgeml.fleet.releases``."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from edgeml.fleet import keys, releases


@dataclass(frozen=True)
class Released:
    keys: Path
    folder: Path


def second_bundle(bundle: Path, folder: Path) -> Path:
    """A copy of ``bundle`` under manifest version "2": another identity, the same model."""
    copy = folder / "bundle-2"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "version": "2"}, indent=2))
    return copy


def make_releases(store, tmp_path: Path, fleet: str, bundles: list[Path], *, now: float) -> Released:
    """Releases 1 (``bundles[0]``) and 2 (``bundles[1]``) of ``fleet``, signed by fresh keys."""
    key_dir = keys.init(tmp_path / "keys", now=now)
    for bundle in bundles:
        releases.make_release(store, bundle, fleet=fleet, keys_dir=key_dir, releases_dir=tmp_path / "releases",
                              now=now)
    return Released(key_dir, tmp_path / "releases")
