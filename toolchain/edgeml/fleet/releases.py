"""Signed releases: a bundle, a version number of its fleet, a signature, and the folder devices fetch them from.

:func:`make_release` keeps the bundle in the registry (verified once, its
archive kept; a bundle registered before is reused, and an identity names
one kept already), takes the fleet's next release version from
``release_counters`` and signs ``release.json``
(:func:`edgeml_runtime.update.metadata.make_release`) with the newest
release key of the keys folder (:func:`.keys.signer`). The release folder
``<releases_dir>/<fleet>/<version>/`` holds ``release.json``, ``root.json``
and ``bundle.tar.gz`` (the registry's archive, byte for byte: its SHA-256 and
size are the release's); it is written as a temporary folder and renamed, so
a folder of that name is always whole.

Versions only grow: the counter is read and set in the transaction that
inserts the ``releases`` row, under the lock the registry takes for fleets
(SQLite's write lock; a PostgreSQL advisory lock per fleet), so two releases
at once never share a number, and a number is never handed out again even if
its row is lost. A folder left by a release whose transaction did not commit
(its number was never handed out) is replaced. A rollback is a new, higher
release of an older bundle: ``make_release(store, identity=older, ...)``.

Example (the command):

    edgeml keys init keys/
    edgeml release dist/demo-1 --fleet plant-a --keys keys/ --releases releases/ --store sqlite:///fleet.db
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from edgeml.errors import FleetError

from . import schema as t

ARCHIVE, RELEASE_JSON, ROOT_JSON = "bundle.tar.gz", "release.json", "root.json"
FILES = (RELEASE_JSON, ROOT_JSON, ARCHIVE)
DAY = 86400.0
_IDENTITY = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ReleaseRecord:
    """A ``releases`` row: its fleet, version, cohort, bundle identity, release folder and signed envelope."""

    fleet: str
    version: int
    cohort: str
    identity: str
    path: str
    document: dict

    @property
    def signed(self) -> dict:
        return self.document["signed"]

    def to_dict(self) -> dict:
        return {"fleet": self.fleet, "version": self.version, "cohort": self.cohort, "identity": self.identity,
                "path": self.path, "document": self.document}


def make_release(store, bundle_or_identity: str | os.PathLike | None = None, *, fleet: str, cohort: str = "",
                 keys_dir: str | os.PathLike | None = None, releases_dir: str | os.PathLike,
                 health: Mapping | None = None, expires_days: float = 30, now: float | None = None,
                 identity: str | None = None, keys: str | os.PathLike | None = None) -> ReleaseRecord:
    """Sign the next release of ``fleet`` (and ``cohort``, ``""``: the whole fleet) for a bundle (a folder or
    ``.tar.gz``, or the identity of one the registry keeps; ``identity=`` says the same) and write its folder.

    ``health`` keys left out take :class:`edgeml_runtime.update.metadata.Health`'s defaults; ``keys`` is another
    name of ``keys_dir``. :class:`FleetError` (nothing stored) if the bundle, the keys or a value is wrong."""
    from .keys import signer

    _check_name(fleet, "fleet")
    if cohort:
        _check_name(cohort, "cohort")
    if not 0 < expires_days <= 3650:
        raise FleetError(f"expires_days is {expires_days!r}: give a number of days above 0 and at most 3650")
    keys_dir = keys_dir if keys_dir is not None else keys
    if keys_dir is None or (bundle_or_identity is None) == (identity is None):
        raise FleetError("make_release needs keys_dir and one bundle: a path or an identity")
    chosen = _identity(store, bundle_or_identity if identity is None else identity)
    key = signer(keys_dir)
    now = time.time() if now is None else now
    with tempfile.TemporaryDirectory(prefix="edgeml-release-") as tmp:
        archive = _archive(store, chosen, Path(tmp))
        return _commit(store, fleet, cohort, chosen, archive, key, Path(releases_dir),
                       dict(health or {}), now, now + expires_days * DAY)


def get(store, fleet: str, version: int) -> ReleaseRecord:
    """Release ``version`` of ``fleet``; :class:`FleetError` if there is none."""
    found = _select(store, fleet, t.releases.c.version == version)
    if not found:
        raise FleetError(f"fleet {fleet!r} has no release {version}; list them with edgeml release --help "
                         f"(releases.list_releases)")
    return found[0]


def latest(store, fleet: str) -> ReleaseRecord | None:
    """The highest release of ``fleet``; None before its first."""
    found = _select(store, fleet, sa.true(), newest=True)
    return found[0] if found else None


def list_releases(store, fleet: str) -> list[ReleaseRecord]:
    """Every release of ``fleet``, oldest first."""
    return _select(store, fleet, sa.true())


def folder_of(releases_dir: str | os.PathLike, fleet: str, version: int) -> Path:
    """Where release ``version`` of ``fleet`` lives under ``releases_dir``."""
    return Path(releases_dir) / fleet / str(int(version))


# -- the steps -----------------------------------------------------------------------------------

def _check_name(value, what: str) -> None:
    from edgeml_runtime.protocol.topics import level_problem

    problem = level_problem(value)
    if problem:
        raise FleetError(f"{what} {value!r} {problem}; a {what} name is letters, digits, '.', '_' and '-'")


def _identity(store, bundle) -> str:
    """The identity of ``bundle``: a kept identity as is, a path verified and kept (:func:`.registry.add_bundle`)."""
    if isinstance(bundle, str) and _IDENTITY.fullmatch(bundle) and not Path(bundle).exists():
        return bundle
    from .registry import add_bundle

    return add_bundle(store, bundle).identity


def _archive(store, identity: str, tmp: Path) -> Path:
    from .versions import archive_path

    return archive_path(store, identity, tmp)


def _bundle_entry(store, identity: str, archive: Path) -> dict:
    b = t.bundles
    with store._read() as conn:
        row = conn.execute(sa.select(b.c.name, b.c.version).where(b.c.bundle_sha256 == identity)).first()
    if row is None:
        raise FleetError(f"the registry keeps no bundle {identity[:12]}…; add it with edgeml registry add BUNDLE")
    data = archive.read_bytes()
    return {"identity": identity, "name": row.name, "version": row.version, "archive": ARCHIVE,
            "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _lock(conn, fleet: str) -> None:
    """The fleet's release lock to the end of the transaction: SQLite's write transaction holds the whole file
    already; PostgreSQL takes an advisory lock keyed by the fleet."""
    if conn.dialect.name == "postgresql":
        digest = hashlib.sha256(f"edgeml-release\0{fleet}".encode()).digest()
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                     {"key": int.from_bytes(digest[:8], "big", signed=True)})


def _next_version(store, conn, fleet: str) -> int:
    c, r = t.release_counters, t.releases
    last = conn.execute(sa.select(c.c.last).where(c.c.fleet == fleet)).scalar() or 0
    highest = conn.execute(sa.select(sa.func.max(r.c.version)).where(r.c.fleet == fleet)).scalar() or 0
    version = max(last, highest) + 1
    stmt = store._insert(c).values(fleet=fleet, last=version)
    conn.execute(stmt.on_conflict_do_update(index_elements=[c.c.fleet], set_={"last": version}))
    return version


def _commit(store, fleet, cohort, identity, archive: Path, key, releases_dir: Path, health, now, expires):
    from edgeml_runtime.errors import UpdateRefused
    from edgeml_runtime.update import metadata, signing

    bundle = _bundle_entry(store, identity, archive)
    with store._write() as conn:
        _lock(conn, fleet)
        version = _next_version(store, conn, fleet)
        try:
            signed = metadata.make_release(fleet, cohort, version, bundle, health, key.root["signed"]["version"],
                                           now, expires)
        except UpdateRefused as exc:
            raise FleetError(f"the release cannot be made: {exc}") from None
        envelope = signing.sign(signed, key.private)
        folder = _write_folder(releases_dir, fleet, version, envelope, key.root, archive)
        conn.execute(sa.insert(t.releases).values(
            fleet=fleet, version=version, cohort=cohort, bundle_sha256=identity, created=now, expires=expires,
            keyid=key.keyid, path=str(folder), document=envelope))
    return ReleaseRecord(fleet, version, cohort, identity, str(folder), envelope)


def _write_folder(releases_dir: Path, fleet: str, version: int, release: dict, root: dict, archive: Path) -> Path:
    """``<releases_dir>/<fleet>/<version>/`` written whole: a temporary folder beside it, fsynced, renamed."""
    dest = folder_of(releases_dir, fleet, version)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".partial", dir=dest.parent))
    try:
        os.chmod(tmp, 0o755)
        for name, data in ((RELEASE_JSON, _json(release)), (ROOT_JSON, _json(root)), (ARCHIVE, archive.read_bytes())):
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        if dest.exists():  # left by a release whose transaction never committed: its number was never handed out
            shutil.rmtree(dest)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(dest.parent)
    return dest


def _json(value) -> bytes:
    return (json.dumps(value, indent=2) + "\n").encode()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _select(store, fleet: str, where, newest: bool = False) -> list[ReleaseRecord]:
    r = t.releases
    order = r.c.version.desc() if newest else r.c.version
    q = sa.select(r).where(r.c.fleet == fleet, where).order_by(order)
    if newest:
        q = q.limit(1)
    with store._read() as conn:
        rows = conn.execute(q).mappings().all()
    return [ReleaseRecord(row["fleet"], row["version"], row["cohort"], row["bundle_sha256"], row["path"],
                          row["document"]) for row in rows]


__all__ = ["ARCHIVE", "FILES", "ReleaseRecord", "folder_of", "get", "latest", "list_releases", "make_release"]
