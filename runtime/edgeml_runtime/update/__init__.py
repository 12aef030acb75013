"""Signed over-the-air updates, device side: verify a release, fetch its bundle, switch, test its health, commit.

The pieces, in the order an update goes through them:

* :mod:`.signing`: Ed25519 keys and signed documents (``cryptography``, the ``[ota]`` extra, imported lazily);
* :mod:`.metadata`: ``root.json`` and ``release.json`` typed and validated (:class:`Root`, :class:`Release`);
* :mod:`.trust`: what the device trusts so far (:class:`TrustState`) and :func:`verify_release`;
* :mod:`.download`: the archive over HTTP(S), resumed after a cut, checked against the release;
* :mod:`.slots`: bundles unpacked into slots, switched, committed or rolled back, crash-safe;
* :mod:`.health`: :class:`HealthGate`, the verdict on a new bundle from its first drift windows.

Refusals are :class:`~edgeml_runtime.errors.UpdateRefused` with a ``reason`` word; other failures
:class:`~edgeml_runtime.errors.UpdateError`.
"""

from ..errors import UpdateError, UpdateRefused
from .download import download
from .health import HealthGate
from .metadata import Health, Release, ReleaseBundle, Root, format_time, make_release, make_root, parse_time
from .slots import Slots
from .trust import TrustState, verify_release

__all__ = ["Health", "HealthGate", "Release", "ReleaseBundle", "Root", "Slots", "TrustState", "UpdateError",
           "UpdateRefused", "download", "format_time", "make_release", "make_root", "parse_time", "verify_release"]
