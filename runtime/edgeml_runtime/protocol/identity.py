"""Bundle identity: one SHA-256 over the manifest's canonical form.

The manifest already holds the SHA-256 of every artifact, so hashing the
manifest covers the whole bundle: two bundles have the same identity exactly
when their manifests say the same thing, whatever the key order or
indentation of the ``manifest.json`` files. Devices report it in their birth
and drift messages (``model.bundle_sha256``), beside the artifact they run;
the host and the fleet controller compute it with the same function.

The canonical form is JSON with sorted keys, no insignificant whitespace,
UTF-8 text (not ``\\u`` escapes), and Python's shortest round-trip float
repr; NaN and infinity are refused (a manifest never holds them).

Example:

>>> a = {"name": "demo", "version": "1", "artifacts": [{"path": "model.onnx", "sha256": "ab"}]}
>>> b = {"version": "1", "artifacts": [{"sha256": "ab", "path": "model.onnx"}], "name": "demo"}
>>> canonical_json(a)
b'{"artifacts":[{"path":"model.onnx","sha256":"ab"}],"name":"demo","version":"1"}'
>>> bundle_sha256(a) == bundle_sha256(b), len(bundle_sha256(a))
(True, 64)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from ..errors import BundleError


def canonical_json(obj) -> bytes:
    """``obj`` as canonical JSON bytes: sorted keys, compact separators, UTF-8, finite numbers only."""
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise BundleError(f"the manifest cannot be put in canonical JSON ({exc}); it must hold only JSON values "
                          "with finite numbers: rebuild the bundle") from None


def bundle_sha256(manifest: Mapping) -> str:
    """The bundle's identity: the hex SHA-256 of the canonical JSON of ``manifest`` (the object in manifest.json)."""
    if not isinstance(manifest, Mapping):
        raise BundleError(f"a manifest is a JSON object, not {type(manifest).__name__}; read it from manifest.json")
    return hashlib.sha256(canonical_json(manifest)).hexdigest()
