"""The controller's HTTP file server (edgeml.fleet.files) over real sockets and real files.

Full GETs, every Range form with its exact Content-Range, 416, If-Range,
HEAD, paths that try to leave the releases folder, the token rule (a client
on a non-loopback address of this machine when there is one), extra routes.
"""

from __future__ import annotations

import http.client
import io
import os
import socket
import tarfile

import pytest

from edgeml.errors import FleetError
from edgeml.fleet.files import FileServer, Response, authorized


def _archive() -> bytes:
    """A real .tar.gz of at least 10,240 bytes (random content: gzip cannot shrink it) holding no bundle."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        payload = os.urandom(10_000)
        info = tarfile.TarInfo("payload.bin")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return out.getvalue()


DATA = _archive()
SIZE = len(DATA)
PATH = "/releases/plant-a/3/bundle.tar.gz"
TOKEN = "s3cret-token"


def other_address() -> str | None:
    """A non-loopback IPv4 address of this machine that a socket can bind, or None."""
    try:
        candidates = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    except OSError:
        candidates = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing address
            candidates.add(probe.getsockname()[0])
        except OSError:
            pass
    for address in sorted(a for a in candidates if not a.startswith("127.")):
        with socket.socket() as s:
            try:
                s.bind((address, 0))
                return address
            except OSError:
                continue
    return None


@pytest.fixture
def releases(tmp_path):
    folder = tmp_path / "releases" / "plant-a" / "3"
    folder.mkdir(parents=True)
    (folder / "bundle.tar.gz").write_bytes(DATA)
    (folder / "release.json").write_text('{"signed": {}}')
    (tmp_path / "secret.txt").write_text("not served")
    (folder / "notes.txt").write_text("not served either")
    return tmp_path / "releases"


@pytest.fixture
def server(releases):
    with FileServer(releases) as running:
        yield running


def ask(server, path, method="GET", host=None, **headers):
    conn = http.client.HTTPConnection(host or server.host, server.port, timeout=5)
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_a_full_get_and_head(server):
    status, headers, body = ask(server, PATH)
    assert status == 200 and body == DATA and headers["content-length"] == str(len(DATA))
    assert headers["accept-ranges"] == "bytes" and headers["content-type"] == "application/gzip"
    st = os.stat(server.releases_dir / "plant-a" / "3" / "bundle.tar.gz")
    assert headers["etag"] == f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
    status, head, body = ask(server, PATH, "HEAD")
    assert status == 200 and body == b"" and head["content-length"] == str(len(DATA))
    assert head["etag"] == headers["etag"]
    assert ask(server, "/releases/plant-a/3/release.json")[2] == b'{"signed": {}}'
    assert ask(server, "/healthz")[:3:2] == (200, b"ok\n")


@pytest.mark.parametrize(("header", "start", "end"), [
    ("bytes=0-99", 0, 99), ("bytes=10000-", 10000, SIZE - 1), ("bytes=-40", SIZE - 40, SIZE - 1),
    ("bytes=10000-99999", 10000, SIZE - 1), ("bytes=-99999", 0, SIZE - 1), ("bytes=5-5", 5, 5),
])
def test_ranges_answer_206_with_the_exact_content_range(server, header, start, end):
    status, headers, body = ask(server, PATH, Range=header)
    assert status == 206 and body == DATA[start:end + 1]
    assert headers["content-range"] == f"bytes {start}-{end}/{SIZE}" and headers["content-length"] == str(len(body))


def test_unsatisfiable_and_ignored_ranges_and_if_range(server):
    for header in (f"bytes={SIZE}-", "bytes=20000-20010", "bytes=-0"):
        status, headers, body = ask(server, PATH, Range=header)
        assert (status, headers["content-range"], body) == (416, f"bytes */{SIZE}", b"")
    for header in ("bytes=9-1", "bytes=0-1,5-6", "items=0-1", "bytes=x-"):
        status, _, body = ask(server, PATH, Range=header)
        assert status == 200 and body == DATA
    etag = ask(server, PATH, "HEAD")[1]["etag"]
    assert ask(server, PATH, Range="bytes=100-", **{"If-Range": etag})[:3:2] == (206, DATA[100:])
    assert ask(server, PATH, Range="bytes=100-", **{"If-Range": '"other"'})[:3:2] == (200, DATA)


@pytest.mark.parametrize("path", [
    "/releases/plant-a/3/../../../secret.txt", "/releases/plant-a/3/%2e%2e/%2e%2e/%2e%2e/secret.txt",
    "/releases/%2e%2e/3/bundle.tar.gz", "/releases/../plant-a/3/bundle.tar.gz", "/releases/plant-a/3/notes.txt",
    "/releases/plant-a/03/bundle.tar.gz", "/releases/plant-a/3/bundle.tar.gz/", "/releases/plant-a/4/root.json",
    "/releases/.hidden/3/bundle.tar.gz", "/secret.txt", "/releases/plant-a/3/bundle%2etar%2egz",
])
def test_no_path_leaves_the_three_files(server, path):
    status, _, body = ask(server, path)
    assert status == 404 and b"not served" not in body


def test_the_token_rule_on_a_non_loopback_address(releases):
    address = other_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to bind (the rule is tested directly below)")
    with FileServer(releases, address, token=TOKEN) as running:
        assert ask(running, PATH)[0] == 401
        assert ask(running, PATH, Authorization="Bearer wrong")[0] == 401
        assert ask(running, PATH, Authorization=TOKEN)[0] == 401  # the scheme is part of it
        assert ask(running, PATH, Authorization=f"Bearer {TOKEN}")[:3:2] == (200, DATA)
    with pytest.raises(FleetError, match=f"listen on {address} without a token.*listen on 127.0.0.1"):
        FileServer(releases, address).start()


def test_loopback_needs_no_token_and_the_rule_itself(releases):
    with FileServer(releases, token=TOKEN) as running:
        assert ask(running, PATH)[:3:2] == (200, DATA)
    assert authorized("127.0.0.1", None, None) and authorized("127.3.4.5", None, TOKEN)
    assert authorized("::1", None, TOKEN) and authorized("::ffff:127.0.0.1", None, TOKEN)
    assert not authorized("10.0.0.7", None, TOKEN) and not authorized("10.0.0.7", "Bearer s3cret", TOKEN)
    assert not authorized("10.0.0.7", f"Bearer {TOKEN}", None)  # no token configured: nothing off loopback
    assert authorized("10.0.0.7", f"Bearer {TOKEN}", TOKEN)
    for host in ("0.0.0.0", "", "::"):
        with pytest.raises(FleetError, match="without a token: anyone on the network"):
            FileServer(releases, host).start()


def test_more_routes_mount_on_the_same_port(server):
    server.route("GET", r"/dashboard/(?P<fleet>[a-z-]+)", lambda r: Response(200, {}, r.match["fleet"].encode()))
    assert ask(server, "/dashboard/plant-a")[:3:2] == (200, b"plant-a")
    assert ask(server, "/dashboard/plant-a", "HEAD")[:3:2] == (200, b"")
    status, headers, _ = ask(server, PATH, "POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    with pytest.raises(FleetError, match="is routed already"):
        server.route("GET", r"/healthz", lambda r: Response(200))
