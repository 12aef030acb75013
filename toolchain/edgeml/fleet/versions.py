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

An **alias** names one version per fleet and cohort: ``champion`` is the one
the fleet should run. :func:`promote` moves it (the version it leaves is
``retired``, the new one ``champion``, and the new one's lineage records the
one it replaced), :func:`rollback` makes the champion's predecessor champion
again as a new version, :func:`reject` marks a challenger that lost.

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
    archive = _archive_bytes(Path(path))
    store.add_bundle(identity, manifest, source=str(Path(path).resolve()))
    a = t.bundle_archives
    row = {"bundle_sha256": identity, "archive": archive, "bytes": len(archive),
           "sha256": hashlib.sha256(archive).hexdigest(), "added": time.time()}
    with store._write() as conn:
        conn.execute(store._insert(a).values(row).on_conflict_do_nothing(index_elements=[a.c.bundle_sha256]))
    return identity, manifest


def register(store, path: str | os.PathLike, *, fleet: str, cohort: str = "", action: str = "added",
             status: str = "candidate", lineage: Mapping | None = None, parent: str | None = None) -> ModelVersion:
    """Keep the bundle at ``path`` (:func:`store_bundle`) and make it a new version for ``fleet`` and ``cohort``."""
    identity, _ = store_bundle(store, path)
    return _new_version(store, fleet, cohort, identity, action, status, dict(lineage or {}), parent)


def get(store, version: int) -> ModelVersion:
    """Version ``version``; :class:`FleetError` if the registry has none of that number."""
    found = _select(store, t.model_versions.c.version == version)
    if not found:
        raise FleetError(f"the registry has no version {version}; list them with edgeml registry list")
    return found[0]


def versions(store, fleet: str | None = None, cohort: str | None = None) -> list[ModelVersion]:
    """Every version (of ``fleet`` and ``cohort`` where given), oldest first."""
    v = t.model_versions
    where = sa.and_(sa.true(), *([v.c.fleet == fleet] if fleet is not None else []),
                    *([v.c.cohort == cohort] if cohort is not None else []))
    return _select(store, where)


def champion(store, fleet: str, cohort: str = "") -> ModelVersion | None:
    """The version the ``champion`` alias of ``fleet`` and ``cohort`` points at; None before any promotion."""
    al = t.aliases
    with store._read() as conn:
        number = conn.execute(sa.select(al.c.version).where(al.c.fleet == fleet, al.c.cohort == cohort,
                                                            al.c.alias == CHAMPION)).scalar()
    return None if number is None else get(store, number)


def promote(store, version: int, *, reason: str = "promoted") -> ModelVersion:
    """Point ``champion`` of the version's fleet and cohort at it; the version it replaces is retired."""
    chosen = get(store, version)
    with store._write() as conn:
        previous = _move_champion(conn, store, chosen, reason)
    lineage = {**chosen.lineage, "previous_champion": previous, "promoted": {"reason": reason, "time": time.time()}}
    _update(store, version, status=CHAMPION, lineage=lineage)
    return get(store, version)


def reject(store, version: int, *, reason: str, **evidence) -> ModelVersion:
    """Mark ``version`` rejected (a challenger that lost), keeping why in its lineage."""
    chosen = get(store, version)
    _update(store, version, status="rejected", lineage={**chosen.lineage, "rejected": {"reason": reason, **evidence}})
    return get(store, version)


