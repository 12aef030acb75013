"""The registry's versions: every bundle a fleet may run, content-addressed, numbered, aliased, with its lineage.

A **version** is one row of ``model_versions``: a bundle (by its identity,
:attr:`edgeml_runtime.manifest.Manifest.identity`) for a fleet and a cohort
(``""``: the whole fleet), how it came (``action``), its ``status`` and its
``lineage`` (where its data came from and its hash, the trigger and the
evidence that asked for it, the parent bundle, the scores it was judged by).
Version numbers come from one sequence and only ever grow: promoting,
rejecting or rolling back never renumbers; a rollback is a *new* version of
the older bundle.

The bundle itself is kept in ``bundle_archives`` under its identity (its
reproducible ``.tar.gz``, :func:`edgeml.bundle.place.write_archive`), so a
controller on another machine can hand it out, score it or roll back to it
without the folder it was added from; :func:`archive_path` writes it out.
:func:`register` keeps a bundle and makes it a version; :func:`add_version`
makes another version of a bundle already kept; :func:`keep_archive` keeps
only the archive (``edgeml registry add`` without ``--fleet``).

An **alias** names one version per fleet and cohort: ``champion`` is the one
the fleet should run. :func:`promote` moves it (the version it leaves is
``retired``, the new one ``champion``, and the new one's lineage records the
one it replaced), :func:`rollback` makes the champion's predecessor champion
again as a new version, :func:`reject` marks a challenger that lost. Each of
them is one transaction holding the fleet and cohort's lock (SQLite's write
lock; a PostgreSQL advisory lock), so two controllers promoting at once leave
one champion and every other version of it retired.

With ``tracking=`` (:class:`edgeml.fleet.tracking.Tracking`) every new
version is also an MLflow run and a model version of the registered model of
its fleet and cohort, and the MLflow alias ``champion`` follows promotions;
the run and model version are kept in the version's lineage (``mlflow``).
The store is the registry of record: its change is committed first, and an
MLflow failure is raised after it (the next promotion or rejection of the
version logs what is missing).

Actions: ``added`` (``edgeml registry add``), ``trained`` (a retrain's
challenger), ``rolled_back``. Statuses: ``candidate``, ``champion``,
``rejected``, ``retired``.

>>> import tempfile
>>> from edgeml.fleet.store import Store
>>> store = Store.open(f"sqlite:///{tempfile.mkdtemp()}/fleet.db")
>>> champion(store, "plant-a") is None, versions(store)
(True, [])
>>> promote(store, 7)
Traceback (most recent call last):
...
edgeml.errors.FleetError: the registry has no version 7; list them with edgeml registry list
>>> store.close()
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from edgeml.errors import FleetError

from . import schema as t

ACTIONS = ("added", "trained", "rolled_back")
STATUSES = ("candidate", "champion", "rejected", "retired")
CHAMPION = "champion"
_REPLACED = object()  # _promote's default: the lineage names the champion replaced


@dataclass(frozen=True)
class ModelVersion:
    """A registry version: its number, fleet and cohort, bundle (identity, name, version), when and how it came,
    status, parent bundle, lineage, and the aliases that point at it now."""

    version: int
    fleet: str
    cohort: str
    bundle_sha256: str
    name: str
    bundle_version: str
    created: float
    action: str
    status: str
    parent: str | None
    lineage: dict
    aliases: tuple[str, ...]

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {**asdict(self), "aliases": list(self.aliases)}


def store_bundle(store, path: str | os.PathLike) -> tuple[str, dict]:
    """Verify the bundle at ``path`` (folder or ``.tar.gz``), register its manifest and keep its archive; its
    identity and manifest. Keeping a bundle twice is a no-op. :class:`~edgeml_runtime.errors.BundleError` if it
    does not verify (nothing stored)."""
    from .registry import verified_manifest

    manifest, identity = verified_manifest(path)
    store.add_bundle(identity, manifest, source=str(Path(path).resolve()))
    keep_archive(store, identity, path)
    return identity, manifest


def keep_archive(store, identity: str, path: str | os.PathLike) -> bool:
    """Keep the ``.tar.gz`` of the bundle at ``path`` (verified, of identity ``identity``) unless one is kept
    already; whether it was new. A folder is packed reproducibly (:func:`edgeml.bundle.place.write_archive`)."""
    a = t.bundle_archives
    with store._read() as conn:
        if conn.execute(sa.select(a.c.bundle_sha256).where(a.c.bundle_sha256 == identity)).scalar() is not None:
            return False
    archive = _archive_bytes(Path(path))
    row = {"bundle_sha256": identity, "archive": archive, "bytes": len(archive),
           "sha256": hashlib.sha256(archive).hexdigest(), "added": time.time()}
    with store._write() as conn:
        done = conn.execute(store._insert(a).values(row).on_conflict_do_nothing(index_elements=[a.c.bundle_sha256]))
    return done.rowcount == 1


def register(store, path: str | os.PathLike, *, fleet: str, cohort: str = "", action: str = "added",
             status: str = "candidate", lineage: Mapping | None = None, parent: str | None = None,
             tracking=None) -> ModelVersion:
    """Keep the bundle at ``path`` (:func:`store_bundle`) and make it a new version for ``fleet`` and ``cohort``;
    with ``tracking`` (:class:`edgeml.fleet.tracking.Tracking`) also an MLflow run and model version."""
    _check_kinds(action, status)
    identity, _ = store_bundle(store, path)
    made = _new_version(store, fleet, cohort, identity, action, status, dict(lineage or {}), parent)
    return made if tracking is None else _tracked(store, made, tracking)


def add_version(store, identity: str, *, fleet: str, cohort: str = "", action: str = "added",
                status: str = "candidate", lineage: Mapping | None = None, parent: str | None = None,
                tracking=None) -> ModelVersion:
    """A new version of a bundle the registry already keeps (by its ``identity``), as :func:`register` makes;
    :class:`FleetError` if it keeps no such bundle."""
    _check_kinds(action, status)
    a = t.bundle_archives
    with store._read() as conn:
        kept = conn.execute(sa.select(a.c.bundle_sha256).where(a.c.bundle_sha256 == identity)).scalar()
    if kept is None:
        raise FleetError(f"the registry keeps no bundle {identity[:12]}…; add it with edgeml registry add BUNDLE")
    made = _new_version(store, fleet, cohort, identity, action, status, dict(lineage or {}), parent)
    return made if tracking is None else _tracked(store, made, tracking)


def get(store, version: int) -> ModelVersion:
    """Version ``version``; :class:`FleetError` if the registry has none of that number."""
    with store._read() as conn:
        return _get(conn, version)


def versions(store, fleet: str | None = None, cohort: str | None = None) -> list[ModelVersion]:
    """Every version (of ``fleet`` and ``cohort`` where given), oldest first."""
    v = t.model_versions
    where = sa.and_(sa.true(), *([v.c.fleet == fleet] if fleet is not None else []),
                    *([v.c.cohort == cohort] if cohort is not None else []))
    with store._read() as conn:
        return _select(conn, where)


def champion(store, fleet: str, cohort: str = "") -> ModelVersion | None:
    """The version the ``champion`` alias of ``fleet`` and ``cohort`` points at; None before any promotion."""
    with store._read() as conn:
        number = _champion_number(conn, fleet, cohort)
        return None if number is None else _get(conn, number)


def promote(store, version: int, *, reason: str = "promoted", tracking=None) -> ModelVersion:
    """Point ``champion`` of the version's fleet and cohort at it; the version it replaces is retired, and the new
    champion's lineage names it (``previous_champion``). Promoting the champion again changes nothing.

    One transaction, holding the fleet and cohort's lock: of two promotions at once, from any process, one
    waits for the other, and the last is the one champion."""
    with store._write() as conn:
        _lock(conn, *_fleet_of(conn, version))
        done = _promote(conn, store, _get(conn, version), reason)
    if tracking is not None:
        tracking.champion(_tracked(store, done, tracking))
    return get(store, version)


def reject(store, version: int, *, reason: str, tracking=None, **evidence) -> ModelVersion:
    """Mark ``version`` rejected (a challenger that lost), keeping why in its lineage; the champion cannot be."""
    with store._write() as conn:
        _lock(conn, *_fleet_of(conn, version))
        chosen = _get(conn, version)
        if CHAMPION in chosen.aliases:
            raise FleetError(f"version {version} is the champion of fleet {chosen.fleet!r}{_cohort(chosen.cohort)} "
                             "and cannot be rejected; promote another version or roll back first")
        _update(conn, version, status="rejected",
                lineage={**chosen.lineage, "rejected": {"reason": reason, **evidence}})
    if tracking is not None:
        tracking.status(_tracked(store, get(store, version), tracking))
    return get(store, version)


def rollback(store, fleet: str, cohort: str = "", *, reason: str = "rolled back", tracking=None) -> ModelVersion:
    """Make the champion's predecessor the champion again, as a new version of its bundle (so rolling back again
    goes further back); :class:`FleetError` if there is no champion, or it replaced none. One transaction."""
    with store._write() as conn:
        _lock(conn, fleet, cohort)
        number = _champion_number(conn, fleet, cohort)
        if number is None:
            raise FleetError(f"fleet {fleet!r}{_cohort(cohort)} has no champion to roll back; promote one with "
                             "edgeml registry promote VERSION")
        current = _get(conn, number)
        before = current.lineage.get("previous_champion")
        if before is None:
            raise FleetError(f"version {current.version}, the champion of fleet {fleet!r}{_cohort(cohort)}, replaced "
                             "no earlier champion: there is nothing to roll back to")
        restored = _get(conn, before)
        lineage = {"rolled_back_from": current.version, "restores": restored.version, "reason": reason,
                   **{k: restored.lineage[k] for k in ("data", "trigger") if k in restored.lineage}}
        made = _insert_version(conn, fleet, cohort, restored.bundle_sha256, "rolled_back", "candidate", lineage,
                               current.bundle_sha256)
        _promote(conn, store, _get(conn, made), reason,
                 previous=restored.lineage.get("previous_champion"))
    if tracking is not None:
        tracking.champion(_tracked(store, get(store, made), tracking))
    return get(store, made)


def archive_path(store, identity: str, folder: str | os.PathLike | None = None) -> Path:
    """The kept ``.tar.gz`` of bundle ``identity``, checked against its SHA-256 and written byte for byte to
    ``FOLDER/<identity[:16]>/<name>.tar.gz`` (``<name>``: the bundle's folder inside the archive, as a bundle
    archive is named; ``folder`` a new temporary one by default, made if missing); :class:`FleetError` if the
    registry does not keep it."""
    a = t.bundle_archives
    with store._read() as conn:
        row = conn.execute(sa.select(a.c.archive, a.c.sha256).where(a.c.bundle_sha256 == identity)).first()
    if row is None:
        raise FleetError(f"the registry keeps no archive of bundle {identity[:12]}…; add it with edgeml registry add "
                         "BUNDLE")
    data = bytes(row.archive)
    if hashlib.sha256(data).hexdigest() != row.sha256:
        raise FleetError(f"the kept archive of bundle {identity[:12]}… does not match its SHA-256: the store is "
                         "damaged; add the bundle again from its folder")
    dest = Path(folder or tempfile.mkdtemp(prefix="edgeml-registry-")) / identity[:16] / f"{_top(data)}.tar.gz"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return dest


# -- the rows ------------------------------------------------------------------------------------

def _archive_bytes(path: Path) -> bytes:
    if path.is_file():
        return path.read_bytes()
    from edgeml.bundle.place import write_archive

    with tempfile.TemporaryDirectory(prefix="edgeml-archive-") as tmp:
        dest = Path(tmp) / "bundle.tar.gz"
        write_archive(path, dest)
        return dest.read_bytes()


def _top(archive: bytes) -> str:
    """The folder a bundle archive holds its files in (``demo-1`` of ``demo-1/manifest.json``)."""
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        first = tar.next()
    return first.name.split("/", 1)[0] if first is not None else "bundle"


def _check_kinds(action: str, status: str) -> None:
    if action not in ACTIONS or status not in STATUSES:
        raise FleetError(f"action {action!r} / status {status!r}: use one of {ACTIONS} / {STATUSES}")


def _new_version(store, fleet, cohort, identity, action, status, lineage, parent) -> ModelVersion:
    with store._write() as conn:
        return _get(conn, _insert_version(conn, fleet, cohort, identity, action, status, lineage, parent))


def _insert_version(conn, fleet, cohort, identity, action, status, lineage, parent) -> int:
    _check_kinds(action, status)
    row = {"fleet": fleet, "cohort": cohort, "bundle_sha256": identity, "created": time.time(), "action": action,
           "status": status, "parent": parent, "lineage": lineage}
    v = t.model_versions
    return conn.execute(sa.insert(v).values(row).returning(v.c.version)).scalar_one()


def _lock(conn, fleet: str, cohort: str) -> None:
    """Hold the champion lock of ``fleet`` and ``cohort`` to the end of the transaction. SQLite's write
    transactions (``BEGIN IMMEDIATE``) already queue for the whole file; PostgreSQL takes a transaction-level
    advisory lock keyed by the fleet and cohort."""
    if conn.dialect.name == "postgresql":
        digest = hashlib.sha256(f"edgeml-champion\0{fleet}\0{cohort}".encode()).digest()
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                     {"key": int.from_bytes(digest[:8], "big", signed=True)})


def _promote(conn, store, chosen: ModelVersion, reason: str, previous=_REPLACED) -> ModelVersion:
    """Move ``champion`` to ``chosen`` in ``conn`` (whose transaction holds :func:`_lock`); its lineage names the
    champion it replaced, or ``previous`` where given (a rollback names the restored version's predecessor)."""
    al, v = t.aliases, t.model_versions
    current = _champion_number(conn, chosen.fleet, chosen.cohort)
    if current == chosen.version:
        return chosen
    if current is not None:
        conn.execute(sa.update(v).where(v.c.version == current).values(status="retired"))
    now = time.time()
    stmt = store._insert(al).values(fleet=chosen.fleet, cohort=chosen.cohort, alias=CHAMPION,
                                    version=chosen.version, updated=now)
    conn.execute(stmt.on_conflict_do_update(index_elements=[al.c.fleet, al.c.cohort, al.c.alias],
                                            set_={"version": chosen.version, "updated": now}))
    lineage = {**chosen.lineage, "previous_champion": current if previous is _REPLACED else previous,
               "promoted": {"reason": reason, "time": now, "replaced": current}}
    _update(conn, chosen.version, status=CHAMPION, lineage=lineage)
    return _get(conn, chosen.version)


def _fleet_of(conn, version: int) -> tuple[str, str]:
    """The fleet and cohort of ``version`` (a fleet's versions never move); :class:`FleetError` if none."""
    v = t.model_versions
    row = conn.execute(sa.select(v.c.fleet, v.c.cohort).where(v.c.version == version)).first()
    if row is None:
        raise FleetError(f"the registry has no version {version}; list them with edgeml registry list")
    return row.fleet, row.cohort


def _champion_number(conn, fleet: str, cohort: str) -> int | None:
    al = t.aliases
    return conn.execute(sa.select(al.c.version).where(al.c.fleet == fleet, al.c.cohort == cohort,
                                                      al.c.alias == CHAMPION)).scalar()


def _tracked(store, version: ModelVersion, tracking) -> ModelVersion:
    """``version`` logged to ``tracking`` (once: its MLflow run and model version are kept in its lineage)."""
    if "mlflow" in version.lineage:
        return version
    with tempfile.TemporaryDirectory(prefix="edgeml-tracking-") as folder:
        logged = tracking.log_version(version, archive_path(store, version.bundle_sha256, folder))
    with store._write() as conn:
        _update(conn, version.version, lineage={**_get(conn, version.version).lineage, "mlflow": logged})
        return _get(conn, version.version)


def _update(conn, version: int, **values) -> None:
    v = t.model_versions
    conn.execute(sa.update(v).where(v.c.version == version).values(**values))


def _get(conn, version: int) -> ModelVersion:
    found = _select(conn, t.model_versions.c.version == version)
    if not found:
        raise FleetError(f"the registry has no version {version}; list them with edgeml registry list")
    return found[0]


def _select(conn, where) -> list[ModelVersion]:
    v, b, al = t.model_versions, t.bundles, t.aliases
    q = (sa.select(v, b.c.name, b.c.version.label("bundle_version"))
         .join(b, b.c.bundle_sha256 == v.c.bundle_sha256).where(where).order_by(v.c.version))
    rows = conn.execute(q).mappings().all()
    named = conn.execute(sa.select(al.c.version, al.c.alias)).all()
    by_version: dict[int, list[str]] = {}
    for number, alias in named:
        by_version.setdefault(number, []).append(alias)
    return [ModelVersion(**{**r, "lineage": dict(r["lineage"] or {}),
                            "aliases": tuple(sorted(by_version.get(r["version"], ())))}) for r in rows]


def _cohort(cohort: str) -> str:
    return f" cohort {cohort!r}" if cohort else ""


__all__ = ["ACTIONS", "CHAMPION", "STATUSES", "ModelVersion", "add_version", "archive_path", "champion", "get",
           "keep_archive", "promote", "register", "reject", "rollback", "store_bundle", "versions"]
