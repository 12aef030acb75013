"""Releases for the rollout tests: the real ``edgeml.fleet.releases`` once migration 4 and it are merged (h18-b);
until then a STAND-IN of spec18's tables and of ``releases.get`` / ``releases.make_release``, rows written directly.

Replace the stand-in by the real functions when h18-b lands: :func:`make_releases` is the one place to change.
"""

from __future__ import annotations

import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from edgeml.errors import FleetError
from edgeml.fleet import schema as t

A, B = "a" * 64, "b" * 64
REAL = hasattr(t, "rollouts")
STAND_IN = sa.MetaData()


def _tables() -> None:
    """Spec18's migration-4 tables, as the spec names them (stand-in)."""
    md, ID, JSON, TIME = STAND_IN, t.ID, t.JSON, t.TIME  # not t.METADATA: the schema's own list stays as it is
    t.releases = sa.Table("releases", md, sa.Column("fleet", sa.Text, primary_key=True),
                          sa.Column("version", sa.BigInteger, primary_key=True), sa.Column("cohort", sa.Text),
                          sa.Column("bundle_sha256", sa.Text), sa.Column("created", TIME),
                          sa.Column("expires", TIME), sa.Column("keyid", sa.Text), sa.Column("path", sa.Text),
                          sa.Column("document", JSON))
    t.release_counters = sa.Table("release_counters", md, sa.Column("fleet", sa.Text, primary_key=True),
                                  sa.Column("last", sa.BigInteger))
    t.rollouts = sa.Table("rollouts", md, sa.Column("id", ID, primary_key=True, autoincrement=True),
                          sa.Column("fleet", sa.Text), sa.Column("release", sa.BigInteger),
                          sa.Column("state", sa.Text), sa.Column("created", TIME), sa.Column("updated", TIME),
                          sa.Column("plan", JSON), sa.Column("wave", sa.Integer), sa.Column("reason", sa.Text),
                          sa.Column("previous_release", sa.BigInteger))
    t.rollout_devices = sa.Table("rollout_devices", md, sa.Column("rollout", sa.BigInteger, primary_key=True),
                                 sa.Column("device", sa.Text, primary_key=True), sa.Column("wave", sa.Integer),
                                 sa.Column("announced", TIME), sa.Column("step", sa.Text),
                                 sa.Column("reason", sa.Text), sa.Column("updated", TIME))
    t.update_events = sa.Table("update_events", md, sa.Column("id", ID, primary_key=True, autoincrement=True),
                               sa.Column("fleet", sa.Text), sa.Column("device", sa.Text),
                               sa.Column("received", TIME), sa.Column("time", TIME),
                               sa.Column("release", sa.BigInteger), sa.Column("rollout", sa.BigInteger),
                               sa.Column("step", sa.Text), sa.Column("reason", sa.Text),
                               sa.Column("refusal", sa.Text), sa.Column("payload", JSON))


@dataclass(frozen=True)
class Record:
    fleet: str
    version: int
    cohort: str
    bundle_sha256: str
    document: dict
    path: str | None


def _get(store, fleet: str, version: int) -> Record:
    r = t.releases
    with store._read() as conn:
        row = conn.execute(sa.select(r).where(r.c.fleet == fleet, r.c.version == version)).mappings().first()
    if row is None:
        raise FleetError(f"fleet {fleet!r} has no release {version}")
    return Record(row["fleet"], row["version"], row["cohort"], row["bundle_sha256"], row["document"], row["path"])


def _insert(store, fleet: str, identity: str) -> Record:
    r, c = t.releases, t.release_counters
    with store._write() as conn:
        last = conn.execute(sa.select(c.c.last).where(c.c.fleet == fleet)).scalar() or 0
        conn.execute(sa.delete(c).where(c.c.fleet == fleet))
        conn.execute(sa.insert(c).values(fleet=fleet, last=last + 1))
        doc = {"signed": {"_type": "release", "fleet": fleet, "version": last + 1, "bundle": {"identity": identity}},
               "signatures": []}
        conn.execute(sa.insert(r).values(fleet=fleet, version=last + 1, cohort="", bundle_sha256=identity,
                                         created=time.time(), document=doc))
    return _get(store, fleet, last + 1)


def _make_release(store, *, fleet, identity, keys, releases_dir, now=None, **_):
    return _insert(store, fleet, identity)


if not REAL:
    _tables()
    sys.modules.setdefault("edgeml.fleet.releases", types.SimpleNamespace(get=_get, make_release=_make_release))


@dataclass(frozen=True)
class Released:
    keys: Path
    folder: Path


def make_releases(store, tmp_path: Path, fleet: str) -> Released:
    """Releases 1 (bundle A) and 2 (bundle B) of ``fleet``."""
    if not REAL:
        STAND_IN.create_all(store.engine)
    _insert(store, fleet, A)
    _insert(store, fleet, B)
    return Released(tmp_path / "keys", tmp_path / "releases")
