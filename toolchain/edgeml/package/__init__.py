"""``edgeml package``: a folder (and ``.tar.gz``) that installs a bundle on a Linux device as a service, offline.

The package holds::

    wheels/                 edgeml_runtime-*.whl and every dependency's wheel for the target (pip download)
    bundle/                 the bundle: manifest.json and the files it lists (each checked on load), but for
                            the build report (report.html, report.json): it is for people, and no device reads it
    runtime.toml            the template of /etc/edgeml/runtime.toml ([run] table)
    edgeml-runtime.service  the systemd unit
    install.sh uninstall.sh README.txt

:mod:`~edgeml.package.wheels` fetches the wheels, :mod:`~edgeml.package.service` writes the text files,
:mod:`~edgeml.package.layout` puts them in place atomically; :func:`make_package` ties them together.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from edgeml.errors import EdgeMLError
from edgeml.package import service
from edgeml.package.layout import write_atomically, write_tar
from edgeml.package.wheels import PackageError, fetch_wheels
from edgeml.targets.profiles import TargetProfile, load_target
from edgeml_runtime.bundle import open_bundle
from edgeml_runtime.manifest import Manifest

__all__ = ["PackageError", "Package", "make_package", "runtime_extras"]

@dataclass(frozen=True)
class Package:
    """What :func:`make_package` wrote."""

    folder: Path
    archive: Path | None
    requirement: str
    wheels: tuple[str, ...]
    notes: tuple[str, ...] = ()  #: what the user should know (a bundle built for another processor)


def runtime_extras(manifest: Manifest, target: TargetProfile) -> tuple[str, ...]:
    """``onnx``, ``mqtt`` and ``ota`` (signed updates) always; ``tflite`` when the bundle has a TFLite artifact the
    target runs."""
    uses_tflite = any(a.format == "tflite" for a in manifest.artifacts) and "tflite" in target.formats
    return ("onnx", "mqtt", "ota", "tflite") if uses_tflite else ("onnx", "mqtt", "ota")


def _listed(manifest: Manifest) -> dict[str, tuple[int, str]]:
    """Every file a device needs of those the manifest lists, with its size and sha256: not the build report
    (``manifest.report``), which the runtime never reads (the manifest is copied as it is, so the bundle's
    identity stays the one the build printed)."""
    refs = [*manifest.artifacts, *(f for a in manifest.artifacts for f in (a.files or {}).values())]
    refs += [manifest.samples] if manifest.samples is not None else []
    return {r.path: (r.bytes, r.sha256) for r in refs}


def _copy_bundle(bundle: Path, dest: Path) -> Manifest:
    """Copy manifest.json and the files it lists, each checked against its hash, the report aside. Nothing else
    is left out: the runtime checks every listed file when it loads the artifact it belongs to (an ``.ort``
    file's ``required_operators.config`` too), and refuses a file that is not listed."""
    with open_bundle(bundle) as b:
        manifest = b.manifest()
        dest.mkdir(parents=True)
        for name, (size, sha256) in _listed(manifest).items():
            (dest / name).write_bytes(b.read(name, size=size, sha256=sha256))
    source = Path(bundle)
    if source.is_dir():
        shutil.copyfile(source / "manifest.json", dest / "manifest.json")
    else:
        with tarfile.open(source) as t:
            member = next(m for m in t.getmembers() if m.isfile() and Path(m.name).name == "manifest.json")
            (dest / "manifest.json").write_bytes(t.extractfile(member).read())
    with open_bundle(dest) as copy:  # the copy is whole: every listed file, nothing else, each hash as listed
        for artifact in copy.manifest().artifacts:
            copy.artifact(artifact)
    return manifest


def _check_target(target: TargetProfile) -> None:
    if not target.platform_tags:
        raise PackageError(
            f"target {target.name} runs no Python (platform_tags = []), so it takes no device package; for a "
            f"microcontroller use `edgeml firmware BUNDLE -o DIR`, for an app embed the bundle's .tflite file")
    if not target.python:
        where = target.source or target.name
        raise PackageError(f"{where}: python is not set, so the wheels cannot be chosen; set the device's Python "
                           'version, e.g. python = "3.11" (`python3 --version` on the device)')


def _bundle_target(bundle: Path):
    with open_bundle(bundle) as b:
        return b.manifest().target


def make_package(bundle: str | os.PathLike, target: str | os.PathLike | None, out: str | os.PathLike, *,
                 tar: bool = False, wheels_from: str | os.PathLike | None = None) -> Package:
    """Write the device package of ``bundle`` for ``target`` (None: the profile the bundle was built for) to the
    folder ``out`` (and ``out.tar.gz``)."""
    built_for = _bundle_target(Path(bundle))
    if target is None:
        try:
            profile = load_target(built_for.name)
        except EdgeMLError as exc:
            raise PackageError(f"the bundle was built for target {built_for.name!r}, which cannot be loaded here "
                               f"({exc}); name the device's profile with --target") from exc
    else:
        profile = load_target(target)
    notes = ()
    if profile.arch != built_for.arch:
        notes = (f"the bundle was built for {built_for.name} ({built_for.arch}), the package is for {profile.name} "
                 f"({profile.arch}): its artifacts, budgets and speed estimates are {built_for.name}'s; build for "
                 f"--target {profile.name} to get that device's",)
    _check_target(profile)
    dest = Path(out)
    found = Path(wheels_from) if wheels_from is not None else None
    if found is not None and not found.is_dir():
        raise PackageError(f"--wheels-from {found}: no such folder; pass the folder holding the wheels")
    result: dict = {}

    def fill(stage: Path) -> None:
        manifest = _copy_bundle(Path(bundle), stage / "bundle")
        wheels = fetch_wheels(stage / "wheels", runtime_extras(manifest, profile), profile.platform_tags,
                              profile.python, profile.name, found)
        texts = {
            service.UNIT_NAME: service.unit_text(),
            service.SERVE_UNIT_NAME: service.unit_text("serve"),
            "runtime.toml": service.config_template(f"{manifest.name}-{manifest.version}"),
            "install.sh": service.install_script(wheels.requirement),
            "uninstall.sh": service.uninstall_script(),
            "README.txt": service.readme_text(f"{manifest.name}-{manifest.version}", profile.name),
        }
        for name, text in texts.items():
            (stage / name).write_text(text)
        result.update(requirement=wheels.requirement,
                      wheels=tuple(sorted(p.name for p in (stage / "wheels").glob("*.whl"))))

    write_atomically(dest, fill)
    archive = write_tar(dest) if tar else None
    return Package(dest, archive, result["requirement"], result["wheels"], notes)
