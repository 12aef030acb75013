"""The controller's HTTP server: release folders, read only, on one port (stdlib ``http.server``, a thread each).

:class:`FileServer` serves ``/releases/<fleet>/<version>/<file>`` from a
releases folder (:mod:`.releases`), ``<file>`` one of ``release.json``,
``root.json`` and ``bundle.tar.gz``; anything else is 404, so no path can
leave the folder: the raw path must match that form before any decoding
(``..`` or ``%2e%2e`` never does). GET and HEAD; every answer carries an
``ETag`` (size and modification time: a release folder's files never change
once written) and ``Accept-Ranges: bytes``; ``Range: bytes=a-b``, ``a-`` or
``-n`` answers 206 with ``Content-Range`` (a device resumes a cut download),
a range past the end 416, and ``If-Range`` with another ETag the whole file.

Clients on loopback (127.0.0.0/8, ::1) need nothing; any other client sends
``Authorization: Bearer <token>``, else 401. A server bound to a
non-loopback address without a token is refused at :meth:`~FileServer.start`.
``/healthz`` answers 200. More routes mount with :meth:`FileServer.route`
(the dashboard will share the port): a route is a method, a regular
expression over the path and a function of a :class:`Request` returning a
:class:`Response`.

Example:

>>> import tempfile, urllib.request
>>> with FileServer(tempfile.mkdtemp()) as server:
...     urllib.request.urlopen(server.url + "/healthz").read()
b'ok\\n'
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import re
import socket
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from edgeml.errors import FleetError

log = logging.getLogger("edgeml.fleet.files")

RELEASE_PATH = re.compile(r"/releases/(?P<fleet>[A-Za-z0-9][A-Za-z0-9._-]{0,127})/(?P<version>[1-9][0-9]{0,18})/"
                          r"(?P<file>release\.json|root\.json|bundle\.tar\.gz)")
_TYPES = {".json": "application/json", ".gz": "application/gzip"}
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass(frozen=True)
class Request:
    """What a route sees: the method, the path (query left out), the headers, the client's address, the match."""

    method: str
    path: str
    headers: dict
    client: str
    match: re.Match
    query: dict = field(default_factory=dict)  #: each query parameter's last value


@dataclass
class Response:
    """What a route returns: a status, headers, and a body (bytes, or ``file`` = (path, start, length), or
    ``stream``: chunks written as they come, the connection closed after the last, e.g. server-sent events)."""

    status: int
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    file: tuple[Path, int, int] | None = None
    stream: Iterator[bytes] | None = None


