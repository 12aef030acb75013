"""Settings of the device process: one frozen value per command, each part validated by the dataclass that owns it.

A command's settings are a table of keys (``[run]`` for ``edgeml-runtime
run``). Every key can be given as a flag (``--window-rows``), in a TOML config
file under the command's table (``window_rows = 500``), or as an environment
variable (``EDGEML_WINDOW_ROWS=500``); a flag wins over the file, the file over
the environment, the environment over the default. Each key fills one field of
one dataclass, the one that owns and checks it: ``DeviceTopics`` (fleet and
device id), ``MqttSettings``, ``DriftSettings``, ``OutboxSettings`` and
:class:`RunSettings`. A value they refuse raises a
:class:`~edgeml_runtime.errors.SettingsError` that names the key, where it
came from, what is allowed and the fix. Unknown keys and tables in the file
are errors that name the file and the key.

A config file that holds ``mqtt_password`` and that every user of the
machine may read is refused (:func:`~edgeml_runtime.tomlfile.exposure`); so
is a ``mqtt_password_file`` that every user may read. Without either setting
(or ``EDGEML_MQTT_PASSWORD``), a systemd credential ``mqtt_password``
(``LoadCredential=mqtt_password:/etc/edgeml/mqtt_password``, found in
``$CREDENTIALS_DIRECTORY``) is the password file.

Commands register their table in :data:`TABLES` (:func:`register_table`): the
``[run]``, ``[serve]`` and ``[update]`` tables are declared here, each with
its own composite dataclass; how they are read is :mod:`.settingtables`.

Example:

>>> env = {"EDGEML_FLEET": "plant-a", "EDGEML_BROKER": "mqtt://gw:1883", "EDGEML_WINDOW_ROWS": "50"}
>>> s = resolve_settings({"device_id": "pi-07", "window_rows": 20}, environ=env)
>>> s.device.device_id, s.device.fleet, s.drift.window_rows, s.mqtt.endpoint
('pi-07', 'plant-a', 20, ('gw', 1883, False))
>>> resolve_settings({"psi_moderate": 0.0}, environ=dict(env, EDGEML_DEVICE_ID="pi-07"))
Traceback (most recent call last):
...
edgeml_runtime.errors.SettingsError: psi_moderate = 0.0 (from flag --psi-moderate): must satisfy 0 < psi_moderate \
<= psi_significant, with psi_significant = 0.25 (from the default); the usual thresholds are 0.1 (moderate) and 0.25 \
(significant)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .drift import DriftSettings
from .errors import SettingsError
from .mqtt import MqttSettings
from .outbox import OutboxSettings
from .parsing import ReadLimits
from .protocol.topics import DeviceTopics
from .records import FORMATS, guess_format
from .serve.options import ServeOptions
from .settingtables import (  # noqa: F401 - the machinery, imported from here by the commands and the tests
    CONFIG_ENV,
    CREDENTIALS,
    PASSWORD_CREDENTIAL,
    SECRET_KEYS,
    TABLES,
    Key,
    Section,
    Table,
    default_text,
    env_name,
    flag_name,
    read_config,
    register_table,
    resolve_settings,
)
from .update.options import UpdateOptions

PRECISIONS = ("fp32", "fp16", "int8")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class RunSettings:
    """The ``run`` command's own keys: where records come from and go, which artifact, how much to log.

    ``format`` left out is taken from the input's name as ``score`` takes it
    (``.csv`` is CSV, ``.jsonl``/``.ndjson``/``.json`` JSON Lines; stdin and
    an input topic are JSON Lines). ``drift_output`` also writes every drift
    window as a JSON line to a file (appended) or stdout (``-``); with it, a
    broker is optional. ``limits`` bound each input row (:class:`~.parsing.ReadLimits`).
    """

    input: str = "-"
    format: str | None = None
    follow: bool = False
    input_topic: str | None = None
    output: str | None = None
    drift_output: str | None = None
    publish_predictions: bool = False
    precision: str | None = None
    log_level: str = "info"
    limits: ReadLimits = ReadLimits()

    def __post_init__(self):
        for key, allowed in (("format", (None, *FORMATS)), ("precision", (None, *PRECISIONS)),
                             ("log_level", LOG_LEVELS)):
            if getattr(self, key) not in allowed:
                names = ", ".join(a for a in allowed if a is not None)
                raise SettingsError(key=key, value=getattr(self, key), allowed=f"must be one of {names}",
                                    fix=f"give one of {names}")
        if self.input_topic is not None and (not self.input_topic.strip() or "#" in self.input_topic[:-1]):
            raise SettingsError(key="input_topic", value=self.input_topic, allowed="is not an MQTT topic",
                                fix="give a topic such as sensors/pi-07/readings")
        source = "-" if self.input_topic else self.input
        object.__setattr__(self, "format", guess_format(source, self.format, stdin="jsonl"))
        if self.output == "-" and self.drift_output == "-":
            raise SettingsError(key="drift_output", value="-", related={"output": "-"},
                                allowed="cannot share stdout with the scored records",
                                fix="write one of them to a file")


@dataclass(frozen=True)
class AgentSettings:
    """Everything a device process (``edgeml-runtime run``) needs: the ``[run]`` table, one part per owner.

    ``mqtt`` is None when no broker is given: then drift windows go to
    ``run.drift_output`` only, and nothing else may need the broker.
    """

    device: DeviceTopics
    mqtt: MqttSettings | None
    drift: DriftSettings
    outbox: OutboxSettings
    run: RunSettings
    update: UpdateOptions | None = None  #: None: no updates over the air (no ``update_root_key``)

    def __post_init__(self):
        if self.mqtt is not None:
            return
        if self.run.drift_output is None:
            raise SettingsError(f"no broker given: pass {flag_name('broker')}, set {env_name('broker')}, or put "
                                "broker in the [run] table of the config file; to run without a broker, write the "
                                f"drift windows to a file with {flag_name('drift_output')} FILE (- for stdout)")
        for key in ("input_topic", "publish_predictions"):
            if getattr(self.run, key):
                raise SettingsError(f"{key} = {getattr(self.run, key)!r} needs a broker: pass "
                                    f"{flag_name('broker')} (or set {env_name('broker')})")


#: The ``update_*`` keys of ``run`` and ``serve`` (:mod:`.update.options`).
UPDATE_KEYS = Section(UpdateOptions, (
    Key("update_root_key", str, "turn on updates over the air: the root public key (PEM) this device trusts, from "
        "edgeml keys init", "root_key"),
    Key("update_dir", str, "where the update agent keeps its trust state and bundle slots (default: beside the "
        "outbox)", "folder"),
    Key("update_server", str, "the fleet controller's HTTP server the bundles are fetched from, "
        "http(s)://host:port", "server"),
    Key("update_token_file", str, "file holding the controller's bearer token (not readable by every user)",
        "token_file"),
    Key("update_no_clock", bool, "this board has no real-time clock: judge a release's expiry against the newest "
        "signed time seen", "no_clock"),
    Key("update_max_rollbacks", int, "automatic rollbacks after which releases wait for one installed by hand",
        "max_rollbacks"),
), optional=True)

RUN = register_table(Table("run", AgentSettings, {
    "device": Section(DeviceTopics, (
        Key("device_id", str, "this device's id, unique in the fleet (MQTT topic level)"),
        Key("fleet", str, "fleet name (MQTT topic level)"),
    )),
    "mqtt": Section(MqttSettings, (
        Key("broker", str, "MQTT broker, mqtt://host:1883 or mqtts://host:8883 for TLS", "url"),
        Key("mqtt_username", str, "MQTT user name", "username"),
        Key("mqtt_password", str, "MQTT password; as a flag it shows in ps: prefer --mqtt-password-file, a systemd "
            "credential mqtt_password, or the environment variable", "password"),
        Key("mqtt_password_file", str, "file holding the MQTT password (not readable by every user)",
            "password_file"),
        Key("mqtt_ca_file", str, "CA certificate (PEM) that signed the broker's certificate", "ca_file"),
        Key("mqtt_cert_file", str, "client certificate (PEM), for brokers that authenticate devices by certificate",
            "cert_file"),
        Key("mqtt_key_file", str, "client private key (PEM)", "key_file"),
        Key("mqtt_protocol", str, "MQTT protocol version: 5 or 3.1.1", "protocol"),
        Key("input_max_bytes", int, "largest --input-topic message read; larger ones are refused and kept in the "
            "dead-letter file", "input_max_bytes"),
    ), optional=True),
    "run": Section(RunSettings, (
        Key("input", str, "records to score: a file, or - for stdin"),
        Key("format", str, "input format: jsonl or csv (default: from the file name as score takes it; stdin "
            "and --input-topic are jsonl)"),
        Key("follow", bool, "keep reading a file as it grows (like tail -f)"),
        Key("input_topic", str, "read records from this MQTT topic instead of --input"),
        Key("output", str, "also write scored records here (a file, or - for stdout)"),
        Key("drift_output", str, "also write each drift window as a JSON line here (a file, appended, or - for "
            "stdout); with it no broker is needed"),
        Key("publish_predictions", bool, "publish each prediction to edgeml/<fleet>/<device>/predictions (QoS 0)"),
        Key("precision", str, "run the bundle's artifact of this precision: fp32, fp16 or int8 (default: the best "
            "here)"),
        Key("log_level", str, "debug, info, warning or error"),
        Key("max_line_bytes", int, "an input line longer than this is a row error", "limits.max_line_bytes"),
        Key("max_value_chars", int, "an input text value longer than this is a row error",
            "limits.max_value_chars"),
        Key("max_depth", int, "input JSON nested deeper than this is a row error", "limits.max_depth"),
    )),
    "drift": Section(DriftSettings, (
        Key("window_rows", int, "a drift window closes after this many rows..."),
        Key("window_seconds", float, "...or after this many seconds, whichever comes first"),
        Key("alpha", float, "significance level of a window's tests: at most this share of windows without drift "
            "get a status other than ok (each column is tested at alpha / tests)", "rule.alpha"),
        Key("psi_moderate", float, "PSI at or above which a column whose test rejects has moderate drift",
            "rule.psi_moderate"),
        Key("psi_significant", float, "PSI at or above which a column whose test rejects has significant drift",
            "rule.psi_significant"),
        Key("drifted_share", float, "the window has drifted when at least this share of its columns are significant",
            "rule.drifted_share"),
        Key("min_rows", int, "windows with fewer scored rows get statistics but no verdict", "rule.min_rows"),
    )),
    "outbox": Section(OutboxSettings, (
        Key("outbox", str, "SQLite file that keeps drift windows until the broker acknowledges them", "path"),
        Key("outbox_max_bytes", int, "outbox bound; when full the oldest windows are dropped (and counted)",
            "max_bytes"),
        Key("dead_letter_max_bytes", int, "bound of the dead-letter files (refused input, beside the outbox)",
            "dead_letter_max_bytes"),
    )),
    "update": UPDATE_KEYS,
}))


@dataclass(frozen=True)
class ServeSettings:
    """Everything ``edgeml-runtime serve`` needs: the ``[serve]`` table. ``mqtt`` None: no broker (drift windows go
    to ``serve.drift_output``, if set); ``device`` is needed with a broker only."""

    device: DeviceTopics | None
    mqtt: MqttSettings | None
    drift: DriftSettings
    outbox: OutboxSettings
    serve: ServeOptions
    update: UpdateOptions | None = None

    def __post_init__(self):
        if self.update is not None and self.device is None:
            raise SettingsError(f"updates need this device's id and fleet: pass {flag_name('device_id')} and "
                                f"{flag_name('fleet')} (or set {env_name('device_id')} and {env_name('fleet')})")
        if self.mqtt is not None and self.device is None:
            raise SettingsError(f"a broker needs this device's id and fleet: pass {flag_name('device_id')} and "
                                f"{flag_name('fleet')} (or set {env_name('device_id')} and {env_name('fleet')})")


SERVE = register_table(Table("serve", ServeSettings, {
    "device": Section(DeviceTopics, RUN.sections["device"].keys, optional=True),
    "mqtt": Section(MqttSettings, tuple(k for k in RUN.sections["mqtt"].keys if k.name != "input_max_bytes"),
                    optional=True),
    "drift": RUN.sections["drift"],
    "outbox": RUN.sections["outbox"],
    "serve": Section(ServeOptions, (
        Key("host", str, "address to listen on: 127.0.0.1 (this machine only) or 0.0.0.0 (every network)"),
        Key("port", int, "TCP port (0: any free port, logged at start)"),
        Key("max_body_bytes", int, "a request body over this is refused (413)"),
        Key("max_in_flight", int, "inference requests admitted at once; more are answered 503 with Retry-After"),
        Key("request_timeout", float, "seconds a request may take to arrive and to be scored (408, 503 beyond)"),
        Key("keep_alive_seconds", float, "an idle connection is closed after this many seconds"),
        Key("grace_seconds", float, "at shutdown, seconds given to requests in flight to finish"),
        Key("workers", int, "threads that score requests at once"),
        Key("threads", int, "inference threads of the engine, per scoring thread"),
        Key("tls_cert_file", str, "serve HTTPS with this certificate (PEM; with --tls-key-file)"),
        Key("tls_key_file", str, "the certificate's private key (PEM)"),
        Key("token", str, "bearer token every request but the health checks must carry; as a flag it shows in ps: "
            "prefer --token-file or the environment variable"),
        Key("token_file", str, "file holding the bearer token (not readable by every user)"),
        Key("drift_output", str, "also write each drift window as a JSON line here (a file, appended, or - for "
            "stdout)"),
        Key("precision", str, "serve the bundle's artifact of this precision: fp32, fp16 or int8 (default: the best "
            "here)"),
        Key("log_level", str, "debug, info, warning or error"),
    )),
    "update": UPDATE_KEYS,
}))


@dataclass(frozen=True)
class UpdateCommandSettings:
    """``edgeml-runtime update FOLDER``: who the device is and where its update state lives; read from the flags,
    the environment and the ``[run]`` (or ``[serve]``) table of the config file the device process uses."""

    device: DeviceTopics
    update: UpdateOptions


UPDATE = register_table(Table("update", UpdateCommandSettings, {
    "device": RUN.sections["device"],
    "update": dataclasses.replace(UPDATE_KEYS, optional=False),
}))
