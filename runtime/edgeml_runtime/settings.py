"""Settings for the long-running ``edgeml-runtime run``: flags, then a config file, then the environment.

Every setting has one key (``window_rows``). It can be given as a flag
(``--window-rows``), in a TOML config file under ``[run]`` (``window_rows =
500``), or as an environment variable (``EDGEML_WINDOW_ROWS=500``); a flag
wins over the file, the file over the environment, the environment over the
default. Unknown keys in the file are errors that name the file and the key.

Example:

>>> env = {"EDGEML_FLEET": "plant-a", "EDGEML_BROKER": "mqtt://gw:1883", "EDGEML_WINDOW_ROWS": "50"}
>>> s = resolve_settings({"device_id": "pi-07", "window_rows": 20}, environ=env)
>>> s["device_id"], s["fleet"], s["window_rows"]
('pi-07', 'plant-a', 20)
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping
from pathlib import Path

from .errors import EdgeMLError


class SettingsError(EdgeMLError):
    """A runtime setting is unknown, missing or has a value of the wrong type."""


#: key -> (type, default, help). The flag is --key-with-dashes; the variable EDGEML_KEY.
SETTINGS: dict[str, tuple[type, object, str]] = {
    "device_id": (str, None, "this device's id, unique in the fleet (MQTT topic level)"),
    "fleet": (str, None, "fleet name (MQTT topic level)"),
    "broker": (str, None, "MQTT broker, mqtt://host:1883 or mqtts://host:8883 for TLS"),
    "mqtt_username": (str, None, "MQTT user name"),
    "mqtt_password": (str, None, "MQTT password (prefer the environment variable over a flag)"),
    "mqtt_ca_file": (str, None, "CA certificate (PEM) that signed the broker's certificate"),
    "mqtt_cert_file": (str, None, "client certificate (PEM), for brokers that authenticate devices by certificate"),
    "mqtt_key_file": (str, None, "client private key (PEM)"),
    "mqtt_protocol": (str, "5", "MQTT protocol version: 5 or 3.1.1"),
    "input": (str, "-", "records to score: a file, or - for stdin"),
    "format": (str, "jsonl", "input format: jsonl or csv"),
    "follow": (bool, False, "keep reading a file as it grows (like tail -f)"),
    "input_topic": (str, None, "read records from this MQTT topic instead of --input"),
    "output": (str, None, "also write scored records here (a file, or - for stdout)"),
    "publish_predictions": (bool, False, "publish each prediction to edgeml/<fleet>/<device>/predictions (QoS 0)"),
    "window_rows": (int, 1000, "a drift window closes after this many rows..."),
    "window_seconds": (float, 300.0, "...or after this many seconds, whichever comes first"),
    "psi_moderate": (float, 0.1, "PSI at or above which a column has moderate drift"),
    "psi_significant": (float, 0.25, "PSI at or above which a column has significant drift"),
    "outbox": (str, None, "SQLite file that keeps drift windows until the broker acknowledges them"),
    "outbox_max_bytes": (int, 16 * 2**20, "outbox bound; when full the oldest windows are dropped (and counted)"),
    "precision": (str, None,
                  "run the bundle's artifact of this precision: fp32, fp16 or int8 (default: the best here)"),
    "log_level": (str, "info", "debug, info, warning or error"),
}

CONFIG_ENV = "EDGEML_RUNTIME_CONFIG"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_name(key: str) -> str:
    return "EDGEML_" + key.upper()


def flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def read_config(path: Path) -> dict:
    import tomllib

    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise SettingsError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path} is not valid TOML: {exc}") from None
    other = [k for k in doc if k != "run"]
    if other:
        raise SettingsError(f"{path}: unknown table or key {other[0]!r}; settings go in a [run] table")
    out = {}
    for key, value in doc.get("run", {}).items():
        out[key] = _check(key, value, f"{path}: [run] {key}")
    return out


def _check(key: str, value, where: str):
    if key not in SETTINGS:
        near = difflib.get_close_matches(key, SETTINGS, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise SettingsError(f"{where}: unknown setting {key!r}{hint}")
    kind = SETTINGS[key][0]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise SettingsError(f"{where} = {value!r} has the wrong type; expected {kind.__name__}")
    return value


def _from_env(environ: Mapping[str, str]) -> dict:
    out = {}
    for key, (kind, _, _) in SETTINGS.items():
        name = env_name(key)
        if name not in environ:
            continue
        raw = environ[name]
        try:
            if kind is bool:
                if raw.strip().lower() not in _TRUE | _FALSE:
                    raise ValueError
                value = raw.strip().lower() in _TRUE
            else:
                value = kind(raw)
        except ValueError:
            raise SettingsError(f"environment variable {name}={raw!r} is not a valid {kind.__name__}") from None
        out[key] = value
    return out


def resolve_settings(flags: Mapping, config: str | os.PathLike | None = None,
                     environ: Mapping[str, str] | None = None) -> dict:
    """Defaults < environment < config file < flags. ``flags`` holds only what was given (None = not given)."""
    environ = os.environ if environ is None else environ
    settings = {key: default for key, (_, default, _) in SETTINGS.items()}
    settings.update(_from_env(environ))
    path = config or environ.get(CONFIG_ENV)
    if path:
        settings.update(read_config(Path(path)))
    for key, value in flags.items():
        if value is not None:
            settings[key] = _check(key, value, flag_name(key))
    _validate(settings)
    return settings


def _validate(s: dict) -> None:
    for key in ("device_id", "fleet", "broker"):
        if not s[key]:
            raise SettingsError(
                f"no {key.replace('_', ' ')} given: pass {flag_name(key)}, set {env_name(key)}, "
                f"or put {key} in the [run] table of the config file"
            )
    for key in ("device_id", "fleet"):
        if any(c in s[key] for c in "/+#") or not s[key].strip():
            raise SettingsError(f"{key} {s[key]!r} cannot contain '/', '+' or '#' (it is an MQTT topic level)")
    if not s["broker"].startswith(("mqtt://", "mqtts://")):
        raise SettingsError(f"broker {s['broker']!r} must look like mqtt://host:1883 or mqtts://host:8883")
    if s["mqtt_protocol"] not in ("5", "3.1.1"):
        raise SettingsError(f"mqtt_protocol {s['mqtt_protocol']!r} must be 5 or 3.1.1")
    if s["format"] not in ("jsonl", "csv"):
        raise SettingsError(f"format {s['format']!r} must be jsonl or csv")
    for key in ("window_seconds", "psi_moderate", "psi_significant"):
        if not math.isfinite(s[key]):
            raise SettingsError(f"{key} must be a finite number, not {s[key]!r}")
    if s["window_rows"] < 1 or s["window_seconds"] <= 0:
        raise SettingsError("window_rows must be at least 1 and window_seconds positive")
    if not 0 < s["psi_moderate"] <= s["psi_significant"]:
        raise SettingsError("psi thresholds must satisfy 0 < psi_moderate <= psi_significant")
    if s["precision"] not in (None, "fp32", "fp16", "int8"):
        raise SettingsError(f"precision {s['precision']!r} must be fp32, fp16 or int8")
    if s["log_level"] not in ("debug", "info", "warning", "error"):
        raise SettingsError(f"log_level {s['log_level']!r} must be debug, info, warning or error")
