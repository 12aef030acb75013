"""Broker credentials for a fleet: a Mosquitto ACL and password file, made from a list of devices.

A pattern ACL (``pattern write edgeml/+/%u/#``) binds a device's user name to
the device level only: ``pi-07`` of ``plant-a`` could publish drift and a
retained birth as ``edgeml/plant-b/pi-07/``. This writes one ``user`` block per
device instead, binding each user to exactly ``edgeml/<its fleet>/<its id>/#``,
and nothing else, so a device can write below its own topics only, in its own
fleet. A device reads the release announcements of its fleet and its own
(``edgeml/<fleet>/_controller/release`` and ``.../release/<its id>``), never
another device's. Consumers get read access to the fleets they list (every
fleet by default) and write access to nothing. A fleet controller (``edgeml
fleet run``) reads the births, drift windows, deaths and update steps of its
fleets (not predictions: ``edgeml/<fleet>/+/birth|drift|death|update``) and
writes its fleet's status and release announcements below
``edgeml/<fleet>/_controller/``, a level no device id can take.

The device list is TOML (see ``docs/mosquitto/devices.toml``)::

    [fleets.plant-a]
    devices = ["pi-07", "pi-08"]                 # passwords generated

    [fleets.plant-b.devices.pi-07]               # or one table per device
    user = "plant-b.pi-07"                       # the broker user (default: the device id), unique
    password = "..."                             # given (default: generated once, then kept)
    read = ["sensors/plant-b/pi-07/#"]           # topics it may read (--input-topic)

    [consumers.dashboard]
    fleets = ["plant-a"]                         # default: every fleet

    [controllers.controller-1]                   # edgeml fleet run
    fleets = ["plant-a"]                         # default: every fleet

The folder it writes (``edgeml fleet credentials --devices devices.toml --out DIR``):

* ``acl``: the broker's ``acl_file`` (no secrets: mode 0644);
* ``passwd``: the broker's ``password_file``, PBKDF2-SHA512 hashes in
  Mosquitto's ``$7$`` format (what ``mosquitto_passwd`` writes), mode 0600;
* ``passwords/<fleet>/<device>``, ``passwords/_consumers/<name>`` and
  ``passwords/_controllers/<name>``: each
  password in clear, mode 0600 in 0700 folders, for the device's
  ``mqtt_password_file`` setting or a systemd credential. A generated password
  is kept on later runs, so rerunning after adding a device changes no other
  device's password.

Every id follows the protocol's grammar
(:func:`edgeml_runtime.protocol.topics.level_problem`), which also keeps the
line-based ACL and password files unforgeable. Files are replaced atomically
(a temporary file beside them, then a rename) and never through a link.

Example:

>>> import hashlib, base64
>>> entry = mosquitto_hash("secret", salt=bytes(12), iterations=101)
>>> entry.split("$")[1:3]
['7', '101']
>>> base64.b64decode(entry.split("$")[4]) == hashlib.pbkdf2_hmac("sha512", b"secret", bytes(12), 101)
True
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from edgeml.errors import FleetError
from edgeml_runtime.protocol.topics import ROOT, DeviceTopics, level_problem
from edgeml_runtime.protocol.updates import release_topic
from edgeml_runtime.tomlfile import exposure, read_toml

#: PBKDF2 rounds of a hash written here (``mosquitto_passwd`` writes 101; the broker reads the count from the hash).
ITERATIONS = 10_000
SALT_BYTES = 12
ACL, PASSWD, PASSWORDS = "acl", "passwd", "passwords"
_DEVICE_KEYS = ("user", "password", "read")
_CONSUMER_KEYS = ("fleets", "password")
#: What a fleet controller reads of each of its fleets (never predictions), and where it writes its status.
CONTROLLER_READS = ("birth", "drift", "death", "update")
CONTROLLER_LEVEL = "_controller"


@dataclass(frozen=True)
class Account:
    """One broker user: a device (``fleet`` and ``device`` set) or a consumer, with what it may read and write."""

    user: str
    password: str | None
    write: tuple[str, ...]
    read: tuple[str, ...]
    secret_path: tuple[str, ...]
    where: str
    fleet: str | None = None
    device: str | None = None


def mosquitto_hash(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """``password`` as Mosquitto 2's password file stores it: ``$7$<rounds>$<salt>$<PBKDF2-SHA512>``, base64."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def read_devices(path: str | os.PathLike) -> list[Account]:
    """The accounts a device list asks for, checked: ids, unique user names, topics, unknown keys."""
    path = Path(path)
    doc = read_toml(path, FleetError, "device list")
    _check_keys(doc, ("fleets", "consumers", "controllers"), f"{path}: ", "table")
    fleets = doc.get("fleets")
    if not isinstance(fleets, dict) or not fleets:
        raise FleetError(f"{path}: no [fleets.<name>] table; list each fleet's devices, e.g. "
                         '[fleets.plant-a] devices = ["pi-07"]')
    accounts = [a for fleet, body in fleets.items() for a in _fleet(path, fleet, body)]
    consumers = doc.get("consumers", {})
    _table(consumers, f"{path}: consumers")
    accounts += [_consumer(path, name, body, list(fleets)) for name, body in consumers.items()]
    controllers = doc.get("controllers", {})
    _table(controllers, f"{path}: controllers")
    accounts += [_controller(path, name, body, list(fleets)) for name, body in controllers.items()]
    seen: dict[str, Account] = {}
    for a in accounts:
        if a.user in seen:
            raise FleetError(f"{a.where}: user {a.user!r} is already the user of {seen[a.user].where}; every device "
                             "and consumer needs its own broker user: set user = \"<fleet>.<device>\" for one")
        seen[a.user] = a
    if any(a.password is not None for a in accounts) and exposure(path):
        raise FleetError(f"{path}: holds passwords and {exposure(path)}")
    return accounts


