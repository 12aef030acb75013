"""``serve`` under pressure: the swap under load, limits, HTTP details, TLS and a bearer token, shutdown, the CLI.

The swap test hammers a server from eight connections while another bundle
(another model: its answers differ) is swapped in; no request may fail, and
each answer must be exactly what the model it names gives. The limits are
provoked for real: the only scoring thread is kept busy, a body is too
large, a request never finishes arriving.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from broker import wait_until
from conftest import BIN, build_bundle
from fleet_helpers import renumbered
from serve_client import call, connection, rows, serve_settings, served

from edgeml_runtime.errors import SettingsError
from edgeml_runtime.model import Model
from edgeml_runtime.serve.app import INLINE_ROWS


@pytest.fixture(scope="module")
def records(demo_rows):
    return rows(demo_rows)


@pytest.fixture(scope="module")
def other_bundle(tmp_path_factory, demo_bundle):
    """Another model of the demo data (logistic regression, version 2): its probabilities differ from the demo's."""
    folder = tmp_path_factory.mktemp("other")
    build_bundle(folder / "lr", estimators=("lrl2",), max_iter=2)
    return renumbered(folder / "lr", folder, version="2")


def test_a_swap_under_load_fails_no_request_and_mixes_no_models(demo_bundle, other_bundle, records, tmp_path):
    sizes = (1, 10, 3 * INLINE_ROWS)  # on the event loop, and on the scoring threads
    models = {m.manifest.identity: m for m in (Model.load(demo_bundle), Model.load(other_bundle))}
    want = {k: m.predict(records[:max(sizes)]).probabilities for k, m in models.items()}
    answers, failures = [], []
    stop = threading.Event()
    out = tmp_path / "windows.jsonl"
    with served(demo_bundle, drift_output=str(out), window_rows=100_000, min_rows=1, workers=2) as s:
        def hammer(k):
            with connection(s.url) as conn:
                while not stop.is_set():
                    n = sizes[k % len(sizes)]
                    sent = time.monotonic()
                    try:
                        status, _, body = call(s.url, "POST", "/predict", records[:n], conn=conn)
                    except OSError as exc:
                        failures.append(repr(exc))
                        return
                    answers.append((sent, n, status, body))

        threads = [threading.Thread(target=hammer, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        wait_until(lambda: len(answers) > 100, timeout=30)
        s.swap(other_bundle)
        swapped = time.monotonic()
        wait_until(lambda: sum(a[0] > swapped for a in answers) > 100, timeout=30)
        stop.set()
        for t in threads:
            t.join()
    assert not failures and {a[2] for a in answers} == {200}
    seen = {}
    for sent, n, _, body in answers:
        identity = body["model"]["bundle_sha256"]
        got = np.array([list(p["probabilities"].values()) for p in body["predictions"]])
        np.testing.assert_allclose(got, want[identity][:n], rtol=1e-6)  # wholly by the model it names
        seen[identity] = seen.get(identity, 0) + n
        if sent > swapped:
            assert body["model"]["version"] == "2"
    assert len(seen) == 2
    windows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [w["model"]["version"] for w in windows] == ["1", "2"]  # the old model's window closed at the swap
    assert {w["model"]["bundle_sha256"]: w["rows"] for w in windows} == seen  # every answered row counted once


def test_a_bundle_that_does_not_load_leaves_the_current_one_serving(demo_bundle, records, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{")
    with served(demo_bundle) as s:
        with pytest.raises(Exception, match="manifest"):
            s.swap(broken)
        status, _, body = call(s.url, "POST", "/predict", records[0])
    assert status == 200 and body["model"]["version"] == "1"


def test_the_in_flight_bound_and_the_scoring_timeout(demo_bundle, records):
    big = records[: INLINE_ROWS + 1]  # scored on the worker threads
    with served(demo_bundle, max_in_flight=1, request_timeout=0.5, workers=1) as s:
        gate = threading.Event()
        s.app.pool.submit(gate.wait)  # the only scoring thread is busy
        try:
            with ThreadPoolExecutor(1) as pool:
                started = time.monotonic()
                first = pool.submit(call, s.url, "POST", "/predict", big)
                wait_until(lambda: s.app.in_flight == 1, timeout=10)
                status, headers, body = call(s.url, "POST", "/predict", big)
                assert status == 503 and headers["Retry-After"] == "1" and "(max_in_flight)" in body["error"]
                assert call(s.url, "POST", "/predict", records[0])[0] == 200  # one row: on the event loop
                status, headers, body = first.result()
                assert status == 503 and "longer than request_timeout = 0.5 s" in body["error"]
                assert time.monotonic() - started >= 0.5 and headers["Retry-After"] == "1"
        finally:
            gate.set()
        wait_until(lambda: s.app.in_flight == 0, timeout=10)
        assert call(s.url, "POST", "/predict", big)[0] == 200


def _raw(url: str, data: bytes, *, wait: float = 0.0, read_until_close: bool = True) -> bytes:
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        if wait:
            time.sleep(wait)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if not read_until_close:
                break
        return b"".join(chunks)


def test_http_limits_and_details(demo_bundle, records):
    record = json.dumps(records[0]).encode()
    with served(demo_bundle, max_body_bytes=2048, request_timeout=0.5) as s:
        answer = _raw(s.url, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 413 ") and b"over the limit of 2,048 (max_body_bytes)" in answer
        assert b"Connection: close" in answer
        answer = _raw(s.url, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        assert answer.startswith(b"HTTP/1.1 408 ") and b"within 0.5 s" in answer
        live = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
        answer = _raw(s.url, live + live + b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.count(b"HTTP/1.1 200 OK") == 3  # pipelined, answered in order
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (record[:50], record[50:])) + b"0\r\n\r\n"
        answer = _raw(s.url, b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                             b"Connection: close\r\n\r\n" + chunked)
        assert answer.startswith(b"HTTP/1.1 200 ") and b'"predictions":[{"row":1' in answer
        answer = _raw(s.url, b"GET /v2/health/live HTTP/1.0\r\n\r\n")
        assert answer.startswith(b"HTTP/1.0 200 ") and b"Connection: close" in answer
        for bad, status, says in (
                (b"POST /predict HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}", b"400",
                 b"both Content-Length and Transfer-Encoding"),
                (b"GET /v2/health/live\r\n\r\n", b"400", b"malformed request line"),
                (b"GET /v2/health/live HTTP/2.0\r\n\r\n", b"505", b"speak HTTP/1.1"),
                (b"GET / HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", b"431", b"head is over 16,384 bytes")):
            answer = _raw(s.url, bad)
            assert answer.startswith(b"HTTP/1.1 " + status) and says in answer, answer[:300]
        with socket.create_connection(s.url.split("//")[1].split(":"), timeout=10) as sock:  # Expect: 100-continue
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
                         % len(record))
            assert sock.recv(1000) == b"HTTP/1.1 100 Continue\r\n\r\n"
            sock.sendall(record)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")


def _certificate(folder):
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return folder / "cert.pem", folder / "key.pem"


def test_tls_and_a_bearer_token(demo_bundle, records, tmp_path):
    cert, key = _certificate(tmp_path)
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    token.chmod(0o644)
    with pytest.raises(SettingsError, match="can be read by every user"):
        serve_settings(token_file=str(token))
    token.chmod(0o600)
    with pytest.raises(SettingsError, match="give both tls_cert_file"):
        serve_settings(tls_cert_file=str(cert))
    with served(demo_bundle, tls_cert_file=str(cert), tls_key_file=str(key), token_file=str(token)) as s:
        assert s.url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(cert))
        assert call(s.url, "GET", "/v2/health/live", context=context)[0] == 200  # probes need no token
        status, headers, body = call(s.url, "POST", "/predict", records[0], context=context)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer") and "no Authorization" in \
            body["error"]
        wrong = {"Authorization": "Bearer guess"}
        assert call(s.url, "GET", "/metrics", headers=wrong, context=context)[0] == 401
        right = {"Authorization": "Bearer s3cret-token"}
        assert call(s.url, "POST", "/predict", records[0], headers=right, context=context)[0] == 200
        assert call(s.url, "GET", "/v2/models/demo", headers=right, context=context)[0] == 200
        with pytest.raises(ssl.SSLCertVerificationError):  # a client that does not trust the certificate
            call(s.url, "GET", "/v2/health/live", context=ssl.create_default_context())


def test_shutdown_finishes_the_requests_in_flight(demo_bundle, records):
    from edgeml_runtime.serve.server import Server

    s = Server(demo_bundle, serve_settings(workers=1)).start_in_thread()
    gate = threading.Event()
    s.app.pool.submit(gate.wait)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(call, s.url, "POST", "/predict", records[: INLINE_ROWS + 1])
        wait_until(lambda: s.app.in_flight == 1, timeout=10)
        stopping = threading.Thread(target=s.join, args=(60,))
        stopping.start()
        wait_until(lambda: not s.app.ready, timeout=10)
        time.sleep(0.2)
        with pytest.raises(ConnectionRefusedError):  # no longer listening
            call(s.url, "GET", "/v2/health/live")
        gate.set()
        status, headers, body = pending.result(timeout=30)
    stopping.join()
    assert status == 200 and headers["Connection"] == "close" and len(body["predictions"]) == INLINE_ROWS + 1


def test_the_command_serves_reloads_on_sighup_and_stops_on_sigterm(demo_bundle, records, tmp_path):
    out = tmp_path / "windows.jsonl"
    proc = subprocess.Popen([str(BIN / "edgeml-runtime"), "serve", str(demo_bundle), "--port", "0",
                             "--drift-output", str(out), "--min-rows", "1"],
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert " INFO serving demo 1 on http://127.0.0.1:" in line, line
        url = line.split(" on ")[1].split()[0]
        assert call(url, "POST", "/predict", records[:3])[0] == 200
        proc.send_signal(signal.SIGHUP)
        logged = [proc.stderr.readline() for _ in range(2)]  # the old model's last window, then the swap
        assert "drift window" in logged[0] and "3 rows" in logged[0] and "swapped in demo 1" in logged[1], logged
        assert call(url, "POST", "/predict", records[:2])[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert proc.stderr.read().rstrip().endswith("INFO stopped")
    finally:
        proc.kill()
        proc.stderr.close()
    assert [json.loads(line)["rows"] for line in out.read_text().splitlines()] == [3, 2]


@pytest.mark.parametrize("flags, says", [
    (["--port", "70000"], "port = 70000 (from flag --port): must be from 0 to 65535"),
    (["--tls-cert-file", os.devnull], "tls_cert_file = '/dev/null' (from flag --tls-cert-file): needs its pair"),
    (["--broker", "mqtt://127.0.0.1:9"], "a broker needs this device's id and fleet: pass --device-id"),
    (["--max-in-flight", "0"], "max_in_flight = 0 (from flag --max-in-flight): must be a whole number of requests"),
])
def test_bad_settings_are_named_without_a_traceback(demo_bundle, flags, says):
    done = subprocess.run([str(BIN / "edgeml-runtime"), "serve", str(demo_bundle), *flags], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_the_token_can_be_a_systemd_credential(tmp_path):
    (tmp_path / "token").write_text("from-systemd\n")
    (tmp_path / "token").chmod(0o400)
    from edgeml_runtime.settings import resolve_settings

    settings = resolve_settings({}, command="serve", environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert settings.serve.bearer == "from-systemd"
    given = resolve_settings({"token": "from-a-flag"}, command="serve",
                             environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert given.serve.bearer == "from-a-flag" and given.serve.token_file is None
