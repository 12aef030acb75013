"""Where a bundle goes and what it is called: ``dist/<name>-<N>``, N one past the last, or the folder asked for.

>>> default_name("data/Sensor Log.v2.csv"), default_name(None)
('sensor-log.v2', 'demo')
"""

from __future__ import annotations

import re
from pathlib import Path

from edgeml.errors import BundleError, ConfigError
from edgeml_runtime.bundle import read_manifest
from edgeml_runtime.manifest import BUNDLE_NAME

#: Where bundles go when no folder is asked for.
DIST = Path("dist")


def default_name(data: str | None) -> str:
    """The bundle name for a build of ``data`` (its file's stem, made safe), or ``demo`` for the built-in data."""
    if data is None:
        return "demo"
    stem = Path(str(data).split("?")[0]).stem
    return re.sub(r"[^0-9A-Za-z_.-]+", "-", stem).strip("-.").lower() or "model"


def check_name(name: str) -> str:
    """``name`` if it is a bundle name (the manifest's rule: it names a folder, so no path); else a ConfigError.

    >>> check_name("../../../x")
    Traceback (most recent call last):
    ...
    edgeml.errors.ConfigError: --name '../../../x' is not a bundle name: a bundle's name must be a name of letters, \
digits, '_', '-' and '.', starting with a letter or digit (at most 100). It names the bundle's folder; choose such \
a name
    """
    try:
        BUNDLE_NAME.read(name, "name")
    except BundleError:
        raise ConfigError(f"--name {name!r} is not a bundle name: a bundle's name must be {BUNDLE_NAME.what}. It "
                          "names the bundle's folder; choose such a name") from None
    return name


def next_version(parent: Path, name: str) -> str:
    """One more than the highest ``<name>-<N>`` bundle already in ``parent`` (1 for the first)."""
    pattern = re.compile(rf"^{re.escape(name)}-(\d+)(?:\.tar\.gz)?$")
    taken = ([int(m.group(1)) for p in parent.glob(f"{name}-*") if (m := pattern.match(p.name))]
             if parent.is_dir() else [])
    return str(max(taken, default=0) + 1)


def destination(out: str | Path | None, name: str) -> tuple[Path, str]:
    """The bundle folder and its version: ``dist/<name>-<N>`` with N one past the last, or ``out`` (``--out``).

    With ``out`` the version comes from the folder name (``…-7``), else one
    past the version of the bundle being replaced there, else 1.
    """
    if not out:
        version = next_version(DIST, name)
        return DIST / f"{name}-{version}", version
    out = Path(out)
    m = re.fullmatch(rf"{re.escape(name)}-(\d+)", out.name)
    if m:
        return out, m.group(1)
    try:
        previous = read_manifest(out).version
        return out, str(int(previous) + 1)
    except (BundleError, ValueError):
        return out, "1"


__all__ = ["DIST", "check_name", "default_name", "destination", "next_version"]
