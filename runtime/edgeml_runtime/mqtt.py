"""How a device reaches its MQTT broker: the URL, credentials, TLS files and protocol, checked up front.

Example:

>>> MqttSettings("mqtts://broker.plant.local", ca_file=None).endpoint
('broker.plant.local', 8883, True)
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .errors import EdgeMLError

PROTOCOLS = ("5", "3.1.1")


class TelemetryError(EdgeMLError):
    """MQTT settings or telemetry input that cannot work (never raised for a broker that is down)."""


@dataclass(frozen=True)
class MqttSettings:
    """How to reach the broker. ``url`` is ``mqtt://host[:1883]`` or ``mqtts://host[:8883]`` (TLS).

    >>> MqttSettings("mqtts://broker.plant.local", ca_file=None).endpoint
    ('broker.plant.local', 8883, True)
    """

    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    protocol: str = "5"
    keepalive: int = 30
    client_id: str | None = None
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0

    def __post_init__(self):
        host, _, tls = self.endpoint
        if not tls and (self.ca_file or self.cert_file or self.key_file):
            raise TelemetryError(f"CA, certificate or key files were given for {self.url}, which is not TLS; "
                                 f"use mqtts://{host}:8883")
        if self.key_file and not self.cert_file:
            raise TelemetryError("a client key file was given without its certificate; set the certificate too")
        if self.password is not None and self.username is None:
            raise TelemetryError("an MQTT password was given without a user name; set the user name too")
        if self.protocol not in PROTOCOLS:
            raise TelemetryError(f"MQTT protocol {self.protocol!r} is not supported; use 5 or 3.1.1")
        if self.keepalive < 5:
            raise TelemetryError(f"MQTT keepalive {self.keepalive} s is too short; use 5 s or more (default 30)")
        if not 0 < self.reconnect_min <= self.reconnect_max:
            raise TelemetryError(f"reconnect delays {self.reconnect_min}..{self.reconnect_max} s must satisfy "
                                 "0 < reconnect_min <= reconnect_max")

    @property
    def endpoint(self) -> tuple[str, int, bool]:
        """(host, port, TLS?) from :attr:`url`."""
        try:
            parts = urlsplit(self.url)
            parts.hostname  # noqa: B018  (parses the host; raises ValueError for a broken IPv6 literal)
        except ValueError as exc:
            raise TelemetryError(f"broker {self.url!r} is not a valid URL ({exc}); use mqtt://host:1883") from None
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or parts.path not in ("", "/"):
            raise TelemetryError(f"broker {self.url!r} must look like mqtt://host:1883 or mqtts://host:8883")
        if parts.username or parts.password:
            raise TelemetryError(f"broker {parts.hostname}: give the user name and password as settings, not "
                                 "in the URL (EDGEML_MQTT_USERNAME, EDGEML_MQTT_PASSWORD)")
        try:
            port = parts.port
        except ValueError:
            raise TelemetryError(f"broker {self.url!r} has an invalid port") from None
        tls = parts.scheme == "mqtts"
        return parts.hostname, port or (8883 if tls else 1883), tls

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for an ``mqtts://`` URL (system CAs unless :attr:`ca_file`), checked now."""
        if not self.endpoint[2]:
            return None
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise TelemetryError(f"MQTT {name.replace('_', ' ')} {path} does not exist")
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file:
                ctx.load_cert_chain(self.cert_file, self.key_file)
        except (ssl.SSLError, OSError) as exc:
            raise TelemetryError(f"cannot load the TLS files (CA {self.ca_file}, certificate {self.cert_file}, "
                                 f"key {self.key_file}): {exc}; they must be PEM files") from None
        return ctx
