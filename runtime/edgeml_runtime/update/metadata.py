"""The two signed documents of an update, typed: ``root.json`` (:class:`Root`) and ``release.json`` (:class:`Release`).

``from_signed`` validates the ``signed`` part of a document key by key and
refuses it as :class:`~edgeml_runtime.errors.UpdateRefused` ``malformed``
naming the key (``release.json: bundle.sha256 is 'ab', expected 64 hex
digits``); unknown keys are refused too, so a field the device would not act
on is never silently ignored. ``to_signed`` gives back the same dict. The
host builds documents with :func:`make_root` and :func:`make_release`, which
validate through the same classes: what the host signs, a device reads.

Times are UTC text ``YYYY-MM-DDTHH:MM:SSZ``; the ``*_at`` properties are
seconds since the epoch.

Example:

>>> signed = make_release("plant-a", "", 7, {"identity": "ab" * 32, "name": "demo", "version": "1",
...     "archive": "bundle.tar.gz", "sha256": "cd" * 32, "bytes": 123456}, {"min_rows": 200}, 3,
...     "2026-12-03T10:00:00Z", "2027-01-02T10:00:00Z")
>>> release = Release.from_signed(signed)
>>> release.version, release.bundle.bytes, release.health.min_windows, release.expires_at - release.timestamp_at
(7, 123456, 2, 2592000.0)
>>> Release.from_signed({**signed, "version": "7"})
Traceback (most recent call last):
...
edgeml_runtime.errors.UpdateRefused: update refused (malformed): release.json: version is '7', expected a whole \
number, at least 1; make and sign the release again on the host (`edgeml release`)
"""

from __future__ import annotations

import calendar
import math
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from ..errors import UpdateRefused, few
from .signing import key_id

__all__ = ["Health", "ReleaseBundle", "Release", "Root", "format_time", "make_release", "make_root", "parse_time"]

_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_RELEASE_FIX = "make and sign the release again on the host (`edgeml release`)"
_ROOT_FIX = "make and sign root.json again on the host"


def parse_time(text: str) -> float:
    """Seconds since the epoch of a UTC time ``YYYY-MM-DDTHH:MM:SSZ``; ValueError for any other text.

    >>> parse_time("1970-01-02T00:00:00Z")
    86400.0
    """
    if not isinstance(text, str) or not _TIME.fullmatch(text):
        raise ValueError(f"{text!r} is not a UTC time YYYY-MM-DDTHH:MM:SSZ")
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))


def format_time(seconds: float) -> str:
    """``seconds`` since the epoch as UTC text, to the second.

    >>> format_time(86400.9)
    '1970-01-02T00:00:00Z'
    """
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(seconds)))


