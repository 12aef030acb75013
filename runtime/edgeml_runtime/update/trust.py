"""What a device trusts, and the check of a release against it.

A device is provisioned with the root PUBLIC key only. Everything else it
learns from signed documents, and remembers in ``trust.json``
(:class:`TrustState`, in the update folder): the newest root it trusted, the
highest release version, the newest signed timestamp seen. Those only grow,
so an attacker replaying an old (validly signed) release or root gets
``old_version`` or ``old_root``, and a device without a real-time clock still
refuses a release that expired before a newer one was seen.

:func:`verify_release` checks, in this order, each failure an
:class:`~edgeml_runtime.errors.UpdateRefused` with its ``reason``:

1. root.json is signed by the provisioned root key (``bad_root``), not older
   than the root trusted (``old_root``), not expired (``expired``);
2. release.json is signed by a release key listed in that root
   (``unknown_key``), not revoked there (``revoked_key``), and the signature
   verifies (``bad_signature``);
3. it is for this fleet (``other_fleet``), newer than the release trusted
   (``old_version``), and not expired (``expired``): expired when ``expires``
   <= max(the wall clock if given, the newest timestamp seen).

It does not change the state: :meth:`TrustState.trust` records a release
once the caller accepts it. ``trust.json`` is replaced atomically (temporary
file, fsync, rename, folder fsync): a crash leaves the old state or the new.

Example:

>>> import tempfile
>>> state = TrustState.load(tempfile.mkdtemp())
>>> state.release_version, state.root_version, state.path.name
(0, 0, 'trust.json')
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UpdateError, UpdateRefused
from ..statefile import write_atomically
from .metadata import Release, Root, format_time
from .signing import key_id, public_from_hex, public_raw, verify

__all__ = ["TRUST_FILE", "TrustState", "read_json", "verify_release", "write_json"]

TRUST_FILE = "trust.json"


def write_json(path: str | os.PathLike, data) -> None:
    """Replace ``path`` with ``data`` as JSON, atomically and durably; raises OSError (e.g. a full disk)."""
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    write_atomically(path, text.encode("utf-8"), hidden=True)


def read_json(path: Path, what: str):
    """The JSON in ``path``, None if there is no file; UpdateError naming the file if it is unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UpdateError(f"{path} ({what}) cannot be read ({exc}); restore it from a backup, or delete it to start "
                          "over (the device then trusts any release its root key signed)") from None


@dataclass
class TrustState:
    """What the device trusts, persisted in ``<folder>/trust.json``; get one with :meth:`load`."""

    path: Path
    root_version: int = 0  #: version of the root trusted (0: none yet, only the provisioned root key)
    root: dict | None = None  #: the signed root envelope last trusted
    release_version: int = 0  #: highest release version trusted
    newest_timestamp: float = 0.0  #: newest signed timestamp seen (seconds since the epoch)
    failed: list[int] = field(default_factory=list)  #: release versions that failed: never retried automatically
    rollbacks: int = 0  #: automatic rollbacks done (for their cap)

    FIELDS = ("root_version", "root", "release_version", "newest_timestamp", "failed", "rollbacks")

    @classmethod
    def load(cls, folder: str | os.PathLike) -> TrustState:
        """The state saved in ``folder`` (created if missing); a fresh state if there is none yet."""
        path = Path(folder) / TRUST_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        for leftover in path.parent.glob(f".{TRUST_FILE}.*.tmp"):  # an interrupted save's: the file is whole
            leftover.unlink(missing_ok=True)
        data = read_json(path, "the update trust state")
        if data is None:
            return cls(path)
        if not isinstance(data, dict) or set(cls.FIELDS) - set(data):
            raise UpdateError(f"{path} is not an update trust state (it lacks some of {', '.join(cls.FIELDS)}); "
                              "restore it from a backup, or delete it to start over")
        return cls(path, int(data["root_version"]), data["root"], int(data["release_version"]),
                   float(data["newest_timestamp"]), [int(v) for v in data["failed"]], int(data["rollbacks"]))

    def to_json(self) -> dict:
        return {"root_version": self.root_version, "root": self.root, "release_version": self.release_version,
                "newest_timestamp": self.newest_timestamp, "failed": list(self.failed), "rollbacks": self.rollbacks,
                "newest_time": format_time(self.newest_timestamp)}

    def save(self) -> None:
        """Write the state to :attr:`path`, atomically."""
        write_json(self.path, self.to_json())

    def trust(self, release: Release, root: dict) -> None:
        """Record ``release`` (checked by :func:`verify_release`) and its signed ``root`` envelope; saved."""
        version = Root.from_signed(root["signed"]).version
        self.root_version, self.root = max(self.root_version, version), root
        self.release_version = max(self.release_version, release.version)
        self.newest_timestamp = max(self.newest_timestamp, release.timestamp_at)
        self.save()

    def keep_root(self, root: dict) -> None:
        """Record a signed ``root`` envelope :func:`verify_release` accepted, if newer than the one trusted; saved.
        Kept at once, before the release it came with is installed: a root that revokes a key keeps it revoked
        even if that release then fails."""
        version = Root.from_signed(root["signed"]).version
        if version > self.root_version:
            self.root_version, self.root = version, root
            self.save()

    def fail(self, version: int) -> None:
        """Record that release ``version`` failed (it is not retried automatically); saved."""
        if version not in self.failed:
            self.failed.append(version)
        self.save()

    def rolled_back(self) -> int:
        """Count one automatic rollback; saved. The count so far."""
        self.rollbacks += 1
        self.save()
        return self.rollbacks