def rollback(store, fleet: str, cohort: str = "", *, reason: str = "rolled back") -> ModelVersion:
    """Make the champion's predecessor the champion again, as a new version of its bundle; :class:`FleetError`
    if there is no champion, or it replaced none."""
    current = champion(store, fleet, cohort)
    if current is None:
        raise FleetError(f"fleet {fleet!r}{_cohort(cohort)} has no champion to roll back; promote one with "
                         "edgeml registry promote VERSION")
    before = current.lineage.get("previous_champion")
    if before is None:
        raise FleetError(f"version {current.version}, the champion of fleet {fleet!r}{_cohort(cohort)}, replaced no "
                         "earlier champion: there is nothing to roll back to")
    restored = get(store, before)
    lineage = {"rolled_back_from": current.version, "restores": restored.version, "reason": reason,
               **{k: restored.lineage[k] for k in ("data", "trigger") if k in restored.lineage}}
    made = _new_version(store, fleet, cohort, restored.bundle_sha256, "rolled_back", "candidate", lineage,
                        current.bundle_sha256)
    promote(store, made.version, reason=reason)
    # Rolling back again goes further back: the restored version's own predecessor, not the one just left.
    _update(store, made.version, lineage={**get(store, made.version).lineage,
                                          "previous_champion": restored.lineage.get("previous_champion")})
    return get(store, made.version)


def archive_path(store, identity: str, folder: str | os.PathLike | None = None) -> Path:
    """The kept ``.tar.gz`` of bundle ``identity`` written to ``folder`` (a new temporary one by default), checked
    against its SHA-256; :class:`FleetError` if the registry does not keep it."""
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
    dest = Path(folder or tempfile.mkdtemp(prefix="edgeml-registry-")) / f"{identity[:16]}.tar.gz"
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


def _new_version(store, fleet, cohort, identity, action, status, lineage, parent) -> ModelVersion:
    if action not in ACTIONS or status not in STATUSES:
        raise ValueError(f"action {action!r} / status {status!r}: use one of {ACTIONS} / {STATUSES}")
    v = t.model_versions
    row = {"fleet": fleet, "cohort": cohort, "bundle_sha256": identity, "created": time.time(), "action": action,
           "status": status, "parent": parent, "lineage": lineage}
    with store._write() as conn:
        number = conn.execute(sa.insert(v).values(row).returning(v.c.version)).scalar_one()
    return get(store, number)


def _move_champion(conn, store, chosen: ModelVersion, reason: str) -> int | None:
    al, v = t.aliases, t.model_versions
    key = (al.c.fleet == chosen.fleet, al.c.cohort == chosen.cohort, al.c.alias == CHAMPION)
    previous = conn.execute(sa.select(al.c.version).where(*key)).scalar()
    if previous == chosen.version:
        return chosen.lineage.get("previous_champion")
    if previous is not None:
        conn.execute(sa.update(v).where(v.c.version == previous).values(status="retired"))
    stmt = store._insert(al).values(fleet=chosen.fleet, cohort=chosen.cohort, alias=CHAMPION,
                                    version=chosen.version, updated=time.time())
    conn.execute(stmt.on_conflict_do_update(index_elements=[al.c.fleet, al.c.cohort, al.c.alias],
                                            set_={"version": chosen.version, "updated": time.time()}))
    return previous


def _update(store, version: int, **values) -> None:
    v = t.model_versions
    with store._write() as conn:
        conn.execute(sa.update(v).where(v.c.version == version).values(**values))


def _select(store, where) -> list[ModelVersion]:
    v, b, al = t.model_versions, t.bundles, t.aliases
    q = (sa.select(v, b.c.name, b.c.version.label("bundle_version"))
         .join(b, b.c.bundle_sha256 == v.c.bundle_sha256).where(where).order_by(v.c.version))
    with store._read() as conn:
        rows = conn.execute(q).mappings().all()
        named = conn.execute(sa.select(al.c.version, al.c.alias)).all()
    by_version: dict[int, list[str]] = {}
    for number, alias in named:
        by_version.setdefault(number, []).append(alias)
    return [ModelVersion(**{**r, "lineage": dict(r["lineage"] or {}),
                            "aliases": tuple(sorted(by_version.get(r["version"], ())))}) for r in rows]


def _cohort(cohort: str) -> str:
    return f" cohort {cohort!r}" if cohort else ""


__all__ = ["ACTIONS", "CHAMPION", "STATUSES", "ModelVersion", "archive_path", "champion", "get", "promote", "register",
           "reject", "rollback", "store_bundle", "versions"]