class _Keys:
    """One JSON object read key by key: every refusal names the document, the key's path, the value and the fix."""

    def __init__(self, data, where: str, path: str, keys: tuple[str, ...], fix: str):
        self.where, self.path, self.fix = where, path, fix
        if not isinstance(data, Mapping):
            self.refuse("", data, "an object")
        missing, unknown = [k for k in keys if k not in data], sorted(set(map(str, data)) - set(keys))
        if missing:
            raise UpdateRefused("malformed", f"{where}: {path or 'the document'} has no {few(missing)}; {fix}")
        if unknown:
            raise UpdateRefused("malformed", f"{where}: {path or 'the document'} holds unknown keys {few(unknown)} "
                                             f"(known: {few(keys, 12)}); {fix}")
        self.data = data

    def refuse(self, key: str, value, allowed: str):
        name = f"{self.path}.{key}" if self.path and key else self.path or key or "the document"
        raise UpdateRefused("malformed", f"{self.where}: {name} is {_shown(value)}, expected {allowed}; {self.fix}")

    def whole(self, key: str, low: int) -> int:
        value = self.data[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            self.refuse(key, value, f"a whole number, at least {low}")
        return value

    def number(self, key: str, low: float, high: float = math.inf, *, above: bool = False) -> float:
        value = self.data[key]
        number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not number or value < low or (above and value == low) or value > high:
            bound = f"above {low}" if above else f"from {low} to {high}" if high < math.inf else f"at least {low}"
            self.refuse(key, value, f"a number {bound}")
        return float(value)

    def text(self, key: str, pattern: re.Pattern | None = None, allowed: str = "a non-empty string") -> str:
        value = self.data[key]
        if not isinstance(value, str) or (pattern.fullmatch(value) is None if pattern else not value):
            self.refuse(key, value, allowed)
        return value

    def time(self, key: str) -> str:
        value = self.text(key, _TIME, "a UTC time YYYY-MM-DDTHH:MM:SSZ")
        try:
            parse_time(value)
        except ValueError:
            self.refuse(key, value, "a UTC time YYYY-MM-DDTHH:MM:SSZ that exists")
        return value

    def equal(self, key: str, expected: str) -> None:
        if self.data[key] != expected:
            self.refuse(key, self.data[key], repr(expected))


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "…"


@dataclass(frozen=True)
class Health:
    """When a new bundle passes its health gate (:class:`~edgeml_runtime.update.health.HealthGate`)."""

    min_windows: int = 2  #: drift windows scored by the new bundle before it may pass
    min_rows: int = 200  #: rows scored before it may pass
    max_error_rate: float = 0.05  #: rows refused or failed / rows scored
    max_latency_ms: float = 50.0  #: mean one-row scoring latency
    max_crashes: int = 0  #: restarts of the device while testing the new bundle

    KEYS = ("min_windows", "min_rows", "max_error_rate", "max_latency_ms", "max_crashes")

    @classmethod
    def from_signed(cls, data, *, where: str = "release.json", path: str = "health") -> Health:
        k = _Keys(data, where, path, cls.KEYS, _RELEASE_FIX)
        return cls(k.whole("min_windows", 1), k.whole("min_rows", 1), k.number("max_error_rate", 0.0, 1.0),
                   k.number("max_latency_ms", 0.0, above=True), k.whole("max_crashes", 0))

    def to_signed(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ReleaseBundle:
    """The bundle a release installs: its identity (``Manifest.identity``) and the archive that carries it."""

    identity: str
    name: str
    version: str
    archive: str  #: file name of the archive in the release folder
    sha256: str  #: hex SHA-256 of the archive file
    bytes: int  #: size of the archive file

    KEYS = ("identity", "name", "version", "archive", "sha256", "bytes")

    @classmethod
    def from_signed(cls, data, *, where: str = "release.json", path: str = "bundle") -> ReleaseBundle:
        k = _Keys(data, where, path, cls.KEYS, _RELEASE_FIX)
        return cls(k.text("identity", _HEX64, "64 lowercase hex digits"), k.text("name"), k.text("version"),
                   k.text("archive", _FILE, "a plain file name"), k.text("sha256", _HEX64, "64 lowercase hex digits"),
                   k.whole("bytes", 1))

    def to_signed(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Root:
    """``root.json``: the release keys a fleet trusts (key id → public key hex) and those revoked."""

    version: int
    expires: str
    release_keys: Mapping[str, str] = field(default_factory=dict)
    revoked: tuple[str, ...] = ()

    KEYS = ("_type", "version", "expires", "release_keys", "revoked")

    @property
    def expires_at(self) -> float:
        return parse_time(self.expires)

    @classmethod
    def from_signed(cls, data, *, where: str = "root.json") -> Root:
        k = _Keys(data, where, "", cls.KEYS, _ROOT_FIX)
        k.equal("_type", "root")
        listed = data["release_keys"]
        if not isinstance(listed, Mapping):
            k.refuse("release_keys", listed, "an object {keyid: {public}}")
        keys = _Keys(listed, where, "release_keys", tuple(listed), _ROOT_FIX)
        release_keys = {keyid: _release_key(keys, keyid) for keyid in keys.data}
        revoked = data["revoked"]
        if not isinstance(revoked, list) or not all(isinstance(r, str) and _HEX64.fullmatch(r) for r in revoked):
            k.refuse("revoked", revoked, "a list of key ids (64 lowercase hex digits)")
        return cls(k.whole("version", 1), k.time("expires"), release_keys, tuple(revoked))

    def to_signed(self) -> dict:
        return {"_type": "root", "version": self.version, "expires": self.expires,
                "release_keys": {keyid: {"public": public} for keyid, public in self.release_keys.items()},
                "revoked": list(self.revoked)}


def _release_key(keys: _Keys, keyid: str) -> str:
    entry = _Keys(keys.data[keyid], keys.where, f"release_keys.{keyid[:16]}…", ("public",), _ROOT_FIX)
    public = entry.text("public", _HEX64, "64 lowercase hex digits (a raw Ed25519 public key)")
    if key_id(bytes.fromhex(public)) != keyid:
        keys.refuse(keyid[:16] + "…", keyid, f"the key id of its public key ({key_id(bytes.fromhex(public))[:16]}…)")
    return public


@dataclass(frozen=True)
class Release:
    """``release.json``: which bundle a fleet (or one cohort of it) runs from this release version on."""

    fleet: str
    cohort: str
    version: int
    timestamp: str
    expires: str
    root_version: int
    bundle: ReleaseBundle
    health: Health = Health()

    KEYS = ("_type", "fleet", "cohort", "version", "timestamp", "expires", "root_version", "bundle", "health")

    @property
    def timestamp_at(self) -> float:
        return parse_time(self.timestamp)

    @property
    def expires_at(self) -> float:
        return parse_time(self.expires)

    @classmethod
    def from_signed(cls, data, *, where: str = "release.json") -> Release:
        k = _Keys(data, where, "", cls.KEYS, _RELEASE_FIX)
        k.equal("_type", "release")
        if not isinstance(data["cohort"], str):
            k.refuse("cohort", data["cohort"], "a string ('' for the whole fleet)")
        release = cls(k.text("fleet"), data["cohort"], k.whole("version", 1), k.time("timestamp"), k.time("expires"),
                      k.whole("root_version", 1), ReleaseBundle.from_signed(data["bundle"], where=where),
                      Health.from_signed(data["health"], where=where))
        if release.expires_at <= release.timestamp_at:
            k.refuse("expires", release.expires, f"a time after the timestamp {release.timestamp}")
        return release

    def to_signed(self) -> dict:
        return {"_type": "release", "fleet": self.fleet, "cohort": self.cohort, "version": self.version,
                "timestamp": self.timestamp, "expires": self.expires, "root_version": self.root_version,
                "bundle": self.bundle.to_signed(), "health": self.health.to_signed()}


def _time_text(value) -> str:
    return format_time(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def make_root(version: int, release_keys: Mapping[str, str], revoked=(), expires: str | float = "") -> dict:
    """The ``signed`` part of a root.json (validated): ``release_keys`` maps key id → public key hex;
    ``expires`` is UTC text or seconds since the epoch."""
    signed = {"_type": "root", "version": version, "expires": _time_text(expires),
              "release_keys": {keyid: {"public": public} for keyid, public in dict(release_keys).items()},
              "revoked": list(revoked)}
    return Root.from_signed(signed).to_signed()


def make_release(fleet: str, cohort: str, version: int, bundle: Mapping, health: Mapping | Health, root_version: int,
                 timestamp: str | float, expires: str | float) -> dict:
    """The ``signed`` part of a release.json (validated). ``health`` keys left out take :class:`Health`'s
    defaults; times are UTC text or seconds since the epoch."""
    health = health.to_signed() if isinstance(health, Health) else {**Health().to_signed(), **dict(health)}
    signed = {"_type": "release", "fleet": fleet, "cohort": cohort, "version": version,
              "timestamp": _time_text(timestamp), "expires": _time_text(expires), "root_version": root_version,
              "bundle": dict(bundle), "health": health}
    return Release.from_signed(signed).to_signed()
