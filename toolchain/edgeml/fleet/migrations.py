"""Versioned schema migrations of the fleet store: an ordered list of steps, applied in one transaction on open.

The store's version is the largest ``version`` in its ``schema_version``
table (0 for an empty database). :func:`migrate` applies, in order and in
the caller's transaction, every step of :data:`MIGRATIONS` above it,
recording each; a store newer than the code (a version this code has no step
for) is refused with a :class:`~edgeml.errors.FleetError` naming both
versions, before anything is written. Concurrent opens are serialized: on
SQLite the store's transactions begin with ``BEGIN IMMEDIATE`` (the write
lock), on PostgreSQL :func:`migrate` takes a transaction-scoped advisory
lock first, so two controllers starting together apply each step once.

Each step's DDL is written out here as it was when the step was made, never
built from :mod:`.schema` (which is the newest form only): a store made by
version 1 of the code must upgrade the same way in every later release.

* **1** (the store's first form): devices, windows, decisions, leases, bundles.
* **2**: ``rejected``, the messages of a batch that could not be stored, and
  the ``windows_horizon`` index (fleet, bundle, ended) the horizon queries use.
* **3**: the loop from drift to a better model: ``windows.performance`` (a
  window's live metric counts, ``{}`` where its rows carried no label; the
  windows stored before get ``{}``), the registry's ``bundle_archives``,
  ``model_versions`` and ``aliases``, and ``retrains``.
* **4**: signed releases, rollouts, update statuses: ``releases`` (one row per
  signed release of a fleet, its folder and envelope), ``release_counters``
  (the last release version of each fleet: versions only grow, even if a
  release row is lost), ``rollouts`` and ``rollout_devices`` (a staged rollout
  and its devices' waves and steps), ``update_events`` (every update step a
  device reported).
* **5**: ``windows.outbox_backlog``: what waited in the device's outbox when
  the window was stored (format 7; NULL for the windows stored before).

To change the schema: add a step at the end (version = the last + 1), change
:mod:`.schema` to match, and test the upgrade from the version before.

>>> [(m.version, m.name) for m in MIGRATIONS]
[(1, 'devices, windows, decisions, leases, bundles'), (2, 'rejected messages; the windows horizon index'), \
(3, 'live performance counts; registry versions, aliases, archives; retrains'), \
(4, 'signed releases, rollouts, update statuses'), (5, "the devices' outbox backlog in windows")]
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from edgeml.errors import FleetError

from .schema import ID, JSON, TIME, schema_version

#: The key of PostgreSQL's advisory lock held while migrating (any constant shared by every controller).
ADVISORY_LOCK = 0x6564676D6C  # "edgml"


@dataclass(frozen=True)
class Migration:
    """One step: ``apply(connection)`` takes the store from ``version - 1`` to ``version``."""

    version: int
    name: str
    apply: Callable[[sa.Connection], None]


def _v1(conn: sa.Connection) -> None:
    md = sa.MetaData()
    sa.Table("devices", md,
             sa.Column("fleet", sa.Text, primary_key=True), sa.Column("device", sa.Text, primary_key=True),
             sa.Column("online", sa.Boolean, nullable=False),
             sa.Column("birth_seq", sa.BigInteger), sa.Column("birth_time", sa.Text),
             sa.Column("birth_received", TIME), sa.Column("death_seq", sa.BigInteger),
             sa.Column("death_reason", sa.Text), sa.Column("death_time", sa.Text),
             sa.Column("death_received", TIME), sa.Column("bundle_sha256", sa.Text),
             sa.Column("model_name", sa.Text), sa.Column("model_version", sa.Text),
             sa.Column("runtime_version", sa.Text), sa.Column("window", JSON))
    sa.Table("windows", md,
             sa.Column("id", ID, primary_key=True, autoincrement=True),
             *(sa.Column(name, sa.Text, nullable=False) for name in ("fleet", "device")),
             *(sa.Column(name, sa.BigInteger, nullable=False) for name in ("session", "seq")),
             sa.Column("bundle_sha256", sa.Text, nullable=False), sa.Column("received", TIME, nullable=False),
             *(sa.Column(name, sa.Text, nullable=False) for name in ("start", "end")),
             sa.Column("ended", TIME, nullable=False),
             *(sa.Column(name, sa.BigInteger, nullable=False) for name in ("rows", "bad_rows", "outbox_dropped")),
             sa.Column("historical", sa.Boolean, nullable=False),
             *(sa.Column(name, JSON, nullable=False) for name in ("counts", "statistics", "verdict")),
             sa.UniqueConstraint("fleet", "device", "session", "seq", name="windows_key"))
    sa.Table("decisions", md,
             sa.Column("id", ID, primary_key=True, autoincrement=True), sa.Column("fleet", sa.Text, nullable=False),
             sa.Column("bundle_sha256", sa.Text), sa.Column("kind", sa.Text, nullable=False),
             sa.Column("time", TIME, nullable=False), sa.Column("evidence", JSON, nullable=False),
             sa.Column("published", sa.Boolean, nullable=False),
             sa.Index("decisions_fleet", "fleet", "time"))
    sa.Table("leases", md,
             sa.Column("name", sa.Text, primary_key=True), sa.Column("holder", sa.Text, nullable=False),
             sa.Column("expires", TIME, nullable=False))
    sa.Table("bundles", md,
             sa.Column("bundle_sha256", sa.Text, primary_key=True),
             *(sa.Column(name, sa.Text, nullable=False) for name in ("name", "version")),
             sa.Column("added", TIME, nullable=False), sa.Column("source", sa.Text, nullable=False),
             *(sa.Column(name, JSON, nullable=False) for name in ("reference", "manifest")))
    md.create_all(conn)


def _v2(conn: sa.Connection) -> None:
    md = sa.MetaData()
    sa.Table("rejected", md,
             sa.Column("id", ID, primary_key=True, autoincrement=True), sa.Column("received", TIME, nullable=False),
             *(sa.Column(name, sa.Text, nullable=False) for name in ("topic", "reason", "payload")))
    md.create_all(conn)
    windows = sa.Table("windows", sa.MetaData(), sa.Column("fleet"), sa.Column("bundle_sha256"), sa.Column("ended"))
    sa.Index("windows_horizon", windows.c.fleet, windows.c.bundle_sha256, windows.c.ended).create(conn)


def _v3(conn: sa.Connection) -> None:
    md = sa.MetaData()
    sa.Table("bundle_archives", md,
             sa.Column("bundle_sha256", sa.Text, primary_key=True),
             sa.Column("archive", sa.LargeBinary, nullable=False),
             sa.Column("bytes", sa.BigInteger, nullable=False), sa.Column("sha256", sa.Text, nullable=False),
             sa.Column("added", TIME, nullable=False))
    sa.Table("model_versions", md,
             sa.Column("version", ID, primary_key=True, autoincrement=True),
             *(sa.Column(name, sa.Text, nullable=False) for name in ("fleet", "cohort", "bundle_sha256")),
             sa.Column("created", TIME, nullable=False),
             *(sa.Column(name, sa.Text, nullable=False) for name in ("action", "status")),
             sa.Column("parent", sa.Text), sa.Column("lineage", JSON, nullable=False),
             sa.Index("model_versions_fleet", "fleet", "cohort", "version"))
    sa.Table("aliases", md,
             *(sa.Column(name, sa.Text, primary_key=True) for name in ("fleet", "cohort", "alias")),
             sa.Column("version", sa.BigInteger, nullable=False), sa.Column("updated", TIME, nullable=False))
    sa.Table("retrains", md,
             sa.Column("id", ID, primary_key=True, autoincrement=True),
             *(sa.Column(name, sa.Text, nullable=False) for name in ("fleet", "cohort", "trigger", "reason")),
             sa.Column("decision_id", sa.BigInteger), sa.Column("requested", TIME, nullable=False),
             sa.Column("started", TIME), sa.Column("finished", TIME), sa.Column("status", sa.Text, nullable=False),
             sa.Column("attempt", sa.Integer, nullable=False), sa.Column("holder", sa.Text),
             sa.Column("error", sa.Text), *(sa.Column(name, JSON, nullable=False) for name in ("evidence", "result")),
             sa.Index("retrains_fleet", "fleet", "requested"))
    md.create_all(conn)
    # Windows stored before this step carried no labels: their performance counts are the empty object.
    conn.execute(sa.text("ALTER TABLE windows ADD COLUMN performance JSON NOT NULL DEFAULT '{}'"))



def _v4(conn: sa.Connection) -> None:
    md = sa.MetaData()
    sa.Table("releases", md,
             sa.Column("fleet", sa.Text, primary_key=True), sa.Column("version", sa.BigInteger, primary_key=True),
             *(sa.Column(name, sa.Text, nullable=False) for name in ("cohort", "bundle_sha256")),
             *(sa.Column(name, TIME, nullable=False) for name in ("created", "expires")),
             *(sa.Column(name, sa.Text, nullable=False) for name in ("keyid", "path")),
             sa.Column("document", JSON, nullable=False))
    sa.Table("release_counters", md,
             sa.Column("fleet", sa.Text, primary_key=True), sa.Column("last", sa.BigInteger, nullable=False))
    sa.Table("rollouts", md,
             sa.Column("id", ID, primary_key=True, autoincrement=True), sa.Column("fleet", sa.Text, nullable=False),
             sa.Column("release", sa.BigInteger, nullable=False), sa.Column("state", sa.Text, nullable=False),
             *(sa.Column(name, TIME, nullable=False) for name in ("created", "updated")),
             sa.Column("plan", JSON, nullable=False), sa.Column("wave", sa.Integer, nullable=False),
             sa.Column("reason", sa.Text), sa.Column("previous_release", sa.BigInteger))
    sa.Table("rollout_devices", md,
             sa.Column("rollout", sa.BigInteger, primary_key=True), sa.Column("device", sa.Text, primary_key=True),
             sa.Column("wave", sa.Integer, nullable=False), sa.Column("announced", TIME),
             sa.Column("step", sa.Text), sa.Column("reason", sa.Text), sa.Column("updated", TIME))
    sa.Table("update_events", md,
             sa.Column("id", ID, primary_key=True, autoincrement=True),
             *(sa.Column(name, sa.Text, nullable=False) for name in ("fleet", "device")),
             *(sa.Column(name, TIME, nullable=False) for name in ("received", "time")),
             sa.Column("release", sa.BigInteger, nullable=False), sa.Column("rollout", sa.BigInteger),
             sa.Column("step", sa.Text, nullable=False), sa.Column("reason", sa.Text), sa.Column("refusal", sa.Text),
             sa.Column("payload", JSON, nullable=False),
             sa.Index("update_events_release", "fleet", "release", "device"))
    md.create_all(conn)


def _v5(conn: sa.Connection) -> None:
    # Windows of format 7 carry the device's outbox backlog; those stored before (and of older devices) have none.
    conn.execute(sa.text("ALTER TABLE windows ADD COLUMN outbox_backlog BIGINT"))


#: Every step, in order; the last one's version is the schema this code reads and writes.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "devices, windows, decisions, leases, bundles", _v1),
    Migration(2, "rejected messages; the windows horizon index", _v2),
    Migration(3, "live performance counts; registry versions, aliases, archives; retrains", _v3),
    Migration(4, "signed releases, rollouts, update statuses", _v4),
    Migration(5, "the devices' outbox backlog in windows", _v5),
)
HEAD = MIGRATIONS[-1].version


def current_version(conn: sa.Connection) -> int:
    """The store's schema version: 0 for a database without a ``schema_version`` table."""
    if not sa.inspect(conn).has_table(schema_version.name):
        return 0
    return conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0


def migrate(conn: sa.Connection, where: str, target: int = HEAD) -> list[int]:
    """Bring the store on ``conn`` (inside a transaction) to version ``target``; the versions applied, in order.

    ``where`` names the store in errors (its URL, password masked).
    """
    if not 0 < target <= HEAD:
        raise FleetError(f"schema version {target} does not exist; this edgeml knows versions 1 to {HEAD}")
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK})
    schema_version.create(conn, checkfirst=True)
    version = current_version(conn)
    if version > HEAD:
        raise FleetError(f"the fleet store {where} has schema version {version}, newer than this edgeml reads "
                         f"(version {HEAD}): a newer edgeml upgraded it. Upgrade edgeml to the release that wrote "
                         "it; an older one must not write to it")
    applied = []
    for step in MIGRATIONS:
        if version < step.version <= target:
            step.apply(conn)
            conn.execute(sa.insert(schema_version).values(version=step.version, name=step.name,
                                                          applied=time.time()))
            applied.append(step.version)
    return applied