Route = Callable[[Request], Response]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is this machine's loopback: 127.0.0.0/8, ::1 or their names.

    >>> is_loopback("127.0.0.9"), is_loopback("::1"), is_loopback("::ffff:127.0.0.1"), is_loopback("192.0.2.2")
    (True, True, True, False)
    >>> is_loopback("0.0.0.0"), is_loopback("")
    (False, False)
    """
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        if not host:
            return False
        try:
            found = {info[4][0] for info in socket.getaddrinfo(host, None)}
        except OSError:
            return False
        return bool(found) and all(is_loopback(a) for a in found)
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def authorized(client: str, header: str | None, token: str | None, cookie: str | None = None) -> bool:
    """Whether a request from ``client`` with this ``Authorization`` header (or token cookie, which a browser
    sends where it cannot set a header: the dashboard's event stream) may be answered: always from loopback,
    else only with ``Bearer <token>`` or the cookie (compared in constant time; the dispatcher passes a ``?token=``
    query parameter in the cookie's place on the paths of :attr:`FileServer.token_paths`).

    >>> authorized("127.0.0.1", None, None), authorized("192.0.2.7", None, "s3cret")
    (True, False)
    >>> authorized("192.0.2.7", "Bearer s3cret", "s3cret"), authorized("192.0.2.7", "Bearer x", None)
    (True, False)
    >>> authorized("192.0.2.7", None, "s3cret", cookie="s3cret")
    True
    """
    if is_loopback(client):
        return True
    if token is None:
        return False
    given = header[len("Bearer "):].strip() if header and header.startswith("Bearer ") else cookie
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


#: The cookie the dashboard keeps the token in (set by ``/?token=...``: HttpOnly, SameSite=Strict).
TOKEN_COOKIE = "edgeml_token"


def cookie_token(header: str | None) -> str | None:
    """The token cookie's value in a ``Cookie`` header, if any.

    >>> cookie_token("theme=dark; edgeml_token=s3cret"), cookie_token(None)
    ('s3cret', None)
    """
    for part in (header or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == TOKEN_COOKIE:
            return value
    return None


def byte_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """The (start, length) a ``Range`` header asks of a file of ``size`` bytes; None for the whole file (no
    header, or one this server does not take: several ranges, another unit, a bad form); ``"unsatisfiable"``
    for a range past the end.

    >>> byte_range("bytes=0-9", 100), byte_range("bytes=90-", 100), byte_range("bytes=-5", 100)
    ((0, 10), (90, 10), (95, 5))
    >>> byte_range("bytes=95-200", 100), byte_range("bytes=100-", 100), byte_range("bytes=5-1", 100)
    ((95, 5), 'unsatisfiable', None)
    """
    found = _RANGE.fullmatch(header.strip()) if header else None
    if found is None or found.groups() == ("", ""):
        return None
    first, last = found.groups()
    if not first:
        suffix = int(last)
        return (max(size - suffix, 0), min(suffix, size)) if suffix else "unsatisfiable"
    start = int(first)
    end = int(last) if last else max(start, size - 1)
    if end < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1) - start + 1


class FileServer:
    """Release folders over HTTP on ``host:port`` (port 0: any free one); :meth:`start`, :meth:`stop`, :attr:`url`.

    ``token``: what clients off loopback must send as ``Authorization: Bearer``; required for a non-loopback
    ``host``."""

    def __init__(self, releases_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 0,
                 token: str | None = None):
        self.releases_dir, self.host, self.port, self.token = Path(releases_dir), host, port, token
        self.routes: list[tuple[str, re.Pattern, Route]] = []
        #: Paths where a ``?token=`` query parameter stands for the header: the dashboard's sign-in link
        #: (``/?token=...`` sets the token cookie), which a person pastes into a browser that cannot send headers.
        self.token_paths: set[str] = set()
        #: Set by :meth:`stop`: long answers (an event stream) end when they see it.
        self.stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.route("GET", r"/healthz", lambda request: Response(200, {"Content-Type": "text/plain"}, b"ok\n"))
        self.route("GET", RELEASE_PATH, self._release_file)

    def route(self, method: str, pattern: str | re.Pattern, handler: Route) -> None:
        """Answer ``method`` requests whose whole path matches ``pattern`` with ``handler`` (HEAD takes GET's
        routes); refused if the same method and pattern are routed already."""
        compiled = re.compile(pattern)
        if any(m == method and p.pattern == compiled.pattern for m, p, _ in self.routes):
            raise FleetError(f"{method} {compiled.pattern} is routed already; give the route another path")
        self.routes.append((method, compiled, handler))

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> FileServer:
        if self.token is None and not is_loopback(self.host):
            raise FleetError(f"the release server would listen on {self.host or 'every address'} without a token: "
                             "anyone on the network could read the releases. Give a token (devices send it as "
                             "Authorization: Bearer), or listen on 127.0.0.1")
        if self.token is not None and not self.token.strip():
            raise FleetError("the release server's token is empty; give a long random one, or none on loopback")
        handler = type("Handler", (_Handler,), {"files": self})
        server_class = type("Server", (ThreadingHTTPServer,), {
            "address_family": socket.AF_INET6 if ":" in self.host else socket.AF_INET, "daemon_threads": True})
        try:
            self._server = server_class((self.host, self.port), handler)
        except OSError as exc:
            raise FleetError(f"the release server cannot listen on {self.host}:{self.port} ({exc.strerror}); "
                             "choose another address or port") from None
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="edgeml-files",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _release_file(self, request: Request) -> Response:
        m = request.match
        root = self.releases_dir.resolve()
        path = (root / m["fleet"] / m["version"] / m["file"]).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            return _not_found()
        stat = path.stat()
        size, etag = stat.st_size, f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
        headers = {"ETag": etag, "Accept-Ranges": "bytes", "Content-Type": _TYPES[path.suffix]}
        if_range = request.headers.get("if-range")
        wanted = byte_range(request.headers.get("range"), size) if if_range in (None, etag) else None
        if wanted == "unsatisfiable":
            return Response(416, {**headers, "Content-Range": f"bytes */{size}"})
        if wanted is None:
            return Response(200, headers, file=(path, 0, size))
        start, length = wanted
        return Response(206, {**headers, "Content-Range": f"bytes {start}-{start + length - 1}/{size}"},
                        file=(path, start, length))


def _not_found() -> Response:
    return Response(404, {"Content-Type": "text/plain"}, b"not found\n")


class _Handler(BaseHTTPRequestHandler):
    files: FileServer
    protocol_version = "HTTP/1.1"
    server_version = "edgeml"

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        path, _, query = self.path.partition("?")
        client = self.client_address[0]
        self._query = {k: v[-1] for k, v in urllib.parse.parse_qs(query).items()}
        given = cookie_token(self.headers.get("Cookie"))
        if path in self.files.token_paths and "token" in self._query:
            given = self._query["token"]
        if not authorized(client, self.headers.get("Authorization"), self.files.token, given):
            response = Response(401, {"WWW-Authenticate": "Bearer", "Content-Type": "text/plain"},
                                b"a token is needed: send Authorization: Bearer <token>\n")
        else:
            response = self._route(method, path, client)
        self._send(response, body=method != "HEAD")

    def _route(self, method: str, path: str, client: str) -> Response:
        allowed = set()
        for routed, pattern, handler in self.files.routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if routed == method or (method == "HEAD" and routed == "GET"):
                headers = {k.lower(): v for k, v in self.headers.items()}
                return handler(Request(method, path, headers, client, match, self._query))
            allowed.add(routed)
        if allowed:
            return Response(405, {"Allow": ", ".join(sorted(allowed | ({"HEAD"} if "GET" in allowed else set())))})
        return _not_found()

    def _send(self, response: Response, body: bool) -> None:
        if response.stream is not None:
            return self._stream(response, body)
        length = response.file[2] if response.file else len(response.body)
        self.send_response(response.status)
        for key, value in response.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if not body:
            return
        try:
            if response.file is None:
                self.wfile.write(response.body)
            else:
                _copy(self.wfile, *response.file)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _stream(self, response: Response, body: bool) -> None:
        self.close_connection = True
        self.send_response(response.status)
        for key, value in {**response.headers, "Cache-Control": "no-cache", "Connection": "close"}.items():
            self.send_header(key, value)
        self.end_headers()
        if not body:
            return
        try:
            for chunk in response.stream:
                self.wfile.write(chunk)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client left
        finally:
            close = getattr(response.stream, "close", None)
            if close is not None:
                close()

    def log_message(self, format, *args):  # noqa: A002 (BaseHTTPRequestHandler's signature)
        log.debug("%s %s", self.client_address[0], format % args)


def _copy(out, path: Path, start: int, length: int) -> None:
    with open(path, "rb") as f:
        f.seek(start)
        left = length
        while left:
            chunk = f.read(min(left, 1 << 16))
            if not chunk:
                break
            out.write(chunk)
            left -= len(chunk)


__all__ = ["RELEASE_PATH", "TOKEN_COOKIE", "FileServer", "Request", "Response", "authorized", "byte_range",
           "cookie_token", "is_loopback"]
