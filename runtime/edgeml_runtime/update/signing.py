"""Ed25519 keys and signed documents: the one place the update code touches ``cryptography``.

A signed document is JSON ``{"signed": {...}, "signatures": [{"keyid", "sig"}]}``.
Each signature is Ed25519 over the canonical JSON of ``signed``
(:func:`~edgeml_runtime.protocol.identity.canonical_json`: sorted keys, no
spaces), so key order and indentation of the file never matter. A key id is
the hex SHA-256 of the raw 32-byte public key: anyone holding the public key
can compute it, nobody can choose it.

Key files are PEM: a private key PKCS8 without a passphrase, written with
mode 0600 (it is replaced atomically, never readable by others for an
instant); a public key SubjectPublicKeyInfo. ``cryptography`` is imported
only when a key is used, and its absence says which extra to install.

Example (a round trip, then one changed value):

>>> private, public = generate()
>>> keys = {key_id(public_raw(public)): public}
>>> envelope = sign({"_type": "demo", "version": 1}, private)
>>> verify(envelope, keys)
{'_type': 'demo', 'version': 1}
>>> envelope["signed"]["version"] = 2
>>> verify(envelope, keys)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
edgeml_runtime.errors.UpdateRefused: update refused (bad_signature): the document's signature by key ... does not \
verify: it was changed after signing...
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from ..errors import BundleError, UpdateError, UpdateRefused, few
from ..protocol.identity import canonical_json

__all__ = ["generate", "key_id", "public_from_hex", "public_hex", "public_raw", "read_private", "read_public", "sign",
           "verify", "write_private", "write_public"]

INSTALL = "pip install 'edgeml-runtime[ota]'"


def _crypto():
    """``(ed25519, serialization)`` from ``cryptography``, or an UpdateError naming the extra to install."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise UpdateError(f"signed updates need the cryptography package ({exc}); install it with {INSTALL}") from None
    return ed25519, serialization


def key_id(public_raw: bytes) -> str:
    """The id of a public key: the hex SHA-256 of its raw 32 bytes.

    >>> key_id(bytes(32))[:16]
    '66687aadf862bd77'
    """
    return hashlib.sha256(public_raw).hexdigest()


def generate():
    """A new Ed25519 key pair ``(private, public)``."""
    ed25519, _ = _crypto()
    private = ed25519.Ed25519PrivateKey.generate()
    return private, private.public_key()


def public_raw(key) -> bytes:
    """The raw 32 bytes of a public key (of a private key: of its public half)."""
    _, serialization = _crypto()
    if hasattr(key, "public_key"):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_hex(key) -> str:
    """The public key as 64 hex digits (how root.json lists release keys)."""
    return public_raw(key).hex()


def public_from_hex(text: str):
    """The public key written as 64 hex digits; UpdateRefused ``malformed`` for anything else."""
    ed25519, _ = _crypto()
    try:
        raw = bytes.fromhex(text) if isinstance(text, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise UpdateRefused("malformed", f"public key {str(text)[:80]!r} is not 64 hex digits (a raw Ed25519 public "
                                         "key); write root.json again with `edgeml`")
    return ed25519.Ed25519PublicKey.from_public_bytes(raw)


def write_private(path: str | os.PathLike, key) -> Path:
    """Write a private key as unencrypted PKCS8 PEM with mode 0600, replacing ``path`` atomically."""
    _, s = _crypto()
    pem = key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption())
    return _write(Path(path), pem, 0o600)


def write_public(path: str | os.PathLike, key) -> Path:
    """Write a public key as SubjectPublicKeyInfo PEM (mode 0644), replacing ``path`` atomically."""
    _, s = _crypto()
    if hasattr(key, "public_key"):
        key = key.public_key()
    return _write(Path(path), key.public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo), 0o644)


def read_private(path: str | os.PathLike):
    """The Ed25519 private key in the PEM file ``path``; UpdateError naming the file if it is not one."""
    ed25519, s = _crypto()
    data = _read(Path(path), "private")
    try:
        key = s.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise UpdateError(f"{path} is not an unencrypted PEM private key ({exc}); give the file `edgeml` wrote, or "
                          "make a new key") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise UpdateError(f"{path} holds a {type(key).__name__}, not an Ed25519 key; give an Ed25519 key")
    return key


