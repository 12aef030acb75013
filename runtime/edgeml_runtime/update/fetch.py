"""Getting a release's bundle onto the device and trying it there: the archive fetched, the artifacts self-tested.

:func:`fetch_archive` downloads the archive a release signs from the
controller's HTTP server, at the path the *signed* release gives (an
announcement's own ``archive`` field is never followed), resuming a cut
with ``Range`` after each of ``retry_delays``. It raises
:class:`~edgeml_runtime.errors.UpdateUnreachable` when the server stays out
of reach or serves a copy that is not the signed one: the server's fault,
not the release's, so the agent tries again later instead of failing it.

:func:`self_test` scores the bundle's sample rows with every artifact this
device's engines can run and compares them with the outputs stored at build
time, within the tolerance the build verified each with.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from ..errors import BundleError, EngineError, UpdateError, UpdateRefused, UpdateUnreachable
from .metadata import Release


def fetch_archive(server: str, fleet: str, release: Release, folder: Path, *, token: str | None,
                  retry_delays: tuple[float, ...], halt: threading.Event, log: logging.Logger) -> Path:
    """``release``'s archive in ``folder`` (``<version>.tar.gz``), checked against its signed size and SHA-256."""
    from .download import download

    dest = folder / f"{release.version}.tar.gz"
    dest.parent.mkdir(exist_ok=True)
    url = f"{server.rstrip('/')}/releases/{fleet}/{release.version}/{release.bundle.archive}"
    tries = len(retry_delays) + 1
    for attempt in range(1, tries + 1):
        try:
            download(url, dest, sha256=release.bundle.sha256, size=release.bundle.bytes, token=token)
            return dest
        except UpdateRefused as exc:  # the server's copy is not the one the release signs: its fault
            raise UpdateUnreachable(f"{exc}; the server's copy is tried again later") from None
        except UpdateError as exc:
            if attempt == tries or halt.is_set():
                raise UpdateUnreachable(f"{exc} ({attempt} attempt(s); the part fetched is kept and resumed when the "
                                        "release is heard again)") from None
            delay = retry_delays[attempt - 1]
            log.warning("update: downloading release %d stopped (%s); resuming in %g s (attempt %d of %d)",
                        release.version, exc, delay, attempt + 1, tries)
            halt.wait(delay)
    raise AssertionError("not reached: the last try returns or raises")


def self_test(slot: Path, log: logging.Logger) -> list[str]:
    """Every artifact this device can run scores the sample rows as at build time; the artifacts run (BundleError
    if one differs, or if none can run here)."""
    from ..bundle import read_manifest
    from ..samples import check_artifact, read_samples

    manifest = read_manifest(slot)
    samples = read_samples(slot, manifest)
    ran = []
    for artifact in manifest.artifacts:
        try:
            found = check_artifact(slot, manifest, samples, artifact.path)
        except EngineError as exc:  # an engine this device lacks: the artifact cannot be the one it runs
            log.info("update: self-test skips %s (%s)", artifact.path, exc)
            continue
        if not found.passed:
            raise BundleError(f"self-test: {found}")
        ran.append(artifact.path)
    if not ran:
        raise BundleError("self-test: no artifact of the bundle runs on this device's engines")
    return ran


__all__ = ["fetch_archive", "self_test"]
