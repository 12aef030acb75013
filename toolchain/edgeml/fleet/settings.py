"""Settings of the fleet controller (``edgeml fleet run``): flags, ``EDGEML_FLEET_*``, ``fleet.toml``, defaults.

Each setting is one :class:`Key` of :data:`KEYS`: the ``fleet.toml`` table it
lives in, its name there, its flag and its environment variable (always
``EDGEML_FLEET_`` + the flag's name, so it never collides with the runtime's
``EDGEML_*``). A flag wins over the environment, the environment over
``fleet.toml``, ``fleet.toml`` over the default (as for the store's URL,
:func:`edgeml.fleet.database.store_url`, which resolves ``[store] url``).

``fleet.toml`` (``--config``) has four tables, each optional::

    [broker]                  # how to reach the broker: the runtime's own MqttSettings checks it
    url = "mqtts://broker.plant.local:8883"
    username = "controller"
    password_file = "/etc/edgeml/controller.password"   # or password = "..." (then chmod o-rwx fleet.toml)
    ca_file = "/etc/edgeml/ca.crt"
    client_id = "edgeml-controller-1"   # stable: the broker keeps this client's session and queue under it
    group = "controllers"               # share the load: $share/controllers/edgeml/...

    [store]
    url = "sqlite:////var/lib/edgeml/fleet.db"

    [controller]
    fleets = ["plant-a"]      # default: every fleet (edgeml/+/...)
    batch_size = 500          # messages committed in one transaction, then acknowledged
    batch_wait = 0.2          # seconds a batch waits to fill
    lease_seconds = 30        # the judge lease; renewed at every judgement
    receive_maximum = 2000    # unacknowledged messages in flight to us (default: batch_size x 4 x workers)
    workers = 2               # processes decoding and committing batches (default 1: the controller's own)
    releases = "/var/lib/edgeml/releases"   # the release folders (edgeml release --releases): served, announced
    http = "0.0.0.0:8080"     # serve them over HTTP (default: no server); off loopback it needs a token:
    http_token_file = "/etc/edgeml/http.token"   # devices send it as Authorization: Bearer
    dashboard = "0.0.0.0:8080"   # the dashboard on that server (the same address as http, if both are given)
    rollout_every = 5         # seconds between advances of the running rollouts; 0: never

    [policy]                  # read by edgeml.fleet.policy.Policy.from_table
    judge_every = 10

Unknown tables and keys are refused naming the file and the key; a password
in a ``fleet.toml`` every user may read is refused, as the runtime refuses
its own config file. Errors are :class:`~edgeml.errors.FleetError`.

Example:

>>> s = resolve({"broker": "mqtt://127.0.0.1:1883", "judge_every": 0.0}, environ={"EDGEML_FLEET_GROUP": "ctl"})
>>> s.broker.endpoint, s.group, s.batch_size, s.judge_every, s.sources["group"]
(('127.0.0.1', 1883, False), 'ctl', 500, 0.0, 'environment EDGEML_FLEET_GROUP')
>>> resolve({"batch_size": 0}, environ={})
Traceback (most recent call last):
...
edgeml.errors.FleetError: batch_size = 0 (from flag --batch-size): must be a whole number from 1 to 65535; \
the default is 500
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edgeml.errors import ConfigError, FleetError
from edgeml_runtime.errors import SettingsError
from edgeml_runtime.mqtt import MqttSettings
from edgeml_runtime.tomlfile import exposure, read_toml

from .setting_values import check, parse, served_addresses, token
from .triggers import DECISION_KINDS, check_options

ENV_PREFIX = "EDGEML_FLEET_"
TABLES = ("broker", "store", "controller", "policy", "trigger", "retrain", "promotion")
#: How long the broker keeps the controller's session (and the windows queued for it) while it is away.
SESSION_EXPIRY = 7 * 24 * 3600
#: The device topics the controller hears (the last level), per fleet.
HEARS = ("birth", "drift", "death", "update")


@dataclass(frozen=True)
class Key:
    """One setting: ``name`` in ``[table]`` of fleet.toml, flag ``--<flag>``, variable ``EDGEML_FLEET_<FLAG>``."""

    name: str
    table: str
    kind: type
    default: object = None
    flag: str = ""
    low: float | None = None
    high: float | None = None
    fix: str = ""
    key: str = ""  #: its name in :data:`KEYS` and the flags' dict, where not ``name``
    duration: bool = False  #: seconds, or text such as "30s", "10m", "1h", "1d"

    @property
    def flag_name(self) -> str:
        return "--" + (self.flag or self.name).replace("_", "-")

    @property
    def env_name(self) -> str:
        return ENV_PREFIX + (self.flag or self.name).upper()


_BROKER_FIELDS = ("username", "password", "password_file", "ca_file", "cert_file", "key_file", "protocol",
                  "keepalive", "reconnect_min", "reconnect_max")
KEYS: dict[str, Key] = {k.key or k.name: k for k in (
    Key("url", "broker", str, "mqtt://127.0.0.1:1883", flag="broker", fix="e.g. mqtts://broker.plant.local:8883",
        key="broker"),
    Key("username", "broker", str), Key("password", "broker", str),  # no flag: command lines show in ps
    Key("password_file", "broker", str), Key("ca_file", "broker", str), Key("cert_file", "broker", str),
    Key("key_file", "broker", str), Key("protocol", "broker", str, "5"),
    Key("keepalive", "broker", int, 30, low=5, high=65535),
    Key("reconnect_min", "broker", float, 1.0, low=0.01, high=3600),
    Key("reconnect_max", "broker", float, 60.0, low=0.01, high=3600),
    Key("client_id", "broker", str, fix="a stable id of this controller: its session on the broker is kept by it"),
    Key("group", "broker", str, fix="a name such as controllers: every controller of the group shares the load"),
    Key("receive_maximum", "broker", int, None, low=1, high=65535,
        fix="the default is 4 batches per committing process (2000 for batches of 500 and 1 worker)"),
    Key("session_expiry", "broker", int, SESSION_EXPIRY, low=0, high=2**32 - 1, fix="the default is 604800 (7 days)"),
    Key("fleets", "controller", list, (), flag="fleet", fix="fleet names, e.g. fleets = [\"plant-a\"]"),
    Key("batch_size", "controller", int, 500, low=1, high=65535, fix="the default is 500"),
    Key("batch_wait", "controller", float, 0.2, low=0.0, high=60, fix="the default is 0.2"),
    Key("lease_seconds", "controller", float, 30.0, low=1, high=86400, fix="the default is 30"),
    Key("holder", "controller", str, fix="a name unique to this controller (default: its client id)"),
    Key("workers", "controller", int, 1, low=1, high=64,
        fix="processes that decode and commit batches; the default is 1 (the controller's own)"),
    Key("releases", "controller", str, "releases", fix="the folder edgeml release writes the release folders to"),
    Key("http", "controller", str, None, fix="HOST:PORT, e.g. 127.0.0.1:8080, 0.0.0.0:8080 (with a token) or "
        "[::1]:8080; port 0: any free one"),
    Key("dashboard", "controller", str, None, fix="HOST:PORT, e.g. 127.0.0.1:8080 (the --http address, if that "
        "is given too)"),
    Key("http_token_file", "controller", str, fix="a file holding the bearer token devices off loopback send"),
    Key("rollout_every", "controller", float, 5.0, low=0, high=86400, duration=True,
        fix="seconds between advances of the running rollouts; 0 turns them off; the default is 5"),
    Key("judge_every", "policy", float, None, low=0, high=86400,
        fix="seconds between judgements; 0 turns judging off"),
    Key("name", "trigger", str, None, flag="trigger", key="trigger",
        fix="a registered trigger: build, command or webhook (none: retraining off)"),
    Key("on", "trigger", list, DECISION_KINDS, flag="retrain_on", key="retrain_on",
        fix="the decision kinds that fire the trigger, e.g. on = [\"drift\", \"performance\"] (on = [] for none)"),
    Key("every", "trigger", float, None, flag="retrain_every", key="retrain_every", low=1, high=366 * 86400,
        duration=True, fix="a retrain at least this often, e.g. every = \"1d\" (default: no schedule)"),
    Key("timeout", "trigger", float, 3600.0, flag="retrain_timeout", key="retrain_timeout", low=1, high=7 * 86400,
        duration=True, fix="the default is \"1h\""),
    Key("attempts", "trigger", int, 2, flag="retrain_attempts", key="retrain_attempts", low=1, high=100,
        fix="tries of one request, the first included; the default is 2"),
    Key("retry_after", "trigger", float, 600.0, flag="retry_after", key="retry_after", low=0, high=7 * 86400,
        duration=True, fix="the default is \"10m\""),
)}
#: Keys of ``[broker]`` whose value is a secret: a fleet.toml holding one must not be readable by every user.
SECRET_KEYS = ("password",)


@dataclass(frozen=True)
class TriggerSettings:
    """``[trigger]``, ``[retrain]`` and ``[promotion]``, checked: how the controller retrains (``name`` None: never).

    ``options`` are the trigger's own keys of ``[trigger]``; ``build`` the
    ``[retrain]`` table (the keys of edgeml.toml's ``[build]``, ``data``
    resolved against fleet.toml's folder); ``promotion`` the ``[promotion]``
    table, for :class:`edgeml.fleet.challenger.Promotion`.
    """

    name: str | None = None
    options: dict = field(default_factory=dict)
    on: tuple[str, ...] = DECISION_KINDS
    every: float | None = None
    timeout: float = 3600.0
    attempts: int = 2
    retry_after: float = 600.0
    build: dict = field(default_factory=dict)
    promotion: dict = field(default_factory=dict)
    source: str = "fleet.toml"


@dataclass(frozen=True)
class ControllerSettings:
    """Everything ``edgeml fleet run`` needs, checked; ``sources`` says where each given value came from."""

    broker: MqttSettings
    store: str
    client_id: str
    holder: str
    group: str | None = None
    fleets: tuple[str, ...] = ()
    batch_size: int = 500
    batch_wait: float = 0.2
    lease_seconds: float = 30.0
    workers: int = 1
    receive_maximum: int = 2000
    session_expiry: int = SESSION_EXPIRY
    judge_every: float | None = None  #: None: the policy's; 0: judging off
    releases: str = "releases"  #: the release folders (served with ``http``)
    http: tuple[str, int] | None = None  #: where the release server listens; None: no server
    http_token: str | None = None  #: the bearer token clients off loopback send (from ``http_token_file``)
    dashboard: tuple[str, int] | None = None  #: where the dashboard is served (the HTTP server's address); None: not
    rollout_every: float = 5.0  #: seconds between advances of the running rollouts; 0: never
    policy: dict = field(default_factory=dict)  #: the ``[policy]`` table (for Policy.from_table)
    retraining: TriggerSettings = field(default_factory=lambda: TriggerSettings())
    config: str | None = None
    sources: dict = field(default_factory=dict, compare=False)

    @property
    def filters(self) -> tuple[str, ...]:
        """What the controller subscribes to: births, drift windows, deaths and update steps (never predictions,
        nor its own)."""
        prefix = f"$share/{self.group}/" if self.group else ""
        return tuple(f"{prefix}edgeml/{fleet}/+/{kind}" for fleet in (self.fleets or ("+",)) for kind in HEARS)

    @property
    def served(self) -> tuple[str, int] | None:
        """Where the controller's HTTP server listens: ``http``, else ``dashboard`` (the same when both are given),
        else None (no server)."""
        return self.http or self.dashboard


def resolve(flags: Mapping[str, object], config: str | os.PathLike | None = None,
            environ: Mapping[str, str] | None = None) -> ControllerSettings:
    """The controller's settings from ``flags`` (key → value, None for not given), the environment and ``config``."""
    environ = os.environ if environ is None else environ
    doc = _read(config) if config is not None else {}
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    for key in KEYS:
        values[key], where = _pick(key, flags.get(key), doc, config, environ)
        if where is not None:
            sources[key] = where
    try:
        broker = MqttSettings(values["broker"], client_id=values["client_id"],
                              **{k: values[k] for k in _BROKER_FIELDS})
        broker.endpoint  # noqa: B018  (checks the URL now)
    except SettingsError as exc:
        name = "broker" if exc.key == "url" else exc.key
        where = sources.get(name, "the default")
        raise FleetError(f"{exc} (from {where})" if exc.key else str(exc)) from None
    client_id = values["client_id"] or f"edgeml-controller-{socket.gethostname()}"
    policy = dict(doc.get("policy", {}))
    retraining = _retraining(values, doc, config, sources)
    http, dashboard = served_addresses(values["http"], values["dashboard"], sources)
    return ControllerSettings(
        broker=broker, store=_store_url(flags.get("store"), config, environ), client_id=client_id,
        holder=values["holder"] or client_id, group=values["group"], fleets=tuple(values["fleets"]),
        batch_size=values["batch_size"], batch_wait=values["batch_wait"], lease_seconds=values["lease_seconds"],
        workers=values["workers"],
        receive_maximum=values["receive_maximum"] or default_receive_maximum(values["batch_size"], values["workers"]),
        session_expiry=values["session_expiry"],
        judge_every=values["judge_every"], policy=policy, retraining=retraining,
        releases=values["releases"], http=http, dashboard=dashboard,
        http_token=token(values["http_token_file"], sources), rollout_every=values["rollout_every"],
        config=None if config is None else str(config),
        sources=sources)


def one(key: str, flag=None, config: str | os.PathLike | None = None,
        environ: Mapping[str, str] | None = None):
    """One setting alone, as :func:`resolve` takes it (flag, ``EDGEML_FLEET_*``, ``config``, default): what
    ``edgeml release --releases`` and ``edgeml rollout start`` default to.

    >>> one("releases", environ={}), one("releases", environ={"EDGEML_FLEET_RELEASES": "/srv/releases"})
    ('releases', '/srv/releases')
    """
    doc = _read(config) if config is not None else {}
    return _pick(key, flag, doc, config, os.environ if environ is None else environ)[0]


def _pick(key: str, flag, doc: dict, config, environ: Mapping[str, str]) -> tuple[object, str | None]:
    """The setting ``key``, checked, and where it came from: the flag, else its variable, else fleet.toml's
    ``doc``, else (None: from nowhere) its default."""
    spec = KEYS[key]
    table = doc.get(spec.table, {})
    if flag not in (None, ()):
        where, value = f"flag {spec.flag_name}", flag
    elif environ.get(spec.env_name):
        where = f"environment {spec.env_name}"
        value = parse(spec, key, environ[spec.env_name], where)
    elif spec.name in table:
        where, value = f"{config} [{spec.table}] {spec.name}", table[spec.name]
    else:
        return spec.default, None
    return check(spec, key, value, where), where


def default_receive_maximum(batch_size: int, workers: int) -> int:
    """Unacknowledged messages the broker may send ahead, unless set: 4 batches per committing process, so that
    while batches commit the next ones fill (at most 65535, MQTT's limit).

    >>> default_receive_maximum(500, 1), default_receive_maximum(500, 2), default_receive_maximum(5000, 8)
    (2000, 4000, 65535)
    """
    return min(65535, batch_size * 4 * workers)


def _read(config) -> dict:
    doc = read_toml(config, FleetError, "fleet configuration")
    unknown = [t for t in doc if t not in TABLES]
    if unknown:
        raise FleetError(f"{config}: [{unknown[0]}] is not a table of fleet.toml; the tables are "
                         f"{', '.join(f'[{t}]' for t in TABLES)}")
    for table, body in doc.items():
        if not isinstance(body, dict):
            raise FleetError(f"{config}: {table} = {body!r:.60} must be a table ([{table}])")
        if table in ("store", "policy", "retrain", "promotion"):
            continue  # [store]: store_url checks it; [policy]: Policy.from_table does; the others: _retraining
        known = [k.name for k in KEYS.values() if k.table == table]
        if table == "trigger":
            continue  # its keys and the chosen trigger's options: _retraining
        bad = [k for k in body if k not in known]
        if bad:
            raise FleetError(f"{config}: [{table}] {bad[0]} is not a key of this table; its keys are "
                             f"{', '.join(known)}")
    broker = doc.get("broker", {})
    if any(k in broker for k in SECRET_KEYS) and exposure(config):
        raise FleetError(f"{config} holds the broker's password and {exposure(config)}; or use password_file, "
                         f"or ${KEYS['password'].env_name}")
    return doc


def _retraining(values: dict, doc: dict, config, sources: dict) -> TriggerSettings:
    """[trigger] (its keys, the chosen trigger's options), [retrain] and [promotion], checked."""
    source = str(config) if config is not None else "fleet.toml"
    table = doc.get("trigger", {})
    ours = {k.name for k in KEYS.values() if k.table == "trigger"}
    name = values["trigger"]
    options = {k: v for k, v in table.items() if k not in ours}
    if name is None and options:
        raise FleetError(f"{source}: [trigger] {next(iter(options))} is not a key of [trigger] without a trigger "
                         f"name; its keys are {', '.join(sorted(ours))}, and the chosen trigger's options")
    if name is not None:
        options = check_options(name, options, source)
    for kind in values["retrain_on"]:
        if kind not in DECISION_KINDS:
            where = sources.get("retrain_on", "the default")
            raise FleetError(f"[trigger] on = {list(values['retrain_on'])} (from {where}): {kind!r} is not a decision "
                             f"kind that can fire a retrain; use {' or '.join(DECISION_KINDS)}")
    build = _build_table(doc.get("retrain", {}), config, name)
    promotion = doc.get("promotion", {})
    if promotion:
        try:
            from .challenger import Promotion
        except ImportError:
            pass  # checked for being a table only, until the challenger module is there
        else:
            Promotion.from_table(promotion, source)
    return TriggerSettings(name=name, options=options, on=tuple(values["retrain_on"]), every=values["retrain_every"],
                           timeout=values["retrain_timeout"], attempts=values["retrain_attempts"],
                           retry_after=values["retry_after"], build=build, promotion=dict(promotion), source=source)


def _build_table(table: dict, config, name: str | None) -> dict:
    """[retrain]: the keys of edgeml.toml's [build], checked by edgeml.config's own checks, so a typo is refused
    at start; ``data`` (a file) resolved against fleet.toml's folder."""
    from edgeml import config as build_config

    path = Path(config) if config is not None else Path("fleet.toml")
    if name == "build" and "data" not in table:
        raise FleetError(f"{path}: [retrain] data is missing: the build trigger reads its rows afresh from it; e.g. "
                         "data = \"/var/lib/edgeml/labelled.csv\"")
    out = dict(table)
    try:
        build_config.read_build_table(path, "retrain", table)
    except ConfigError as exc:
        raise FleetError(str(exc).replace("the --", "[retrain] in fleet.toml, not the --", 1)) from None
    data = table.get("data")
    if isinstance(data, str) and "://" not in data and not data.startswith("sqlite:") and not Path(data).is_absolute():
        out["data"] = str(path.parent / data)
    return out


def _store_url(*args):
    """:func:`.database.store_url`, imported when settings are resolved: the module needs SQLAlchemy, and the
    ``edgeml`` command builds its options from :data:`KEYS` on every start."""
    from .database import store_url

    return store_url(*args)
