"""Read a bundle: ``manifest.json`` and its files, confined to the bundle, bounded, each read once and hashed.

A bundle is a folder (or a ``.tar.gz`` of one) written by ``edgeml build``.
Whoever can write a bundle decides what a device runs, so the loader trusts
nothing in it beyond what the manifest's hashes vouch for:

* **confined**: every file the manifest names is a plain name in the bundle
  folder (:data:`~edgeml_runtime.manifest.FILE_NAME`: no ``/``, no ``..``),
  opened relative to the folder without following a symbolic link, and only
  if it is a regular file. Nothing outside the bundle is opened, so no error
  can describe a file outside it; a mismatch names only what the manifest
  expected. A ``.tar.gz`` may hold regular files and folders only, one level
  deep, and is read into memory: it is never unpacked to disk, so a killed
  process leaves nothing behind;
* **bounded** (:class:`Limits`): the manifest's size and nesting depth, each
  file's size, an archive's unpacked size and member count (checked from each
  member's header before its data is read, and on the decompressed stream
  itself);
* **complete and exact**: every file in the bundle is listed in the manifest,
  and every listed file is hashed there; the bytes hashed are the bytes the
  engine loads (:meth:`Bundle.read` returns them; engines take bytes), so a
  file swapped after the check is never run;
* **finished**: a draft manifest (a build still verifying, or killed while it
  did) and a build's staging folder (``.<name>.partial``) are refused.

Example (a folder with only a manifest is not a bundle yet):

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "manifest.json").write_text('{"format_version": 3, "name": ' + '[' * 40 + ']' * 40 + '}')
>>> with open_bundle(folder) as b:
...     b.manifest()  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
edgeml_runtime.errors.BundleError: .../manifest.json nests more than 16 levels deep, the most a manifest may; ...
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import re
import stat
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import BundleError
from .manifest import Artifact, Manifest
from .sections import FILE_NAME

MANIFEST = "manifest.json"
#: A build's staging folder (``edgeml.bundle.writer``): never a bundle, whatever it holds.
STAGING = re.compile(r"\..+\.partial")


@dataclass(frozen=True)
class Limits:
    """How big a bundle may be. The defaults fit any model a small device runs, with room to spare."""

    manifest_bytes: int = 8 << 20  #: ``manifest.json`` (a long search log is ~1 MiB)
    depth: int = 16  #: nesting of ``manifest.json`` (a bundle's is 6)
    file_bytes: int = 1 << 30  #: one file of the bundle
    archive_bytes: int = 1 << 30  #: every member of a ``.tar.gz``, unpacked
    members: int = 64  #: members of a ``.tar.gz`` (a bundle has about ten)


LIMITS = Limits()


def sha256_file(path: os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Bundle:
    """An opened bundle: read its manifest and files through this, never through paths.

    ``source`` is what was opened (a folder or a ``.tar.gz``). Get one from
    :func:`open_bundle`.
    """

    def __init__(self, source: Path, files: _Folder | _Archive, limits: Limits):
        self.source, self._files, self.limits = source, files, limits
        self._manifest: dict[bool, Manifest] = {}

    def names(self) -> list[str]:
        """The files the bundle holds (folders included), sorted."""
        return sorted(self._files.names())

    def read(self, name: str, *, size: int, sha256: str, what: str = "") -> bytes:
        """The bytes of ``name``, after checking they are ``size`` bytes with this SHA-256; read once.

        A refusal names only what the manifest expected: the file may be a
        hard link to something its reader must not learn about.
        """
        where = self._where(name)
        FILE_NAME.read(name, where)  # the manifest's rule, again: what reaches the folder is a plain name
        if size > self.limits.file_bytes:
            raise BundleError(f"{where}: the manifest says it is {size:,} bytes, more than a bundle's file may be "
                              f"({self.limits.file_bytes:,}); rebuild the bundle")
        try:
            data = self._files.read(name, size, where)
        except _SizeDiffers:
            data = b""  # not read: the size alone tells
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
            raise BundleError(f"{where}{what} does not match the manifest (expected {size:,} bytes, sha256 "
                              f"{sha256[:12]}…): it was changed or damaged after the build; copy the bundle again")
        return data

    def artifact(self, artifact: Artifact) -> bytes:
        """An artifact's bytes, checked against the manifest: what its engine is handed. Its side files (an
        ``.ort`` file's operators config) are checked too, though no engine reads them."""
        for side in (artifact.files or {}).values():
            self.read(side.path, size=side.bytes, sha256=side.sha256, what=f" (a side file of {artifact.path})")
        return self.read(artifact.path, size=artifact.bytes, sha256=artifact.sha256)

    def manifest_json(self) -> dict:
        """``manifest.json`` as plain JSON (bounded in size and depth, valid UTF-8, no NaN), not yet typed."""
        where = self._where(MANIFEST)
        text = self._files.manifest(where, self.limits.manifest_bytes)
        try:
            data = json.loads(text.decode("utf-8"), parse_constant=_no_constant)
        except UnicodeDecodeError as exc:
            raise BundleError(f"{where} is not UTF-8 text (byte {exc.start}); the bundle is damaged, copy it "
                              "again") from None
        except RecursionError:
            raise BundleError(f"{where} nests too deeply to read; a manifest nests at most {self.limits.depth} "
                              "levels. Rebuild the bundle") from None
        except ValueError as exc:
            raise BundleError(f"{where} is not valid JSON ({exc}); the bundle is damaged, copy it again") from None
        _check_tree(data, text, where, self.limits.depth)
        if not isinstance(data, dict):
            raise BundleError(f"{where} does not hold a JSON object; rebuild the bundle")
        return data

    def manifest(self, *, draft: bool = False) -> Manifest:
        """The typed manifest (:class:`~edgeml_runtime.manifest.Manifest`), after checking that the bundle
        holds nothing it does not list. ``draft`` is for the build alone (see :func:`open_bundle`)."""
        if draft not in self._manifest:
            manifest = Manifest.from_dict(self.manifest_json(), where=self._where(MANIFEST), draft=draft)
            self._check_listed(manifest)
            self._manifest[draft] = manifest
        return self._manifest[draft]

    def _check_listed(self, manifest: Manifest) -> None:
        unlisted = sorted(set(self._files.names()) - {MANIFEST, *manifest.files()})
        if unlisted:
            raise BundleError(f"{self._where(unlisted[0])} is in the bundle but not listed in its manifest"
                              + (f" (nor {len(unlisted) - 1} more)" if len(unlisted) > 1 else "")
                              + ": it was added after the build. Remove it, or copy the bundle again")

    def _where(self, name: str) -> str:
        return f"{self.source}/{name}" if isinstance(self._files, _Folder) else f"{self.source}: {name}"


