"""The ``serve`` command's own settings (the ``[serve]`` table's keys besides drift, MQTT and outbox).

Each is checked here, once, and a bad one raises a
:class:`~edgeml_runtime.errors.SettingsError` that names the key and the fix.
The bearer token comes from ``token_file`` (a file only its owner may read)
or ``token`` (``$EDGEML_TOKEN``; as a flag it would show in ``ps``).

Example:

>>> ServeOptions(port=70000)
Traceback (most recent call last):
...
edgeml_runtime.errors.SettingsError: port = 70000: must be from 0 to 65535 (0: any free port); give a TCP port such \
as 8080
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import SettingsError, check_count, check_threads
from ..tomlfile import exposure

PRECISIONS = ("fp32", "fp16", "int8")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 8 * 1024 * 1024
    max_in_flight: int = 64
    request_timeout: float = 30.0
    keep_alive_seconds: float = 15.0
    grace_seconds: float = 10.0
    workers: int = 1
    threads: int = 1
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    token: str | None = None
    token_file: str | None = None
    drift_output: str | None = None
    precision: str | None = None
    log_level: str = "info"

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise SettingsError(key="port", value=self.port, allowed="must be from 0 to 65535 (0: any free port)",
                                fix="give a TCP port such as 8080")
        if not self.host.strip():
            raise SettingsError(key="host", value=self.host, allowed="is empty",
                                fix="give an address to listen on: 127.0.0.1 (this machine), 0.0.0.0 (every network)")
        check_count("max_body_bytes", self.max_body_bytes, 1024, "bytes")
        check_count("max_in_flight", self.max_in_flight, 1, "requests")
        check_count("workers", self.workers, 1, "threads")
        check_threads(self.threads)
        for key in ("request_timeout", "keep_alive_seconds", "grace_seconds"):
            if not getattr(self, key) > 0:
                raise SettingsError(key=key, value=getattr(self, key), allowed="must be above 0",
                                    fix="give a number of seconds")
        for key, allowed in (("precision", (None, *PRECISIONS)), ("log_level", LOG_LEVELS)):
            if getattr(self, key) not in allowed:
                names = ", ".join(a for a in allowed if a is not None)
                raise SettingsError(key=key, value=getattr(self, key), allowed=f"must be one of {names}",
                                    fix=f"give one of {names}")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            given = "tls_cert_file" if self.tls_key_file is None else "tls_key_file"
            raise SettingsError(key=given, value=getattr(self, given), allowed="needs its pair",
                                fix="give both tls_cert_file (PEM certificate) and tls_key_file (its private key)")
        for key in ("tls_cert_file", "tls_key_file", "token_file"):
            path = getattr(self, key)
            if path is not None and not Path(path).is_file():
                raise SettingsError(key=key, value=path, allowed="is not a readable file", fix="give the file's path")
        if self.token is not None and self.token_file is not None:
            raise SettingsError(key="token", value="(hidden)", related={"token_file": self.token_file},
                                allowed="cannot be given with token_file", fix="give one of them")
        if self.token_file is not None and exposure(Path(self.token_file)):
            raise SettingsError(f"token_file {self.token_file} {exposure(Path(self.token_file))}")
        if self.bearer == "":
            raise SettingsError(key="token_file" if self.token_file else "token", value="(empty)",
                                allowed="is empty", fix="give a long random token, e.g. from: openssl rand -hex 32")

    @property
    def bearer(self) -> str | None:
        """The token requests must carry (``Authorization: Bearer <token>``), or None: no token asked."""
        if self.token_file is not None:
            return Path(self.token_file).read_text().strip()
        return self.token

    def tls_context(self):
        """An :class:`ssl.SSLContext` for the server's certificate, or None without TLS."""
        if self.tls_cert_file is None:
            return None
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.tls_cert_file, self.tls_key_file)
        except (ssl.SSLError, OSError) as exc:
            raise SettingsError(key="tls_cert_file", value=self.tls_cert_file,
                                allowed=f"cannot be loaded with tls_key_file {self.tls_key_file} ({exc})",
                                fix="give a PEM certificate and the PEM private key that belongs to it") from None
        return context


__all__ = ["ServeOptions"]
