"""The checks of one setting's value for :mod:`.settings`: its type and bounds, a duration, an HTTP address, a
token file. Each refusal is a :class:`~edgeml.errors.FleetError` naming the key, where the value came from, and
the fix."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from edgeml.errors import FleetError
from edgeml_runtime.protocol.topics import level_problem
from edgeml_runtime.tomlfile import exposure

if TYPE_CHECKING:
    from .settings import Key


def duration(value, key: str, where: str, fix: str) -> float:
    """Seconds from a number or a text such as "30s", "10m", "1h", "1d"; FleetError naming the key.

    >>> duration("1d", "every", "fleet.toml", ""), duration(90, "timeout", "fleet.toml", "")
    (86400.0, 90.0)
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(value) if isinstance(value, str) else None
    if not match:
        raise FleetError(f"{key} = {value!r} (from {where}): not a duration; give seconds (30) or text such as "
                         f"\"30s\", \"10m\", \"1h\", \"1d\"; {fix}")
    return float(match[1]) * _UNIT[match[2]]


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT = {None: 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse(spec: Key, key: str, text: str, where: str):
    """An environment variable's text as the key's type (a list: comma-separated)."""
    if spec.duration:
        return duration(text, key, where, spec.fix)
    if spec.kind is list:
        return [part.strip() for part in text.split(",") if part.strip()]
    if spec.kind is str:
        return text
    try:
        return spec.kind(text)
    except ValueError:
        raise FleetError(f"{key} = {text!r} (from {where}) is not {_KIND[spec.kind]}; {spec.fix}") from None


_KIND = {str: "a text", int: "a whole number", float: "a number", list: "a list"}


def check(spec: Key, key: str, value, where: str):
    """``value`` of the key's type and within its bounds; FleetError naming the key, where it came from, the fix."""
    if spec.duration:
        value = duration(value, key, where, spec.fix)
    shown = f"{key} = {value!r} (from {where})"
    ok = isinstance(value, spec.kind) and not isinstance(value, bool)
    if spec.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if spec.kind is list and isinstance(value, list | tuple):
        value = tuple(value)
        ok = all(isinstance(v, str) for v in value)
    if not ok:
        raise FleetError(f"{shown}: must be {_KIND[spec.kind]}; {spec.fix}")
    if spec.low is not None and not spec.low <= value <= spec.high:
        what = "a whole number" if spec.kind is int else "a number"
        raise FleetError(f"{shown}: must be {what} from {spec.low:g} to {spec.high:g}; {spec.fix}")
    names = value if spec.kind is list else (value,) if key in ("group", "holder") else ()
    for name in names:
        if level_problem(name):
            raise FleetError(f"{shown}: {name!r} {level_problem(name)}; {spec.fix}")
    if key == "client_id" and (not value or len(value) > 128 or any(ord(c) < 33 for c in value)):
        raise FleetError(f"{shown}: must be 1 to 128 printable characters without spaces; {spec.fix}")
    if key in ("password_file", "ca_file", "cert_file", "key_file", "http_token_file") and not Path(value).is_file():
        raise FleetError(f"{shown}: no such file; give the path of an existing file")
    return value


def http_address(value: str, where: str, key: str = "http") -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for an IPv6 address) as (host, port); FleetError naming the key and where it
    came from.

    >>> http_address("127.0.0.1:8080", "flag --http"), http_address("[::1]:0", "flag --http")
    (('127.0.0.1', 8080), ('::1', 0))
    >>> http_address("8080", "flag --http")
    Traceback (most recent call last):
    ...
    edgeml.errors.FleetError: http = '8080' (from flag --http): not HOST:PORT; give e.g. 127.0.0.1:8080, or \
0.0.0.0:8080 with --http-token-file
    """
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([A-Za-z0-9.-]+):(\d{1,5})", value.strip())
    port = match and int(match[2] or match[4])
    if not match or port > 65535:
        raise FleetError(f"{key} = {value!r} (from {where}): not HOST:PORT; give e.g. 127.0.0.1:8080, or "
                         "0.0.0.0:8080 with --http-token-file")
    return match[1] or match[3], port


def served_addresses(http: str | None, dashboard: str | None, sources: dict) -> tuple:
    """(the HTTP server's address, the dashboard's), each (host, port) or None: the dashboard is served by the
    controller's one HTTP server, so with both given they must be the same address (one port, one rule of who may
    read it).

    >>> served_addresses(None, "127.0.0.1:8080", {"dashboard": "flag --dashboard"})
    (None, ('127.0.0.1', 8080))
    >>> served_addresses("0.0.0.0:8080", "127.0.0.1:9090", {"http": "flag --http", "dashboard": "flag --dashboard"})
    Traceback (most recent call last):
    ...
    edgeml.errors.FleetError: http = '0.0.0.0:8080' (from flag --http) and dashboard = '127.0.0.1:9090' (from flag \
--dashboard) differ: the dashboard is served by the controller's HTTP server, on one port with one rule of who may \
read it; give both the same HOST:PORT, or only --dashboard
    """
    served = http and http_address(http, sources["http"])
    shown = dashboard and http_address(dashboard, sources["dashboard"], "dashboard")
    if served and shown and served != shown:
        raise FleetError(f"http = {http!r} (from {sources['http']}) and dashboard = {dashboard!r} (from "
                         f"{sources['dashboard']}) differ: the dashboard is served by the controller's HTTP server, "
                         "on one port with one rule of who may read it; give both the same HOST:PORT, or only "
                         "--dashboard")
    return served or None, shown or None


def token(path: str | None, sources: dict) -> str | None:
    """The release server's bearer token: the first line of ``http_token_file``, which must be private."""
    if path is None:
        return None
    where = sources["http_token_file"]
    if exposure(path):
        raise FleetError(f"http_token_file = {path!r} (from {where}) {exposure(path)}")
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise FleetError(f"http_token_file = {path!r} (from {where}) cannot be read ({exc})") from None
    if len(token) < 16 or any(ord(c) < 33 for c in token):
        raise FleetError(f"http_token_file = {path!r} (from {where}) must hold a token of at least 16 printable "
                         "characters, no spaces; e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return token
