"""The signing keys of a fleet's releases: an offline root key, online release keys, and ``root.json`` between them.

A keys folder (mode 0700) holds::

    root.key                    the root private key (PEM PKCS8, 0600): keep it offline; only init, rotate and
                                revoke read it
    root.pub                    the root public key: what every device is provisioned with
    root.json                   signed by the root key: the release keys devices trust and those revoked
    release-<keyid16>.key/.pub  a release key (0600 / 0644): ``edgeml release`` signs with the newest one
                                listed in root.json and not revoked

:func:`init` makes the root key, one release key and ``root.json`` version 1;
:func:`rotate` adds a new release key (the old one stays listed, so releases
it signed still verify, unless ``revoke_old``); :func:`revoke` lists a key as
revoked. Each of them signs ``root.json`` again with its version + 1 (devices
refuse an older root) and an expiry ``expires_days`` from now. Private keys
are written by :func:`edgeml_runtime.update.signing.write_private`: a
temporary file made 0600 before any byte lands, then renamed.

Example:

>>> import tempfile
>>> folder = init(tempfile.mkdtemp() + "/keys", now=0.0)
>>> [(k.status, k.keyid == signer(folder).keyid) for k in list_keys(folder)], root_version(folder)
([('active', True)], 1)
>>> init(folder)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
edgeml.errors.FleetError: .../keys already holds keys (root.key, root.pub, root.json, release-...key): init would ...
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from edgeml.errors import FleetError

ROOT_KEY, ROOT_PUB, ROOT_JSON = "root.key", "root.pub", "root.json"
DAY = 86400.0


@dataclass(frozen=True)
class ReleaseKey:
    """A release key as root.json lists it: its id, public key hex, status (``active``: the one that signs;
    ``listed``: trusted, no longer signing; ``revoked``) and whether its private key is in the folder."""

    keyid: str
    public: str
    status: str
    private: bool

    def to_dict(self) -> dict:
        return {"keyid": self.keyid, "public": self.public, "status": self.status, "private": self.private}


@dataclass(frozen=True)
class Signer:
    """What :func:`signer` gives ``edgeml release``: the release key's id and private key, and root.json."""

    keyid: str
    private: object
    root: dict  #: the signed root envelope current now


def _signing():
    from edgeml_runtime.update import signing

    return signing


def init(folder: str | os.PathLike, *, expires_days: float = 365, now: float | None = None) -> Path:
    """Make the root key, a release key and root.json version 1 in ``folder`` (created 0700); the folder.
    :class:`FleetError` if it holds keys already (nothing is replaced)."""
    folder = Path(folder)
    held = []
    if folder.is_dir():
        held = [n for n in (ROOT_KEY, ROOT_PUB, ROOT_JSON) if (folder / n).exists()]
        held += sorted(p.name for p in folder.glob("release-*.key"))
    if held:
        raise FleetError(f"{folder} already holds keys ({', '.join(held[:4])}): init would replace them and every "
                         f"device provisioned with its root.pub would refuse the releases. Rotate the release key "
                         f"with edgeml keys rotate {folder}, or give an empty folder")
    _days(expires_days)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    s = _signing()
    root_private, root_public = s.generate()
    s.write_private(folder / ROOT_KEY, root_private)
    s.write_public(folder / ROOT_PUB, root_public)
    keyid, public = _new_release_key(folder)
    _sign_root(folder, root_private, 1, {keyid: public}, [], expires_days, now)
    return folder


def rotate(folder: str | os.PathLike, *, revoke_old: bool = False, expires_days: float = 365,
           now: float | None = None) -> str:
    """A new release key, listed in a new root.json (version + 1); with ``revoke_old`` every earlier key is
    revoked. The new key's id."""
    folder, root = _existing(folder), _root(folder)
    keyid, public = _new_release_key(folder)
    listed = {**root["release_keys"], keyid: public}
    revoked = list(root["revoked"]) + ([k for k in root["release_keys"] if k not in root["revoked"]]
                                       if revoke_old else [])
    _sign_root(folder, _root_private(folder), root["version"] + 1, listed, revoked, expires_days, now)
    return keyid


def revoke(folder: str | os.PathLike, keyid: str, *, expires_days: float = 365, now: float | None = None) -> str:
    """List the release key ``keyid`` (its full id or a unique prefix of 8 digits or more) as revoked, in a new
    root.json (version + 1); its full id. Devices refuse releases it signs from then on."""
    folder, root = _existing(folder), _root(folder)
    full = _match(folder, root, keyid)
    if full in root["revoked"]:
        raise FleetError(f"release key {full[:16]} of {folder} is revoked already; list the keys with "
                         f"edgeml keys list {folder}")
    _sign_root(folder, _root_private(folder), root["version"] + 1, root["release_keys"],
               [*root["revoked"], full], expires_days, now)
    return full


