"""A real Mosquitto for the tests, a subscriber that records what arrives, and a test PKI.

``Broker`` writes a config into a folder and runs ``mosquitto -c`` on a free
port on 127.0.0.1: anonymous or with a password file, with an ACL, with a TLS
listener (optionally requiring client certificates), with persistence (so a
subscriber's session and its queued messages survive :meth:`Broker.restart`).
Readiness is a TCP connect, retried within a bound; nothing sleeps a fixed time.

>>> b = Broker("/tmp/x", users={"pi-07": "secret"}, acl="pattern write edgeml/+/%u/#\\n")
>>> "allow_anonymous false" in b.config() and "acl_file" in b.config()
True
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

SBIN = "/usr/sbin:/usr/local/sbin"


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto", path=f"{os.environ.get('PATH', '')}:{SBIN}")


def require_mosquitto() -> str:
    path = mosquitto_path()
    if path is None:
        pytest.skip("mosquitto not installed; run make test, which installs it")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 10.0, what: str = "condition", interval: float = 0.02):
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` passes (AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass(frozen=True)
class Pki:
    """PEM files of a test CA, a server certificate for 127.0.0.1/localhost, and client certificates.

    ``clients`` maps each client's common name to its (certificate, key).
    """

    ca: Path
    server_cert: Path
    server_key: Path
    clients: dict


def make_pki(folder: Path, clients=("pi-07",)) -> Pki:
    """A throwaway CA, made with ``cryptography``, and one client certificate per common name in ``clients``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(stem, key, cert):
        (folder / f"{stem}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        (folder / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return folder / f"{stem}.crt", folder / f"{stem}.key"

    def issue(cn, key, issuer, issuer_key, *extensions):
        builder = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(issuer)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1)))
        for ext, critical in extensions:
            builder = builder.add_extension(ext, critical=critical)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = issue("edgeml test CA", ca_key, name("edgeml test CA"), ca_key,
                    (x509.BasicConstraints(ca=True, path_length=None), True),
                    (x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                   key_encipherment=False, data_encipherment=False, key_agreement=False,
                                   encipher_only=False, decipher_only=False), True),
                    (x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False))
    ca_path, _ = write("ca", ca_key, ca_cert)
    aki = (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = issue("localhost", server_key, ca_cert.subject, ca_key, aki,
                   (x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                 x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False),
                   (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False))
    issued = {}
    for cn in clients:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = issue(cn, key, ca_cert.subject, ca_key, aki,
                     (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False))
        issued[cn] = write(f"client-{cn}", key, cert)
    return Pki(ca_path, *write("server", server_key, server), issued)


class Broker:
    """One Mosquitto process on 127.0.0.1 with a generated config (see the module docstring)."""

    def __init__(self, folder, *, users: dict[str, str] | None = None, acl: str | None = None,
                 pki: Pki | None = None, require_certificate: bool = False, persistence: bool = False,
                 port: int | None = None, config: str | None = None):
        """``config`` replaces the generated configuration (``port`` must then be one it listens on)."""
        self.folder = Path(folder)
        self._config = config
        self.users, self.acl, self.pki = users, acl, pki
        self.require_certificate, self.persistence = require_certificate, persistence
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = self.folder / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"mqtts://localhost:{self.port}" if self.pki else f"mqtt://127.0.0.1:{self.port}"

    def config(self) -> str:
        if self._config is not None:
            return self._config + ("\nuser root\n" if os.geteuid() == 0 else "")
        anonymous = not (self.users or self.require_certificate)
        lines = [f"listener {self.port} 127.0.0.1", f"allow_anonymous {str(anonymous).lower()}", "log_dest stderr",
                 "log_type error", "log_type warning", "log_type notice", "log_type information",
                 "connection_messages true", "log_timestamp_format %H:%M:%S"]
        if os.geteuid() == 0:
            lines.append("user root")  # else mosquitto drops to user 'mosquitto', who cannot read tmp folders
        if self.users:
            lines.append(f"password_file {self.folder / 'passwd'}")
        if self.acl is not None:
            lines.append(f"acl_file {self.folder / 'acl'}")
        if self.pki:
            lines += [f"cafile {self.pki.ca}", f"certfile {self.pki.server_cert}", f"keyfile {self.pki.server_key}"]
            if self.require_certificate:
                lines += ["require_certificate true", "use_identity_as_username true"]
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.folder}/", "autosave_interval 0"]
        return "\n".join(lines) + "\n"

    def start(self) -> Broker:
        exe = require_mosquitto()
        self.folder.mkdir(parents=True, exist_ok=True)
        conf = self.folder / "mosquitto.conf"
        conf.write_text(self.config())
        if self.users and not (self.folder / "passwd").exists():
            passwd = shutil.which("mosquitto_passwd", path=f"{os.environ.get('PATH', '')}:{SBIN}")
            for i, (user, password) in enumerate(self.users.items()):
                flags = ["-b", "-c"] if i == 0 else ["-b"]
                subprocess.run([passwd, *flags, str(self.folder / "passwd"), user, password], check=True,
                               capture_output=True, timeout=30)
        if self.acl is not None:
            (self.folder / "acl").write_text(self.acl)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        try:
            wait_until(self._accepting, timeout=10, what=f"mosquitto on port {self.port}")
        except AssertionError:
            self.kill()
            raise AssertionError(f"mosquitto did not start on port {self.port}:\n{self.log()}") from None
        return self

    def _accepting(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"mosquitto exited with {self.proc.returncode}:\n{self.log()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM and wait: Mosquitto saves its persistence file and closes every connection."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> Broker:
        """Stop, then start again on the same port."""
        self.stop()
        return self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Subscriber:
    """A real paho client on ``edgeml/#`` (QoS 1) that records every message it gets.

    ``persistent=True`` keeps its session on the broker (clean session off, a
    fixed client id), so messages published while it is away (broker restart)
    are queued for it; paho reconnects it on its own.
    """

    def __init__(self, url: str, topic: str = "edgeml/#", *, username: str | None = None,
                 password: str | None = None, ca_file=None, cert_file=None, key_file=None,
                 client_id: str = "test-subscriber", persistent: bool = False):
        import paho.mqtt.client as mqtt

        self.topic = topic
        self.messages: list = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                                  clean_session=not persistent)
        self.client.reconnect_delay_set(1, 1)
        if username:
            self.client.username_pw_set(username, password)
        if url.startswith("mqtts://"):
            self.client.tls_set(ca_certs=str(ca_file), certfile=cert_file and str(cert_file),
                                keyfile=key_file and str(key_file))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        host, port = url.split("://")[1].rsplit(":", 1)
        self._address = (host, int(port))

    def start(self) -> Subscriber:
        self.client.connect(*self._address, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError(f"the test subscriber did not get its SUBACK from {self._address}")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self._subscribed.set()

    def _on_message(self, client, userdata, msg):
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def on(self, kind: str) -> list:
        """(message, decoded JSON) for the messages on topics ending in ``/kind``."""
        with self._cond:
            return [(m, json.loads(m.payload)) for m in self.messages if m.topic.endswith("/" + kind) and m.payload]

    def wait_for(self, predicate, timeout: float = 10.0, what: str = "messages"):
        """Wait until ``predicate(self)`` is truthy and return it; on timeout list what did arrive."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate(self)
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    got = [(m.topic, m.payload[:80]) for m in self.messages[-10:]]
                    raise AssertionError(f"timed out after {timeout} s waiting for {what}; "
                                         f"{len(self.messages)} message(s) arrived, the last: {got}")
                self._cond.wait(min(left, 0.5))

    def __enter__(self) -> Subscriber:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
