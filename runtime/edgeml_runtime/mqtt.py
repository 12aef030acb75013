"""How a device reaches its MQTT broker: the URL, credentials, TLS files and protocol, checked up front.

Each value is checked here, once; a bad one raises
:class:`~edgeml_runtime.errors.SettingsError` naming the field (the settings
resolver renames it to its setting key, ``url`` → ``broker``, and says where
it came from). TLS files must exist when the settings are made; whether they
hold usable PEM is known when :meth:`MqttSettings.ssl_context` loads them.

The password can be given in a file (``password_file``: the setting
``mqtt_password_file``, or the systemd credential ``mqtt_password``), read
here, once; a file every user may read is refused, as ssh refuses such a key.
A password sent over plain ``mqtt://`` to a host that is not this machine's
loopback is logged as a warning: anyone on the path can read it.

Example:

>>> MqttSettings("mqtts://broker.plant.local", ca_file=None).endpoint
('broker.plant.local', 8883, True)
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .errors import SettingsError, TelemetryError
from .tomlfile import exposure

PROTOCOLS = ("5", "3.1.1")
#: The TLS files, by field, with what each must be. Their setting keys are ``mqtt_`` + the field.
TLS_FILES = {"ca_file": "the PEM certificate of the CA that signed the broker's certificate",
             "cert_file": "this device's PEM client certificate",
             "key_file": "the PEM private key of that certificate"}
_URL = "must look like mqtt://host:1883, or mqtts://host:8883 for TLS"


@dataclass(frozen=True)
class MqttSettings:
    """How to reach the broker. ``url`` is ``mqtt://host[:1883]`` or ``mqtts://host[:8883]`` (TLS).

    >>> MqttSettings("mqtts://broker.plant.local", ca_file=None).endpoint
    ('broker.plant.local', 8883, True)
    """

    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_file: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    protocol: str = "5"
    keepalive: int = 30
    client_id: str | None = None
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    #: The largest input-topic message read; a larger one is refused and kept as a dead letter (64 B .. 256 MiB).
    input_max_bytes: int = 2**20

    def __post_init__(self):
        host, _, tls = self.endpoint
        for name in TLS_FILES:
            if getattr(self, name) and not tls:
                raise SettingsError(key=name, value=getattr(self, name), related={"url": self.url},
                                    allowed="TLS files need a TLS broker URL", fix=f"use mqtts://{host}:8883")
        if self.key_file and not self.cert_file:
            raise SettingsError(key="cert_file", value=None, related={"key_file": self.key_file},
                                allowed="a client key file was given without its certificate",
                                fix="set the certificate too")
        for name, what in TLS_FILES.items():
            path = getattr(self, name)
            if path and not Path(path).is_file():
                problem = "is a folder, not a file" if Path(path).is_dir() else "does not exist"
                raise SettingsError(key=name, value=path, allowed=problem, fix=f"give the path of {what}")
        if self.password_file is not None:
            object.__setattr__(self, "password", self._read_password())
        if self.password is not None and self.username is None:
            raise SettingsError(key="username", value=None, allowed="an MQTT password was given without a user name",
                                fix="set the user name too")
        if self.protocol not in PROTOCOLS:
            raise SettingsError(key="protocol", value=self.protocol, allowed="this MQTT protocol is not supported",
                                fix="use 5 or 3.1.1")
        if not isinstance(self.keepalive, int) or self.keepalive < 5:
            raise SettingsError(key="keepalive", value=self.keepalive, allowed="is too short",
                                fix="use 5 s or more (default 30)")
        if isinstance(self.input_max_bytes, bool) or not isinstance(self.input_max_bytes, int) or \
                not 64 <= self.input_max_bytes <= 2**28:
            raise SettingsError(key="input_max_bytes", value=self.input_max_bytes,
                                allowed="must be a whole number of bytes from 64 to 268435456 (MQTT's limit)",
                                fix="the default is 1048576 (1 MiB)")
        if not 0 < self.reconnect_min <= self.reconnect_max:
            raise SettingsError(key="reconnect_min", value=self.reconnect_min, related={"reconnect_max":
                                self.reconnect_max}, allowed="must satisfy 0 < reconnect_min <= reconnect_max",
                                fix="the defaults are 1 and 60 s")
        if self.password is not None and not tls and not _loopback(host):
            logging.getLogger("edgeml_runtime").warning(
                "the MQTT password goes to %s over plain mqtt://, readable by anyone on the network path: use "
                "mqtts://%s:8883 (TLS)", host, host)

    def _read_password(self) -> str:
        """The password in :attr:`password_file`: its text without the final newline; refused if exposed."""
        path = Path(self.password_file)
        try:
            problem = exposure(path)
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise SettingsError(key="password_file", value=self.password_file, allowed=f"cannot be read ({reason})",
                                fix="give the path of a UTF-8 file holding the MQTT password") from None
        if problem:
            raise SettingsError(key="password_file", value=self.password_file, allowed=problem,
                                fix="a password file must be readable by its owner (and group) only")
        password = text.removesuffix("\n").removesuffix("\r")
        if not password or "\n" in password:
            raise SettingsError(key="password_file", value=self.password_file,
                                allowed="is empty" if not password else "holds more than one line",
                                fix="put the password alone on the first line")
        if self.password is not None and self.password != password:  # the same one: a copy (dataclasses.replace)
            raise SettingsError(key="password_file", value=self.password_file, related={"password": "***"},
                                allowed="a password and a password file were both given", fix="give only one")
        return password

    @property
    def endpoint(self) -> tuple[str, int, bool]:
        """(host, port, TLS?) from :attr:`url`."""
        try:
            parts = urlsplit(self.url)
            parts.hostname  # noqa: B018  (parses the host; raises ValueError for a broken IPv6 literal)
        except ValueError as exc:
            raise SettingsError(key="url", value=self.url, allowed=f"is not a valid URL ({exc})", fix=_URL) from None
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or parts.path not in ("", "/"):
            raise SettingsError(key="url", value=self.url, allowed=_URL)
        if parts.username or parts.password:
            raise SettingsError(key="url", value=f"{parts.scheme}://***@{parts.hostname}",
                                allowed="holds a user name or password, which do not belong in the URL",
                                fix="give them as settings (EDGEML_MQTT_USERNAME, EDGEML_MQTT_PASSWORD)")
        try:
            port = parts.port
        except ValueError:
            raise SettingsError(key="url", value=self.url, allowed="has an invalid port", fix=_URL) from None
        tls = parts.scheme == "mqtts"
        return parts.hostname, port or (8883 if tls else 1883), tls

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for an ``mqtts://`` URL (system CAs unless :attr:`ca_file`), with its files loaded now.

        The files exist (:meth:`__post_init__` checked); one that is not a
        usable PEM file raises :class:`TelemetryError` naming its setting.
        """
        if not self.endpoint[2]:
            return None
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise self._unloadable(("ca_file",), exc) from None
        if self.cert_file:
            try:
                ctx.load_cert_chain(self.cert_file, self.key_file)
            except (ssl.SSLError, OSError) as exc:
                raise self._unloadable(("cert_file", "key_file") if self.key_file else ("cert_file",), exc) from None
        return ctx

    def _unloadable(self, names: tuple[str, ...], exc: Exception) -> TelemetryError:
        given = ", ".join(f"mqtt_{n} = {getattr(self, n)!r}" for n in names)
        return TelemetryError(f"{given}: cannot be loaded for TLS ({exc}); give "
                              + " with ".join(TLS_FILES[n] for n in names))


def _loopback(host: str) -> bool:
    """Whether ``host`` is this machine: ``localhost`` or a loopback address (names are not resolved)."""
    if host.lower() in ("localhost", "localhost.") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
