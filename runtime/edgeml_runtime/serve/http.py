"""A small HTTP/1.1 server on asyncio streams: the transport under ``edgeml-runtime serve``.

It takes and returns plain values: a :class:`Request` (method, path, query,
headers, body) in, a :class:`Response` (status, body, content type, extra
headers) out, from one ``async`` handler. What it does itself is what a
server exposed to a network must do and a handler should not think about:

* keep-alive (HTTP/1.1 by default, HTTP/1.0 on request) and pipelined
  requests answered in order; idle connections closed after
  ``keep_alive_seconds``;
* bodies by ``Content-Length`` or ``chunked``, never both (400: a request
  that could be read two ways is how requests are smuggled past a proxy);
  ``Expect: 100-continue`` answered before the body is read;
* limits: a request head over ``max_head_bytes`` is 431, a body over
  ``max_body_bytes`` 413 (unread: the connection is closed), a request that
  has not fully arrived ``request_timeout`` seconds after its first byte 408;
* optional TLS (an :class:`ssl.SSLContext`);
* graceful shutdown (:meth:`HttpServer.shutdown`): stop listening, close the
  idle connections, let requests in flight finish (answered with
  ``Connection: close``) for up to ``grace_seconds``.

Bad requests get an answer, then the connection is closed; nothing a client
sends raises out of the server. The standard library's ``http.server`` and
uvicorn were measured against it (``bench/results/serve.md``).

Example:

>>> parse_head(b"POST /v2/models/demo/infer?x=1 HTTP/1.1\\r\\nHost: a\\r\\nContent-Length: 2\\r\\n\\r\\n")
('POST', '/v2/models/demo/infer', 'x=1', (1, 1), {'host': 'a', 'content-length': '2'})
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import unquote

#: Reason phrases by status code.
REASONS = {s.value: s.phrase for s in HTTPStatus}
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True, slots=True)
class Request:
    """One request: ``path`` percent-decoded, ``query`` as sent, header names in lower case."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes = b""
    peer: str = ""


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False  #: close the connection after this answer


@dataclass(frozen=True)
class HttpLimits:
    """What one request may take; every bound is checked in :class:`HttpServer`."""

    max_head_bytes: int = 16 * 1024
    max_body_bytes: int = 8 * 1024 * 1024
    request_timeout: float = 30.0
    keep_alive_seconds: float = 15.0
    grace_seconds: float = 10.0


class BadRequest(Exception):
    """The request cannot be read; answered with ``status`` and ``message``, then the connection is closed."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def parse_head(head: bytes) -> tuple[str, str, str, tuple[int, int], dict[str, str]]:
    """Method, decoded path, query, version and headers of a request head (ending in a blank line)."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # latin-1 decodes every byte; kept for clarity
        raise BadRequest(400, "the request head is not text") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0] or not set(parts[0].encode()) <= _TOKEN:
        raise BadRequest(400, f"malformed request line {lines[0][:80]!r}; expected METHOD /path HTTP/1.1")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(505, f"{version[:20]!r} is not supported; speak HTTP/1.1")
    if not target.startswith("/"):
        raise BadRequest(400, f"request target {target[:80]!r} must be a path starting with /")
    path, _, query = target.partition("?")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or not set(name.encode()) <= _TOKEN:
            raise BadRequest(400, f"malformed header line {line[:80]!r}")
        key, value = name.lower(), value.strip()
        if key in headers:
            if key in ("content-length", "host", "transfer-encoding", "authorization"):
                raise BadRequest(400, f"header {name!r} is given twice")
            value = f"{headers[key]}, {value}"
        headers[key] = value
    return method, unquote(path), query, (1, int(version[-1])), headers


