"""Fetch a release's archive over HTTP(S), resuming a cut download, and check it against the signed release.

A download writes into ``<dest>.partial``. Cut part way (a flaky link, a
reboot), the file stays, with the server's ``ETag`` beside it
(``<dest>.partial.etag``); the next call asks only for the rest
(``Range: bytes=N-`` with ``If-Range: <etag>``). A server that answers with
the whole file (``200``: no range support, or the file changed) is read from
the start again. Once ``size`` bytes are in, the size and SHA-256 must be the
signed release's (``bundle.bytes``, ``bundle.sha256``): a mismatch is
:class:`~edgeml_runtime.errors.UpdateRefused` ``bad_archive`` and the partial
file is deleted (it would never become right); else it is fsynced and
renamed to ``dest``. Any other failure (the server down, a cut) is an
:class:`~edgeml_runtime.errors.UpdateError` and keeps the partial file.

The standard library only (``urllib``): nothing to install on a device.

Example (a file already whole is only checked):

>>> import hashlib, pathlib, tempfile
>>> dest = pathlib.Path(tempfile.mkdtemp()) / "bundle.tar.gz"
>>> _ = dest.with_name("bundle.tar.gz.partial").write_bytes(b"12345")
>>> download("http://127.0.0.1:9/unused", dest, sha256=hashlib.sha256(b"12345").hexdigest(), size=5)
0
>>> dest.read_bytes()
b'12345'
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ..errors import UpdateError, UpdateRefused
from ..statefile import _fsync_folder

__all__ = ["download"]

BLOCK = 1 << 16


def download(url: str, dest: str | os.PathLike, *, sha256: str, size: int, token: str | None = None,
             timeout: float = 30, progress: Callable[[int, int], None] | None = None) -> int:
    """Fetch ``url`` into ``dest`` (resuming ``<dest>.partial``), checked; the bytes fetched by this call.

    ``token`` is sent as ``Authorization: Bearer <token>``; ``progress(done,
    size)`` is called after each block.
    """
    dest = Path(dest)
    partial, etag_file = dest.with_name(dest.name + ".partial"), dest.with_name(dest.name + ".partial.etag")
    have = partial.stat().st_size if partial.is_file() else 0
    if have > size:
        _discard(partial, etag_file)
        have = 0
    fetched = 0
    if have < size:
        fetched = _fetch(url, partial, etag_file, have, size, token, timeout, progress)
    _check(partial, etag_file, sha256, size, url)
    os.replace(partial, dest)
    etag_file.unlink(missing_ok=True)
    _fsync_folder(dest.parent)
    return fetched


def _fetch(url, partial: Path, etag_file: Path, have: int, size: int, token, timeout, progress) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if have:
        headers["Range"] = f"bytes={have}-"
        if etag_file.is_file():
            headers["If-Range"] = etag_file.read_text(encoding="utf-8").strip()
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the partial file is not a prefix of what is served now
            _discard(partial, etag_file)
            return _fetch(url, partial, etag_file, 0, size, token, timeout, progress)
        raise UpdateError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}; check the URL and the token, "
                          "the update is tried again later") from None
    except (OSError, http.client.HTTPException) as exc:
        raise UpdateError(f"downloading {url} failed ({exc}); the update is tried again later") from None
    with response:
        start = have if response.status == 206 and _range_start(response) == have else 0
        if response.headers.get("ETag"):
            etag_file.write_text(response.headers["ETag"], encoding="utf-8")
        return _copy(response, partial, start, size, url, progress)


def _range_start(response) -> int | None:
    """The first byte of a 206 answer (``Content-Range: bytes N-M/T``), None if it says none."""
    value = response.headers.get("Content-Range", "")
    first = value.removeprefix("bytes ").split("-", 1)[0]
    return int(first) if first.isdigit() else None


def _copy(response, partial: Path, start: int, size: int, url: str, progress) -> int:
    """Append the response body to ``partial`` from byte ``start`` (0: truncate); the bytes written."""
    fetched = 0
    with open(partial, "r+b" if start and partial.exists() else "wb") as f:
        f.seek(start)
        f.truncate()
        try:
            while block := response.read(min(BLOCK, size - start - fetched + 1)):
                f.write(block)
                fetched += len(block)
                if start + fetched > size:
                    break  # more than the release says: _check refuses it
                if progress is not None:
                    progress(start + fetched, size)
        except (OSError, http.client.HTTPException) as exc:
            _cut(f, url, start + fetched, size, f" ({exc})")
        if start + fetched <= size and getattr(response, "length", None):  # more was announced: a cut
            _cut(f, url, start + fetched, size, "")
        f.flush()
        os.fsync(f.fileno())
    return fetched


def _cut(f, url: str, have: int, size: int, why: str):
    """Keep what came (flushed, fsynced) for the next try, and say so."""
    f.flush()
    os.fsync(f.fileno())
    raise UpdateError(f"downloading {url} was cut after {have:,} of {size:,} bytes{why}; the next try resumes "
                      "from there") from None


def _check(partial: Path, etag_file: Path, sha256: str, size: int, url: str) -> None:
    got = partial.stat().st_size
    h = hashlib.sha256()
    with open(partial, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if got != size or h.hexdigest() != sha256:
        _discard(partial, etag_file)
        raise UpdateRefused("bad_archive", f"{url} is {got:,} bytes with sha256 {h.hexdigest()[:12]}…, but the "
                                           f"release says {size:,} bytes with sha256 {sha256[:12]}…: the archive "
                                           "was changed after the release was signed; make the release again")


def _discard(partial: Path, etag_file: Path) -> None:
    partial.unlink(missing_ok=True)
    etag_file.unlink(missing_ok=True)