def _fleet(path: Path, fleet: str, body) -> list[Account]:
    where = f"{path}: fleets.{fleet}"
    _check_id(where, "fleet name", fleet)
    _table(body, where)
    _check_keys(body, ("devices",), f"{where}.", "key")
    devices = body.get("devices")
    if isinstance(devices, list):
        devices = {d: {} for d in devices} if all(isinstance(d, str) for d in devices) else None
    if not isinstance(devices, dict) or not devices:
        raise FleetError(f"{where}.devices must list the fleet's device ids (devices = [\"pi-07\"]) or hold one "
                         "table per device ([fleets.<fleet>.devices.pi-07])")
    out = []
    for device, spec in devices.items():
        at = f"{where}.devices.{device}"
        _check_id(at, "device id", device)
        _table(spec, at)
        _check_keys(spec, _DEVICE_KEYS, f"{at}.", "key")
        user = _text(spec, "user", at, default=device)
        _check_id(at, "user", user)
        own = DeviceTopics(fleet, device).all
        releases = (release_topic(fleet), release_topic(fleet, device))  # its fleet's and its own, no other's
        out.append(Account(user, _password(spec, at), (own,),
                           (*releases, *_topics(spec.get("read", []), f"{at}.read")), (fleet, device), at, fleet,
                           device))
    return out


def _consumer(path: Path, name: str, body, fleets: list[str]) -> Account:
    where = f"{path}: consumers.{name}"
    reads = _fleets_of(where, "consumer name", name, body, fleets)
    topics = (f"{ROOT}/#",) if reads is None else tuple(f"{ROOT}/{f}/#" for f in reads)
    return Account(name, _password(body, where), (), topics, ("_consumers", name), where)


def _controller(path: Path, name: str, body, fleets: list[str]) -> Account:
    """A fleet controller: reads births, windows, deaths and update steps of its fleets, writes below their
    _controller/ (the status, the release announcements)."""
    where = f"{path}: controllers.{name}"
    reads = _fleets_of(where, "controller name", name, body, fleets) or ["+"]
    return Account(name, _password(body, where), tuple(f"{ROOT}/{f}/{CONTROLLER_LEVEL}/#" for f in reads),
                   tuple(f"{ROOT}/{f}/+/{kind}" for f in reads for kind in CONTROLLER_READS),
                   ("_controllers", name), where)


def _fleets_of(where: str, what: str, name: str, body, fleets: list[str]) -> list[str] | None:
    """The ``fleets`` a consumer or controller lists, checked (None: every fleet)."""
    _check_id(where, what, name)
    _table(body, where)
    _check_keys(body, _CONSUMER_KEYS, f"{where}.", "key")
    reads = body.get("fleets")
    if reads is None:
        return None
    if not isinstance(reads, list) or not reads or not all(isinstance(f, str) for f in reads):
        raise FleetError(f"{where}.fleets = {reads!r} must be a list of fleet names, e.g. [\"plant-a\"]")
    unknown = [f for f in reads if f not in fleets]
    if unknown:
        raise FleetError(f"{where}.fleets names {unknown[0]!r}, which is not a fleet of this list (the fleets "
                         f"are {', '.join(fleets)})")
    return reads


def _check_id(where: str, what: str, value) -> None:
    problem = level_problem(value)
    if problem:
        raise FleetError(f"{where}: {what} {value!r} {problem}; use at most 64 ASCII letters, digits, '-', '_' or "
                         "'.', starting with a letter or digit")


def _check_keys(body: dict, allowed: tuple[str, ...], where: str, what: str) -> None:
    unknown = [k for k in body if k not in allowed]
    if unknown:
        raise FleetError(f"{where}{unknown[0]} is not a {what} of a device list here; use {', '.join(allowed)}")


def _table(body, where: str) -> None:
    if not isinstance(body, dict):
        raise FleetError(f"{where} = {body!r} must be a table")


def _text(spec: dict, key: str, where: str, default=None):
    value = spec.get(key, default)
    if value is not None and (not isinstance(value, str) or not value):
        raise FleetError(f"{where}.{key} must be a non-empty text")
    return value


