"""Helpers of the serve tests: a server of the tests' own on a free port, and a plain HTTP client (http.client)."""

from __future__ import annotations

import contextlib
import csv
import http.client
import json
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from edgeml_runtime.serve.server import Server
from edgeml_runtime.settings import resolve_settings


def serve_settings(**flags):
    return resolve_settings({"port": 0, "log_level": "warning", **flags}, command="serve", environ={})


@contextlib.contextmanager
def served(bundle, **flags):
    """A :class:`Server` on its own thread (port 0), stopped at the end."""
    server = Server(bundle, serve_settings(**flags))
    server.start_in_thread()
    try:
        yield server
    finally:
        server.join(60)


@contextlib.contextmanager
def connection(url: str, context: ssl.SSLContext | None = None, timeout: float = 30.0):
    parts = urlsplit(url)
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        yield conn
    finally:
        conn.close()


def call(url: str, method: str, path: str, body=None, headers=None, *, context=None, conn=None):
    """``(status, headers, body)``: the body parsed as JSON when it is JSON, else text."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
        headers = {"Content-Type": "application/json", **(headers or {})}
    with contextlib.ExitStack() as stack:
        if conn is None:
            conn = stack.enter_context(connection(url, context))
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        raw = r.read()
        kind = r.getheader("Content-Type", "")
        answer = json.loads(raw) if kind.startswith("application/json") and raw else raw.decode()
        return r.status, dict(r.getheaders()), answer


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