@contextmanager
def open_bundle(path: os.PathLike | Bundle, *, draft: bool = False,
                limits: Limits = LIMITS) -> Iterator[Bundle]:
    """The :class:`Bundle` at ``path``: a folder, or a ``.tar.gz`` read into memory (never unpacked to disk).

    An open :class:`Bundle` is passed through. ``draft`` lets a build open its
    own staging folder while it verifies; nothing else should.
    """
    if isinstance(path, Bundle):
        yield path
        return
    p = Path(path)
    if p.is_dir():
        if STAGING.fullmatch(p.resolve().name) and not draft:
            raise BundleError(f"{p} is the staging folder of an edgeml build (a name ending in .partial): that build "
                              "did not finish, or is still running. Use the bundle it moves into place, or rebuild")
        folder = _Folder(p)
        try:
            yield Bundle(p, folder, limits)
        finally:
            folder.close()
        return
    if not (p.is_file() and p.name.endswith((".tar.gz", ".tgz"))):
        raise BundleError(f"{p} does not exist or is not a bundle folder or .tar.gz")
    yield Bundle(p, _Archive(p, limits), limits)


def read_manifest_json(bundle: os.PathLike | Bundle) -> dict:
    """The bundle's ``manifest.json`` as plain JSON, unknown keys included: a :class:`BundleError` if the file is
    missing, too large or deep, not JSON, or not an object."""
    with open_bundle(bundle) as b:
        return b.manifest_json()