def read_public(path: str | os.PathLike):
    """The Ed25519 public key in the PEM file ``path`` (e.g. the root key a device is provisioned with)."""
    ed25519, s = _crypto()
    data = _read(Path(path), "public")
    try:
        key = s.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise UpdateError(f"{path} is not a PEM public key ({exc}); copy the root public key `edgeml` wrote") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise UpdateError(f"{path} holds a {type(key).__name__}, not an Ed25519 key; give an Ed25519 key")
    return key


def sign(signed: dict, private) -> dict:
    """The envelope ``{"signed": signed, "signatures": [{"keyid", "sig"}]}``, signed by ``private``."""
    _crypto()
    sig = private.sign(_canonical(signed, "the document"))
    return {"signed": signed, "signatures": [{"keyid": key_id(public_raw(private)),
                                              "sig": base64.b64encode(sig).decode("ascii")}]}


def verify(envelope: dict, keys: Mapping[str, object], *, what: str = "the document") -> dict:
    """``envelope["signed"]`` if one of its signatures is by a key in ``keys`` (key id → public key) and verifies.

    Refused (:class:`~edgeml_runtime.errors.UpdateRefused`): ``malformed`` if
    the envelope is not shaped as one, ``unknown_key`` if no signature is by a
    key in ``keys``, ``bad_signature`` if those that are do not verify.
    ``what`` names the document in messages (``"release.json"``).
    """
    _crypto()
    signed, signatures = _parts(envelope, what)
    message = _canonical(signed, what)
    tried = []
    for i, entry in enumerate(signatures):
        keyid, sig = _signature(entry, i, what)
        if keyid not in keys:
            continue
        tried.append(keyid)
        if _verifies(keys[keyid], sig, message):
            return signed
    if tried:
        raise UpdateRefused("bad_signature", f"{what}'s signature by key {tried[0][:16]}… does not verify: it was "
                                             "changed after signing, or damaged; sign it again")
    seen = [str(entry.get("keyid"))[:16] for entry in signatures]
    raise UpdateRefused("unknown_key", f"{what} is signed by {few(seen)}, none of the keys trusted here "
                                       f"({few(k[:16] for k in keys)}); sign it with a trusted key")


def _verifies(public, sig: bytes, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        public.verify(sig, message)
    except InvalidSignature:
        return False
    return True


def _parts(envelope, what: str) -> tuple[dict, list]:
    if not isinstance(envelope, Mapping):
        raise UpdateRefused("malformed", f"{what} is a {type(envelope).__name__}, not a signed JSON object; give "
                                         "the file `edgeml release` wrote")
    missing = [k for k in ("signed", "signatures") if k not in envelope]
    if missing:
        raise UpdateRefused("malformed", f"{what} has no {few(missing)}: it is not a signed document; give the file "
                                         "`edgeml release` wrote")
    signed, signatures = envelope["signed"], envelope["signatures"]
    if not isinstance(signed, dict):
        raise UpdateRefused("malformed", f"{what}: signed is a {type(signed).__name__}, expected an object")
    if not isinstance(signatures, list) or not signatures:
        raise UpdateRefused("malformed", f"{what}: signatures is {str(signatures)[:60]}, expected a non-empty list")
    return signed, signatures


def _signature(entry, i: int, what: str) -> tuple[str, bytes]:
    where = f"{what}: signatures[{i}]"
    if not isinstance(entry, Mapping):
        raise UpdateRefused("malformed", f"{where} is a {type(entry).__name__}, expected {{keyid, sig}}")
    for key in ("keyid", "sig"):
        if not isinstance(entry.get(key), str):
            raise UpdateRefused("malformed", f"{where}.{key} is {str(entry.get(key))[:60]!r}, expected a string")
    try:
        return entry["keyid"], base64.b64decode(entry["sig"], validate=True)
    except (binascii.Error, ValueError):
        raise UpdateRefused("malformed", f"{where}.sig is not base64; sign the document again") from None


def _canonical(signed, what: str) -> bytes:
    try:
        return canonical_json(signed)
    except BundleError:
        raise UpdateRefused("malformed", f"{what} holds a value JSON cannot (NaN, infinity, or not a JSON type); "
                                         "make it from JSON values only") from None


def _read(path: Path, kind: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UpdateError(f"the {kind} key file {path} cannot be read ({exc.strerror}); give the path of the key "
                          "file") from None


def _write(path: Path, data: bytes, mode: int) -> Path:
    """Replace ``path`` with ``data`` atomically; the file has ``mode`` from its creation on."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