def list_keys(folder: str | os.PathLike) -> list[ReleaseKey]:
    """The release keys root.json lists, oldest first."""
    folder, root = _existing(folder), _root(folder)
    active = _active(folder, root)
    return [ReleaseKey(k, pub, "revoked" if k in root["revoked"] else "active" if k == active else "listed",
                       _key_file(folder, k).exists()) for k, pub in root["release_keys"].items()]


def root_version(folder: str | os.PathLike) -> int:
    return _root(_existing(folder))["version"]


def root_envelope(folder: str | os.PathLike) -> dict:
    """root.json of ``folder``, checked against its root.pub (:class:`FleetError` if it does not verify)."""
    folder = _existing(folder)
    path = folder / ROOT_JSON
    try:
        envelope = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FleetError(f"{path} cannot be read as JSON ({exc}); make the keys with edgeml keys init") from None
    s = _signing()
    public = s.read_public(folder / ROOT_PUB)
    s.verify(envelope, {s.key_id(s.public_raw(public)): public}, what=str(path))
    return envelope


def signer(folder: str | os.PathLike) -> Signer:
    """The newest release key of ``folder`` listed in its root.json and not revoked, whose private key is there.
    Reads no root private key."""
    folder = _existing(folder)
    envelope = root_envelope(folder)
    keyid = _active(folder, _root_of(envelope))
    if keyid is None:
        raise FleetError(f"{folder} has no release key that may sign: every key root.json lists is revoked or its "
                         f"private key is not in the folder; make one with edgeml keys rotate {folder}")
    return Signer(keyid, _signing().read_private(_key_file(folder, keyid)), envelope)


# -- the files -----------------------------------------------------------------------------------

def _days(expires_days: float) -> float:
    if not isinstance(expires_days, int | float) or not 0 < expires_days <= 3650:
        raise FleetError(f"expires_days is {expires_days!r}: give a number of days above 0 and at most 3650")
    return float(expires_days)


def _existing(folder) -> Path:
    folder = Path(folder)
    if not (folder / ROOT_JSON).is_file():
        raise FleetError(f"{folder} holds no {ROOT_JSON}: it is not a keys folder; make one with edgeml keys init "
                         f"{folder}")
    return folder


def _root_of(envelope: dict) -> dict:
    from edgeml_runtime.update.metadata import Root

    return Root.from_signed(envelope["signed"], where=ROOT_JSON).to_signed() | {
        "release_keys": {k: v["public"] for k, v in envelope["signed"]["release_keys"].items()}}


def _root(folder: Path) -> dict:
    return _root_of(root_envelope(folder))


def _root_private(folder: Path):
    path = folder / ROOT_KEY
    if not path.is_file():
        raise FleetError(f"{path} is missing: rotating or revoking signs root.json with the root key; bring the "
                         "offline root key back into the folder for this step")
    return _signing().read_private(path)


def _key_file(folder: Path, keyid: str) -> Path:
    return folder / f"release-{keyid[:16]}.key"


def _active(folder: Path, root: dict) -> str | None:
    usable = [k for k in root["release_keys"] if k not in root["revoked"] and _key_file(folder, k).exists()]
    return usable[-1] if usable else None


def _match(folder: Path, root: dict, prefix: str) -> str:
    found = [k for k in root["release_keys"] if len(prefix) >= 8 and k.startswith(prefix.lower())]
    if len(found) != 1:
        known = ", ".join(k[:16] for k in root["release_keys"])
        why = "matches several keys" if found else "is no release key root.json lists"
        raise FleetError(f"key id {prefix!r} {why} (listed: {known}); give 8 hex digits or more of one "
                         f"(edgeml keys list {folder})")
    return found[0]


def _new_release_key(folder: Path) -> tuple[str, str]:
    s = _signing()
    private, public = s.generate()
    keyid = s.key_id(s.public_raw(public))
    s.write_private(_key_file(folder, keyid), private)
    s.write_public(_key_file(folder, keyid).with_suffix(".pub"), public)
    return keyid, s.public_hex(public)


def _sign_root(folder: Path, root_private, version: int, release_keys: dict, revoked: list, expires_days: float,
               now: float | None) -> None:
    from edgeml_runtime.update.metadata import make_root

    now = time.time() if now is None else now
    signed = make_root(version, release_keys, revoked, now + _days(expires_days) * DAY)
    text = json.dumps(_signing().sign(signed, root_private), indent=2) + "\n"
    tmp = folder / f".{ROOT_JSON}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / ROOT_JSON)


__all__ = ["ReleaseKey", "Signer", "init", "list_keys", "revoke", "root_envelope", "root_version", "rotate",
           "signer"]