def read_manifest(bundle: os.PathLike | Bundle, *, draft: bool = False) -> Manifest:
    """The bundle's ``manifest.json``, validated key by key (:class:`~edgeml_runtime.manifest.Manifest`)."""
    with open_bundle(bundle, draft=draft) as b:
        return b.manifest(draft=draft)


# --- the manifest as JSON -------------------------------------------------------------------------


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def _check_tree(data, text: bytes, where: str, depth: int) -> None:
    """Refuse nesting deeper than ``depth`` and text that is not Unicode (a lone surrogate such as ``"\\ud800"``
    cannot be printed or encoded). ``text`` is the JSON ``data`` was parsed from: both checks read it at C speed
    (its brackets outside strings; its escapes), so a manifest is not walked value by value."""
    brackets = np.frombuffer(_STRING.sub(b"", text), dtype=np.uint8)
    steps = (np.isin(brackets, (0x5B, 0x7B)).astype(np.int8) - np.isin(brackets, (0x5D, 0x7D)))
    if len(steps) and int(np.cumsum(steps, dtype=np.int64).max()) > depth:
        raise BundleError(f"{where} nests more than {depth} levels deep, the most a manifest may; rebuild the "
                          "bundle")
    if not _SURROGATE.search(text):
        return  # no escaped surrogate, and UTF-8 decoding lets none through
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str):
            _check_text(value, where)


