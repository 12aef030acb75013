"""Downloading a release's archive (issue 18) from a real HTTP server written here: resumed after a cut with
exactly the rest of the bytes, restarted cleanly by a server that ignores Range, refused (and nothing left) when
the archive is not the one the release signed."""

from __future__ import annotations

import hashlib
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from edgeml_runtime.errors import UpdateError, UpdateRefused
from edgeml_runtime.update.download import download
from edgeml_runtime.update.metadata import Release, make_release

DATA = random.Random(7).randbytes(300_000)
SHA = hashlib.sha256(DATA).hexdigest()
PATH = "/releases/plant-a/7/bundle.tar.gz"


class Handler(BaseHTTPRequestHandler):
    """Serves ``server.data`` at PATH, with Range support unless ``server.ranges`` is off; closes the connection
    after ``server.cut_after`` body bytes if set. Records each request in ``server.seen``."""

    def do_GET(self):
        s = self.server
        seen = {"range": self.headers.get("Range"), "if_range": self.headers.get("If-Range"),
                "authorization": self.headers.get("Authorization"), "status": None, "sent": 0}
        s.seen.append(seen)
        if self.path != PATH:
            seen["status"] = 404
            self.send_error(404)
            return
        start = self._start()
        body = s.data[start:]
        seen["status"] = 206 if start else 200
        self.send_response(seen["status"])
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", s.etag)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(s.data) - 1}/{len(s.data)}")
        self.end_headers()
        if s.cut_after is not None:
            body = body[:s.cut_after]
            self.close_connection = True
        self.wfile.write(body)
        self.wfile.flush()
        seen["sent"] = len(body)

    def _start(self) -> int:
        s, asked = self.server, self.headers.get("Range", "")
        if not s.ranges or not asked.startswith("bytes=") or self.headers.get("If-Range", s.etag) != s.etag:
            return 0
        return int(asked.removeprefix("bytes=").split("-")[0])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.data, httpd.etag, httpd.ranges, httpd.cut_after, httpd.seen = DATA, '"v7"', True, None, []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}{PATH}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_a_whole_download_sends_the_token_and_leaves_only_the_file(server, tmp_path):
    dest = tmp_path / "bundle.tgz"
    seen_progress = []
    fetched = download(server.url, dest, sha256=SHA, size=len(DATA), token="s3cret",
                       progress=lambda done, size: seen_progress.append((done, size)))
    assert fetched == len(DATA) and dest.read_bytes() == DATA
    assert server.seen == [{"range": None, "if_range": None, "authorization": "Bearer s3cret", "status": 200,
                            "sent": len(DATA)}]
    assert seen_progress[-1] == (len(DATA), len(DATA)) and seen_progress == sorted(seen_progress)
    assert [p.name for p in tmp_path.iterdir()] == ["bundle.tgz"]


def test_a_cut_download_resumes_with_range_and_fetches_only_the_rest(server, tmp_path):
    dest, cut = tmp_path / "bundle.tgz", 100_000
    server.cut_after = cut
    with pytest.raises(UpdateError, match=r"was cut after 100,000 of 300,000 bytes; the next try resumes"):
        download(server.url, dest, sha256=SHA, size=len(DATA))
    partial = tmp_path / "bundle.tgz.partial"
    assert partial.read_bytes() == DATA[:cut] and not dest.exists()
    server.cut_after = None
    assert download(server.url, dest, sha256=SHA, size=len(DATA)) == len(DATA) - cut
    assert server.seen[1] == {"range": f"bytes={cut}-", "if_range": '"v7"', "authorization": None, "status": 206,
                              "sent": len(DATA) - cut}
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == SHA
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.tgz"]


def test_a_server_ignoring_range_restarts_the_download_cleanly(server, tmp_path):
    dest = tmp_path / "bundle.tgz"
    server.cut_after = 70_000
    with pytest.raises(UpdateError, match=r"cut after 70,000"):
        download(server.url, dest, sha256=SHA, size=len(DATA))
    server.cut_after, server.ranges = None, False
    assert download(server.url, dest, sha256=SHA, size=len(DATA)) == len(DATA)
    assert (server.seen[1]["range"], server.seen[1]["status"], server.seen[1]["sent"]) == \
        ("bytes=70000-", 200, len(DATA))
    assert dest.read_bytes() == DATA


def test_a_file_changed_on_the_server_is_fetched_whole_through_if_range(server, tmp_path):
    dest, new = tmp_path / "bundle.tgz", DATA[::-1]
    server.cut_after = 50_000
    with pytest.raises(UpdateError, match=r"cut after 50,000"):
        download(server.url, dest, sha256=SHA, size=len(DATA))
    server.cut_after, server.data, server.etag = None, new, '"v8"'
    assert download(server.url, dest, sha256=hashlib.sha256(new).hexdigest(), size=len(new)) == len(new)
    assert (server.seen[1]["if_range"], server.seen[1]["status"]) == ('"v7"', 200)
    assert dest.read_bytes() == new


def test_a_rehashed_archive_is_refused_as_bad_archive_and_nothing_is_left(server, tmp_path):
    """The archive served is not the one the release signed (same size, another hash: rebuilt, or tampered)."""
    release = Release.from_signed(make_release(
        "plant-a", "", 7, {"identity": "ab" * 32, "name": "demo", "version": "1", "archive": "bundle.tgz",
                           "sha256": SHA, "bytes": len(DATA)}, {}, 1, "2026-12-03T10:00:00Z", "2027-01-02T10:00:00Z"))
    server.data = DATA[:-1] + bytes([DATA[-1] ^ 1])
    dest = tmp_path / release.bundle.archive
    with pytest.raises(UpdateRefused, match=rf"bundle.tar.gz is 300,000 bytes with sha256 \w{{12}}…, but the release "
                                            rf"says 300,000 bytes with sha256 {SHA[:12]}…") as refused:
        download(server.url, dest, sha256=release.bundle.sha256, size=release.bundle.bytes)
    assert refused.value.reason == "bad_archive"
    assert list(tmp_path.iterdir()) == []


def test_more_bytes_than_the_release_says_is_a_bad_archive(server, tmp_path):
    server.data = DATA + b"tail"
    with pytest.raises(UpdateRefused, match=r"is 300,001 bytes .* the release says 300,000 bytes") as refused:
        download(server.url, tmp_path / "bundle.tgz", sha256=SHA, size=len(DATA))
    assert refused.value.reason == "bad_archive" and list(tmp_path.iterdir()) == []


def test_an_http_error_is_an_update_error_and_keeps_the_partial_file(server, tmp_path):
    partial = tmp_path / "bundle.tgz.partial"
    partial.write_bytes(DATA[:1000])
    with pytest.raises(UpdateError, match=r"downloading http://127.0.0.1:\d+/nope failed: HTTP 404"):
        download(server.url.replace(PATH, "/nope"), tmp_path / "bundle.tgz", sha256=SHA, size=len(DATA))
    assert partial.read_bytes() == DATA[:1000]
    assert server.seen[0]["range"] == "bytes=1000-"