class HttpServer:
    """Serves ``handler`` on ``host:port`` (port 0: any free port, see :attr:`port`) until :meth:`shutdown`."""

    def __init__(self, handler: Callable[[Request], Awaitable[Response]], *, host: str = "127.0.0.1",
                 port: int = 8080, limits: HttpLimits = HttpLimits(), tls: ssl.SSLContext | None = None,
                 log: logging.Logger | None = None, server_name: str = "edgeml-runtime"):
        self.handler, self.host, self.requested_port, self.limits, self.tls = handler, host, port, limits, tls
        self.log = log or logging.getLogger("edgeml_runtime.serve")
        self._server: asyncio.AbstractServer | None = None
        self._idle: set[asyncio.Task] = set()    # connections waiting for their next request
        self._tasks: set[asyncio.Task] = set()   # every open connection
        self._closing = False
        self.server_name = server_name
        self.port = port

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, self.host, self.requested_port,
                                                  ssl=self.tls, limit=self.limits.max_head_bytes,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def shutdown(self) -> int:
        """Stop listening, close idle connections, wait for requests in flight; the connections left open."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        idle = list(self._idle)
        for task in idle:
            task.cancel()
        busy = [t for t in self._tasks if t not in idle]
        if busy:
            await asyncio.wait(busy, timeout=self.limits.grace_seconds)
        left = [t for t in busy if not t.done()]
        for task in left:
            task.cancel()
        await asyncio.gather(*idle, *left, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        return len(left)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")
        try:
            await self._serve(reader, writer, task, peer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, asyncio.CancelledError):
            pass
        except Exception:  # a bug in a handler must not take the server down: log it, drop the connection
            self.log.exception("serving %s failed", peer)
        finally:
            self._idle.discard(task)
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader, writer, task, peer) -> None:
        limits = self.limits
        while not self._closing:
            # asyncio.timeout, not wait_for: wait_for wraps each await in a task of its own, which cost a fifth of
            # the CPU of answering a health check (118 against 96 µs a request at 16 connections)
            self._idle.add(task)
            try:
                async with asyncio.timeout(limits.keep_alive_seconds):
                    first = await reader.read(1)
            except TimeoutError:
                return
            finally:
                self._idle.discard(task)
            if not first:
                return
            try:
                async with asyncio.timeout(limits.request_timeout):
                    request = await self._read(first, reader, writer, peer)
            except BadRequest as exc:
                await self._write(writer, Response(exc.status, _error(str(exc)), close=True), (1, 1), False)
                return
            except TimeoutError:
                message = f"the request did not arrive within {limits.request_timeout:g} s"
                await self._write(writer, Response(408, _error(message), close=True), (1, 1), False)
                return
            version = request[1]
            response = await self.handler(request[0])
            keep = (not response.close and not self._closing and _keeps_alive(version, request[0].headers))
            await self._write(writer, response, version, keep, request[0].method == "HEAD")
            if not keep:
                return

    async def _read(self, first: bytes, reader: asyncio.StreamReader, writer, peer) -> tuple[Request, tuple]:
        try:
            head = first + await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise BadRequest(431, f"the request head is over {self.limits.max_head_bytes:,} bytes") from None
        except asyncio.IncompleteReadError:
            raise ConnectionResetError from None
        if len(head) > self.limits.max_head_bytes:
            raise BadRequest(431, f"the request head is over {self.limits.max_head_bytes:,} bytes")
        method, path, query, version, headers = parse_head(head)
        body = await self._body(reader, writer, headers, version)
        return Request(method, path, query, headers, body, peer), version

    async def _body(self, reader, writer, headers, version) -> bytes:
        length, chunked = headers.get("content-length"), headers.get("transfer-encoding")
        if length is not None and chunked is not None:
            raise BadRequest(400, "the request has both Content-Length and Transfer-Encoding; send one")
        limit = self.limits.max_body_bytes
        if chunked is not None:
            if chunked.lower() != "chunked":
                raise BadRequest(501, f"Transfer-Encoding {chunked[:40]!r} is not supported; send chunked or "
                                      "Content-Length")
            await self._continue(writer, headers, version)
            return await _chunks(reader, limit)
        if length is None:
            return b""
        if not length.isdigit():
            raise BadRequest(400, f"Content-Length {length[:40]!r} is not a number of bytes")
        n = int(length)
        if n > limit:
            raise BadRequest(413, f"the body has {n:,} bytes, over the limit of {limit:,} (max_body_bytes); send "
                                  "fewer rows a request")
        await self._continue(writer, headers, version)
        return await reader.readexactly(n) if n else b""

    @staticmethod
    async def _continue(writer, headers, version) -> None:
        if version >= (1, 1) and headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()

    async def _write(self, writer, response: Response, version, keep: bool, head_only: bool = False) -> None:
        body = response.body
        lines = [f"HTTP/{version[0]}.{version[1]} {response.status} {REASONS.get(response.status, 'Unknown')}",
                 f"Content-Type: {response.content_type}", f"Content-Length: {len(body)}",
                 "Server: " + self.server_name]
        lines += [f"{k}: {v}" for k, v in response.headers]
        if not keep:
            lines.append("Connection: close")
        elif version == (1, 0):
            lines.append("Connection: keep-alive")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body))
        if writer.transport.get_write_buffer_size() > 64 * 1024 or not keep:
            await writer.drain()


def _keeps_alive(version, headers) -> bool:
    connection = headers.get("connection", "").lower()
    if version == (1, 0):
        return "keep-alive" in connection
    return "close" not in connection


async def _chunks(reader: asyncio.StreamReader, limit: int) -> bytes:
    """A chunked body, at most ``limit`` bytes (trailers read and dropped)."""
    parts, total = [], 0
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BadRequest(400, f"malformed chunk size {size_text[:20]!r}") from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return b"".join(parts)
        total += size
        if total > limit:
            raise BadRequest(413, f"the body is over the limit of {limit:,} bytes (max_body_bytes); send fewer "
                                  "rows a request")
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise BadRequest(400, "a chunk does not end with CRLF")


def _error(message: str) -> bytes:
    import json

    return json.dumps({"error": message}).encode()


__all__ = ["BadRequest", "HttpLimits", "HttpServer", "Request", "Response", "parse_head"]