def _check_text(value: str, where: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BundleError(f"{where} holds the text {value[:40]!r}, with a lone surrogate (\\ud800-\\udfff) that "
                          "is not a character; rebuild the bundle") from None


# --- a folder -----------------------------------------------------------------------------------


class _Folder:
    """A bundle folder, held open: every file is opened relative to it, never through a link."""

    def __init__(self, root: Path):
        self.root = root
        try:
            self.fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise BundleError(f"{root} cannot be opened as a bundle folder ({exc.strerror})") from None

    def close(self) -> None:
        os.close(self.fd)

    def names(self) -> list[str]:
        return os.listdir(self.fd)

    def manifest(self, where: str, limit: int) -> bytes:
        try:
            return self._read(MANIFEST, limit, where, exact=False)
        except FileNotFoundError:
            raise BundleError(f"{self.root} is not a bundle: it has no {MANIFEST}. Pass the folder that `edgeml "
                              "build` wrote, or its .tar.gz") from None

    def read(self, name: str, size: int, where: str) -> bytes:
        try:
            return self._read(name, size, where, exact=True)
        except FileNotFoundError:
            raise BundleError(f"{where} is listed in the manifest but missing; copy the whole bundle again") from None

    def _read(self, name: str, limit: int, where: str, *, exact: bool) -> bytes:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise FileNotFoundError(name) from None
            if exc.errno == errno.ELOOP:
                raise BundleError(f"{where} is a symbolic link; a bundle holds its files itself. Copy the bundle "
                                  "with its files (cp -rL), or rebuild it") from None
            raise BundleError(f"{where} cannot be opened ({exc.strerror})") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise BundleError(f"{where} is not a regular file; a bundle holds regular files only")
            if exact and info.st_size != limit:
                raise _SizeDiffers(name)
            if info.st_size > limit:
                raise BundleError(f"{where} is larger than {limit:,} bytes, the most a manifest may be; rebuild "
                                  "the bundle")
            return _read_fd(fd, limit)
        finally:
            os.close(fd)


class _SizeDiffers(Exception):
    """Internal: a file is not the size the manifest says (the caller words the refusal)."""


def _read_fd(fd: int, limit: int) -> bytes:
    """At most ``limit`` bytes (one more shows that the file grew while being read)."""
    parts, left = [], limit + 1
    while left > 0:
        block = os.read(fd, min(left, 1 << 20))
        if not block:
            break
        parts.append(block)
        left -= len(block)
    return b"".join(parts)


# --- a .tar.gz ------------------------------------------------------------------------------------


class _Archive:
    """A ``.tar.gz`` bundle, read once into memory: its regular files by name, within :class:`Limits`."""

    def __init__(self, path: Path, limits: Limits):
        self.path = path
        try:
            self.files = _read_archive(path, limits)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise BundleError(f"{path} is not a readable bundle archive: it is truncated or damaged ({exc}). Copy "
                              "it again, or rebuild the bundle") from None

    def names(self) -> list[str]:
        return list(self.files)

    def manifest(self, where: str, limit: int) -> bytes:
        if MANIFEST not in self.files:
            raise BundleError(f"{self.path} is not a bundle: it holds no {MANIFEST} (at its top or in one folder)")
        if len(self.files[MANIFEST]) > limit:
            raise BundleError(f"{where} is larger than {limit:,} bytes, the most a manifest may be; rebuild the bundle")
        return self.files[MANIFEST]

    def read(self, name: str, size: int, where: str) -> bytes:
        if name not in self.files:
            raise BundleError(f"{where} is listed in the manifest but not in the archive; copy it again")
        return self.files[name]


class _Bounded:
    """A file object that refuses to give more than ``limit`` bytes: the decompressed stream of an archive,
    so that no header (a tar pax header may claim any size) makes the reader take more."""

    def __init__(self, raw, budget: int, limit: int, path: Path):
        self.raw, self.left, self.limit, self.path = raw, budget, limit, path

    def read(self, n: int = -1) -> bytes:
        want = self.left + 1 if n is None or n < 0 else min(n, self.left + 1)
        data = self.raw.read(want)
        self.left -= len(data)
        if self.left < 0:
            raise BundleError(f"{self.path} unpacks to more than {self.limit:,} bytes, the most a bundle archive may; "
                              "it is not a bundle edgeml wrote")
        return data


def _read_archive(path: Path, limits: Limits) -> dict[str, bytes]:
    """Every regular file of the archive by name: members checked from their headers before their data is read."""
    files: dict[str, bytes] = {}
    # Headers are 512-byte blocks, pax records too: allow for them beyond the members' data.
    budget = limits.archive_bytes + 1024 * (limits.members + 2) + (64 << 10)
    with open(path, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as gz:
        stream = _Bounded(gz, budget, limits.archive_bytes, path)
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            _read_members(path, tar, limits, files)
        while stream.read(1 << 16):  # to the end of the gzip stream, so that its checksum is checked too
            pass
    return files


def _read_members(path: Path, tar: tarfile.TarFile, limits: Limits, files: dict[str, bytes]) -> None:
    folders: set[str] = set()  # where the files are: "" at the top, else the one folder's name
    total = members = 0
    for member in tar:
        members += 1
        if members > limits.members:
            raise BundleError(f"{path} holds more than {limits.members} members; a bundle holds about ten")
        parts = _member_parts(path, member)
        if member.isdir():
            continue
        if member.size > limits.file_bytes or total + member.size > limits.archive_bytes:
            raise BundleError(f"{path} unpacks to more than {min(limits.file_bytes, limits.archive_bytes):,} "
                              "bytes, the most a bundle archive may; it is not a bundle edgeml wrote")
        total += member.size
        folders.add(parts[0] if len(parts) == 2 else "")
        if len(folders) > 1:
            raise BundleError(f"{path} holds files in more than one folder; a bundle archive holds one")
        if parts[-1] in files:
            raise BundleError(f"{path} holds {parts[-1]} twice; it is not a bundle edgeml wrote")
        data = tar.extractfile(member).read()
        if len(data) != member.size:
            raise EOFError(f"{member.name} ends early")
        files[parts[-1]] = data


def _member_parts(path: Path, member: tarfile.TarInfo) -> list[str]:
    """``member``'s name as its parts, refusing anything but a regular file or folder at most one folder deep."""
    parts = [p for p in member.name.split("/") if p not in ("", ".")]
    if not (member.isfile() or member.isdir()) or member.issparse():
        kind = "a link" if member.issym() or member.islnk() else "not a regular file or folder"
        raise BundleError(f"{path}: member {member.name!r} is {kind}; a bundle archive holds regular files only")
    if member.name.startswith("/") or ".." in parts or not parts or len(parts) > (1 if member.isdir() else 2):
        raise BundleError(f"{path}: member {member.name!r} is not a plain file of the bundle (absolute, with '..', "
                          "or more than one folder deep); it is not a bundle edgeml wrote")
    return parts


__all__ = ["LIMITS", "MANIFEST", "STAGING", "Bundle", "Limits", "open_bundle", "read_manifest", "read_manifest_json",
           "sha256_file"]