def _password(spec: dict, where: str) -> str | None:
    password = _text(spec, "password", where)
    if password is not None and (len(password) < 12 or any(ord(c) < 32 or ord(c) == 127 for c in password)):
        raise FleetError(f"{where}.password must be at least 12 characters without control characters; leave it "
                         "out to have one generated")
    return password


def _topics(value, where: str) -> tuple[str, ...]:
    """MQTT topic filters a device may read: ``+`` and ``#`` only as whole levels, ``#`` only last."""
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise FleetError(f"{where} = {value!r} must be a list of MQTT topic filters")
    for topic in value:
        levels = topic.split("/")
        bad = (not topic or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in topic)
               or any(("+" in lv or "#" in lv) and lv not in ("+", "#") for lv in levels) or "#" in levels[:-1])
        if bad:
            raise FleetError(f"{where}: {topic!r} is not an MQTT topic filter ('+' and '#' only as whole levels, "
                             "'#' only last, no control characters)")
        if topic.startswith(f"{ROOT}/") or topic in ("#", f"{ROOT}"):
            raise FleetError(f"{where}: {topic!r} would let a device read the fleet's own topics; a device reads "
                             "only its input topic (e.g. sensors/<device>/#)")
    return tuple(value)


def acl_text(accounts: list[Account], source: str) -> str:
    """The Mosquitto ACL: one ``user`` block each, no ``pattern`` lines (a pattern would apply to every user)."""
    lines = [f"# Mosquitto ACL (acl_file) made by `edgeml fleet credentials` from {Path(source).name}; do not edit,",
             "# regenerate. Each device may publish only below edgeml/<its fleet>/<its id>/ and read its fleet's",
             "# and its own release announcements; consumers read.", ""]
    for a in accounts:
        who = (f"device {a.device} of fleet {a.fleet}" if a.device else
               "fleet controller: reads births, windows, deaths, updates; writes the status, releases" if a.write else
               "consumer: reads, publishes nothing")
        lines += [f"# {who}", f"user {a.user}", *(f"topic write {t}" for t in a.write),
                  *(f"topic read {t}" for t in a.read), ""]
    return "\n".join(lines)


@dataclass(frozen=True)
class Written:
    """What :func:`write_credentials` wrote: each account with where its password came from."""

    folder: Path
    accounts: tuple[Account, ...]
    origins: tuple[str, ...]  #: per account: ``given`` (in the list), ``kept`` (an earlier run's) or ``generated``

    def summary(self) -> str:
        devices = sum(1 for a in self.accounts if a.device)
        controllers = sum(1 for a in self.accounts if a.write and not a.device)
        counts = ", ".join(f"{self.origins.count(o)} {o}" for o in ("given", "kept", "generated"))
        return (f"{self.folder / ACL}: {devices} device(s) in {len({a.fleet for a in self.accounts if a.fleet})} "
                f"fleet(s), {len(self.accounts) - devices - controllers} consumer(s), {controllers} controller(s); "
                f"{self.folder / PASSWD}: passwords {counts}; "
                f"each in clear in {self.folder / PASSWORDS}/<fleet>/<device> (mode 0600)")


def write_credentials(devices: str | os.PathLike, out: str | os.PathLike) -> Written:
    """Write :data:`ACL`, :data:`PASSWD` and the clear passwords for the device list ``devices`` into ``out``."""
    accounts = read_devices(devices)
    out = Path(out)
    origins = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        secrets_dir = out / PASSWORDS
        entries = []
        for a in accounts:
            secret = secrets_dir.joinpath(*a.secret_path)
            kept = None if a.password else _kept(secret)
            origins.append("given" if a.password else "kept" if kept else "generated")
            password = a.password or kept or secrets.token_urlsafe(24)
            _private_dir(secrets_dir)
            _private_dir(secret.parent)
            _replace(secret, password + "\n", 0o600)
            entries.append(f"{a.user}:{mosquitto_hash(password)}\n")
        _replace(out / PASSWD, "".join(entries), 0o600)
        _replace(out / ACL, acl_text(accounts, str(devices)), 0o644)
    except OSError as exc:
        raise FleetError(f"{out}: cannot write the credentials ({exc.strerror}: {exc.filename}); check the folder "
                         "and its permissions") from None
    return Written(out, tuple(accounts), tuple(origins))


def _kept(path: Path) -> str | None:
    """A password generated by an earlier run, if ``path`` holds one (never read through a link)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise FleetError(f"{path}: cannot read the kept password ({exc.strerror}); remove it to generate a new "
                         "one") from None
    with os.fdopen(fd, encoding="utf-8") as f:
        text = f.read().rstrip("\r\n")
    return text or None


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.is_symlink() or not path.is_dir():
        raise FleetError(f"{path}: is not a folder (a link?); remove it and run again")
    os.chmod(path, 0o700)


def _replace(path: Path, text: str, mode: int) -> None:
    """Write ``text`` to a new file beside ``path`` (created with ``mode``, never through a link), then rename."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # the umask may have taken bits off
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


__all__ = ["ACL", "PASSWD", "PASSWORDS", "Account", "Written", "acl_text", "mosquitto_hash", "read_devices",
           "write_credentials"]