def verify_release(release_env: dict, root_env: dict, root_public, state: TrustState, *, fleet: str,
                   now: float | None) -> Release:
    """The :class:`Release` in ``release_env`` if every check of the module docstring passes, else UpdateRefused.

    ``root_public`` is the provisioned root public key; ``now`` the wall clock
    (seconds since the epoch) on a board with a real-time clock, None on one
    without (then only the newest signed timestamp seen tells the time).
    """
    root = _verify_root(root_env, root_public, state)
    clock = max(now if now is not None else 0.0, state.newest_timestamp)
    if root.expires_at <= clock:
        raise UpdateRefused("expired", f"root.json (version {root.version}) expired at {root.expires} (the time here "
                                       f"is {format_time(clock)}); sign a new root.json on the host")
    release = Release.from_signed(_verify_signed(release_env, root))
    if release.root_version > root.version:
        raise UpdateRefused("old_root", f"release.json was signed under root version {release.root_version}, but "
                                        f"root.json given with it is version {root.version}; serve the release "
                                        "folder whole")
    if release.fleet != fleet:
        raise UpdateRefused("other_fleet", f"release.json is for fleet {release.fleet!r}, this device is in "
                                           f"{fleet!r}; publish the release to this fleet")
    if release.version <= state.release_version:
        raise UpdateRefused("old_version", f"release.json: version {release.version} is not above "
                                           f"{state.release_version}, the release trusted now; make a new release")
    if release.expires_at <= clock:
        raise UpdateRefused("expired", f"release.json (version {release.version}) expired at {release.expires} "
                                       f"(the time here is {format_time(clock)}); make a new release")
    return release


def _verify_root(root_env: dict, root_public, state: TrustState) -> Root:
    try:
        signed = verify(root_env, {key_id(public_raw(root_public)): root_public}, what="root.json")
    except UpdateRefused as exc:
        if exc.reason == "malformed":
            raise
        raise UpdateRefused("bad_root", f"root.json is not signed by this device's root key ({exc.detail}); "
                                        "give the root.json signed by the fleet's root key") from None
    root = Root.from_signed(signed)
    if root.version < state.root_version:
        raise UpdateRefused("old_root", f"root.json: version {root.version} is older than version "
                                        f"{state.root_version}, the root trusted now; serve the newest root.json")
    return root


def _verify_signed(release_env: dict, root: Root) -> dict:
    keys = {k: public_from_hex(v) for k, v in root.release_keys.items() if k not in root.revoked}
    try:
        return verify(release_env, keys, what="release.json")
    except UpdateRefused as exc:
        revoked = _signers(release_env) & set(root.revoked)
        if exc.reason == "unknown_key" and revoked:
            raise UpdateRefused("revoked_key", f"release.json is signed by key {sorted(revoked)[0][:16]}…, revoked "
                                               f"by root.json version {root.version}; sign the release with a "
                                               "current release key") from None
        raise


def _signers(envelope) -> set[str]:
    signatures = envelope.get("signatures") if isinstance(envelope, Mapping) else None
    return {s["keyid"] for s in signatures or () if isinstance(s, Mapping) and isinstance(s.get("keyid"), str)}
