"""The dashboard: one page of plain JavaScript, CSS and inline SVG over the JSON API, on the controller's server.

:func:`mount` adds to a :class:`~.files.FileServer` (``edgeml fleet run
--dashboard HOST:PORT``):

==============================  ===========================================================================
``GET /``                       the page (``dashboard/index.html``)
``GET /?token=T``               sets the token cookie (``HttpOnly; SameSite=Strict; Path=/``) and answers 303
                                to ``/``: a browser off loopback sends the cookie with every request, the event
                                stream's included (an ``EventSource`` cannot send an ``Authorization`` header)
``GET /dashboard/<name>``       ``index.html``, ``app.js``, ``style.css``
==============================  ===========================================================================

The files ship in the package (``edgeml/fleet/dashboard/``, read with
:mod:`importlib.resources`); nothing is fetched from elsewhere, so the page
works with no internet access, and its Content-Security-Policy lets it load
only from this server. Every answer is ``Cache-Control: no-cache``: the
browser asks again each time, so after an upgrade it has the new files.
What the page draws, and when, is in ``app.js``; the data is the JSON API's
(:mod:`.api`), fetched again when the event stream says the store moved.
"""

from __future__ import annotations

import re
from importlib import resources

from .files import TOKEN_COOKIE, Request, Response

#: The dashboard's files and their types.
FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
         "style.css": "text/css; charset=utf-8"}
#: Only this server: no inline script, no other origin (data: for the empty favicon).
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
          "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
#: What a cookie's value may hold (RFC 6265 cookie-octet): a token outside it cannot be kept in the cookie.
_COOKIE_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]{1,4096}")


def mount(server) -> None:
    """``GET /`` (and ``/?token=``) and ``GET /dashboard/<name>`` on ``server``."""
    server.token_paths.add("/")
    server.route("GET", r"/", index)
    server.route("GET", r"/dashboard/(?P<name>{})".format("|".join(map(re.escape, FILES))), static)


def index(request: Request) -> Response:
    """The page; with ``?token=T`` (checked by the server already when the client is off loopback) the cookie
    and a redirect to ``/``, so the token leaves the address bar."""
    given = request.query.get("token")
    if given is None:
        return _file("index.html")
    if not _COOKIE_VALUE.fullmatch(given):
        return Response(400, {"Content-Type": "text/plain; charset=utf-8"},
                        b"the token holds characters a cookie cannot keep (spaces, quotes, commas, semicolons or "
                        b"backslashes); give the server a token without them (--http-token-file)\n")
    return Response(303, {"Location": "/", "Cache-Control": "no-store",
                          "Set-Cookie": f"{TOKEN_COOKIE}={given}; HttpOnly; SameSite=Strict; Path=/"})


def static(request: Request) -> Response:
    return _file(request.match["name"])


def read(name: str) -> bytes:
    """The dashboard's file ``name`` (one of :data:`FILES`), from the installed package."""
    return resources.files("edgeml.fleet").joinpath("dashboard", name).read_bytes()


def _file(name: str) -> Response:
    return Response(200, {"Content-Type": FILES[name], "Cache-Control": "no-cache", "Content-Security-Policy": POLICY,
                          "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}, read(name))


__all__ = ["FILES", "mount", "read"]
