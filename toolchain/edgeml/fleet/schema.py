"""The fleet store's tables as the code reads and writes them (SQLAlchemy Core): the schema at its newest version.

:mod:`.migrations` creates and upgrades these tables, step by step; a test
checks that a store migrated from nothing has exactly these tables and
columns. Change a table here only together with a new migration step.

Times the controller stamps (``received``, ``added``, a decision's ``time``,
a lease's ``expires``) and a window's ``ended`` are seconds since the epoch
(UTC), as floats: one representation on both databases, compared cheaply.
What a device said about time (a birth's ``time``, a window's ``start`` and
``end``) is also kept as the text it sent.

* ``schema_version``: one row per applied migration step (the store's
  version is the largest);
* ``devices``: one row per (fleet, device): the latest birth and death
  (``bdSeq``, time, when received), ``online``, the bundle the device runs
  (``bundle_sha256``, model name and version), its runtime version and the
  birth's ``window`` object (rows, seconds, verdict rule);
* ``windows``: one row per drift window, unique on the de-duplication key
  (fleet, device, session, seq) of :func:`edgeml_runtime.protocol.window_key`;
  ``counts`` holds what adds up across windows (per column: kind, counts,
  missing, below/above range; the output's kind and counts), ``statistics``
  every other per-column value the device sent (PSI, JS, status...), and
  ``verdict`` the device's verdict, as sent;
* ``decisions``: what the controller decided, with its evidence, and
  whether it was published;
* ``leases``: who may decide (:meth:`.store.Store.acquire_lease`);
* ``bundles``: the registry, one row per bundle identity, with its manifest
  and drift reference;
* ``rejected``: messages of a batch that could not be stored, with the reason;
* ``bundle_archives``: the registry's bundles themselves, content-addressed:
  each bundle's ``.tar.gz`` under its identity, with its size and SHA-256;
* ``model_versions``: the registry's versions, numbered in one sequence that
  only grows: which bundle, for which fleet and cohort (``""``: the whole
  fleet), how it came (``action``: added, trained, promoted, rolled back),
  its ``status`` and its ``lineage`` (data hash, trigger, evidence, parent
  bundle, scores);
* ``aliases``: a name per fleet and cohort (``champion``) pointing at a version;
* ``retrains``: every retrain asked for, by whom and why, its attempts,
  outcome and reason;
* ``releases``: one row per signed release of a fleet (:mod:`.releases`):
  its version (per fleet, only growing), cohort, bundle identity
  (``bundle_sha256``), when made and when it expires, the release key that
  signed it, its release folder (``path``) and the signed envelope
  (``document``);
* ``release_counters``: the last release version of each fleet, so that
  versions only grow even if a release row is lost;
* ``rollouts``: a staged rollout of a release (its state: running, paused,
  aborted or done; its plan, current wave, reason and the release before);
* ``rollout_devices``: one row per device of a rollout: its wave, when it
  was told, its last update step and reason;
* ``update_events``: every update step a device reported, with its payload.

What a received message becomes (its checks, and the row of ``devices`` or
``windows`` it sets) is :mod:`.rows`; here are the tables, the JSON columns'
text (:func:`dumps`, :func:`loads`) and what the store's queries return.

Whether a window's bundle is known is not stored: queries join ``bundles``,
so adding a bundle later makes its windows known at once, with no race
against windows being stored meanwhile.

>>> sorted(METADATA.tables)
['aliases', 'bundle_archives', 'bundles', 'decisions', 'devices', 'leases', 'model_versions', 'rejected', \
'release_counters', 'releases', 'retrains', 'rollout_devices', 'rollouts', 'schema_version', 'update_events', \
'windows']
"""

from __future__ import annotations

import json

import orjson
import sqlalchemy as sa

#: A JSON column: ``json`` on PostgreSQL (kept as sent, keys in their order: ``jsonb`` sorts them), JSON text on SQLite.
JSON = sa.JSON()
#: An autoincrementing 64-bit key (SQLite autoincrements only ``INTEGER PRIMARY KEY``).
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.Float(precision=53)  # double precision: seconds since the epoch to the microsecond

_orjson, _orjson_loads, _orjson_error = orjson.dumps, orjson.loads, orjson.JSONEncodeError

METADATA = sa.MetaData()

schema_version = sa.Table(
    "schema_version", METADATA,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("applied", TIME, nullable=False),
)

devices = sa.Table(
    "devices", METADATA,
    sa.Column("fleet", sa.Text, primary_key=True),
    sa.Column("device", sa.Text, primary_key=True),
    sa.Column("online", sa.Boolean, nullable=False),
    sa.Column("birth_seq", sa.BigInteger),
    sa.Column("birth_time", sa.Text),
    sa.Column("birth_received", TIME),
    sa.Column("death_seq", sa.BigInteger),
    sa.Column("death_reason", sa.Text),
    sa.Column("death_time", sa.Text),
    sa.Column("death_received", TIME),
    sa.Column("bundle_sha256", sa.Text),
    sa.Column("model_name", sa.Text),
    sa.Column("model_version", sa.Text),
    sa.Column("runtime_version", sa.Text),
    sa.Column("window", JSON),
)

windows = sa.Table(
    "windows", METADATA,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("fleet", sa.Text, nullable=False),
    sa.Column("device", sa.Text, nullable=False),
    sa.Column("session", sa.BigInteger, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("bundle_sha256", sa.Text, nullable=False),
    sa.Column("received", TIME, nullable=False),
    sa.Column("start", sa.Text, nullable=False),
    sa.Column("end", sa.Text, nullable=False),
    sa.Column("ended", TIME, nullable=False),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("bad_rows", sa.BigInteger, nullable=False),
    sa.Column("outbox_dropped", sa.BigInteger, nullable=False),
    sa.Column("historical", sa.Boolean, nullable=False),
    sa.Column("counts", JSON, nullable=False),
    sa.Column("statistics", JSON, nullable=False),
    sa.Column("verdict", JSON, nullable=False),
    sa.Column("performance", JSON, nullable=False, server_default="{}"),
    sa.Column("outbox_backlog", sa.BigInteger),  # format 7: messages waiting on the device; NULL before
    sa.UniqueConstraint("fleet", "device", "session", "seq", name="windows_key"),
    sa.Index("windows_horizon", "fleet", "bundle_sha256", "ended"),
)

decisions = sa.Table(
    "decisions", METADATA,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("fleet", sa.Text, nullable=False),
    sa.Column("bundle_sha256", sa.Text),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("time", TIME, nullable=False),
    sa.Column("evidence", JSON, nullable=False),
    sa.Column("published", sa.Boolean, nullable=False),
    sa.Index("decisions_fleet", "fleet", "time"),
)

leases = sa.Table(
    "leases", METADATA,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("holder", sa.Text, nullable=False),
    sa.Column("expires", TIME, nullable=False),
)

bundles = sa.Table(
    "bundles", METADATA,
    sa.Column("bundle_sha256", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("added", TIME, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("reference", JSON, nullable=False),
    sa.Column("manifest", JSON, nullable=False),
)

bundle_archives = sa.Table(
    "bundle_archives", METADATA,
    sa.Column("bundle_sha256", sa.Text, primary_key=True),
    sa.Column("archive", sa.LargeBinary, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("added", TIME, nullable=False),
)

model_versions = sa.Table(
    "model_versions", METADATA,
    sa.Column("version", ID, primary_key=True, autoincrement=True),
    sa.Column("fleet", sa.Text, nullable=False),
    sa.Column("cohort", sa.Text, nullable=False),
    sa.Column("bundle_sha256", sa.Text, nullable=False),
    sa.Column("created", TIME, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("parent", sa.Text),
    sa.Column("lineage", JSON, nullable=False),
    sa.Index("model_versions_fleet", "fleet", "cohort", "version"),
)

aliases = sa.Table(
    "aliases", METADATA,
    sa.Column("fleet", sa.Text, primary_key=True),
    sa.Column("cohort", sa.Text, primary_key=True),
    sa.Column("alias", sa.Text, primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("updated", TIME, nullable=False),
)

retrains = sa.Table(
    "retrains", METADATA,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("fleet", sa.Text, nullable=False),
    sa.Column("cohort", sa.Text, nullable=False),
    sa.Column("trigger", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("decision_id", sa.BigInteger),
    sa.Column("requested", TIME, nullable=False),
    sa.Column("started", TIME),
    sa.Column("finished", TIME),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("holder", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("evidence", JSON, nullable=False),
    sa.Column("result", JSON, nullable=False),
    sa.Index("retrains_fleet", "fleet", "requested"),
)

releases = sa.Table(
    "releases", METADATA,
    sa.Column("fleet", sa.Text, primary_key=True),
    sa.Column("version", sa.BigInteger, primary_key=True),
    sa.Column("cohort", sa.Text, nullable=False),
    sa.Column("bundle_sha256", sa.Text, nullable=False),
    sa.Column("created", TIME, nullable=False),
    sa.Column("expires", TIME, nullable=False),
    sa.Column("keyid", sa.Text, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("document", JSON, nullable=False),
)

release_counters = sa.Table(
    "release_counters", METADATA,
    sa.Column("fleet", sa.Text, primary_key=True),
    sa.Column("last", sa.BigInteger, nullable=False),
)

rollouts = sa.Table(
    "rollouts", METADATA,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("fleet", sa.Text, nullable=False),
    sa.Column("release", sa.BigInteger, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("created", TIME, nullable=False),
    sa.Column("updated", TIME, nullable=False),
    sa.Column("plan", JSON, nullable=False),
    sa.Column("wave", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("previous_release", sa.BigInteger),
)

rollout_devices = sa.Table(
    "rollout_devices", METADATA,
    sa.Column("rollout", sa.BigInteger, primary_key=True),
    sa.Column("device", sa.Text, primary_key=True),
    sa.Column("wave", sa.Integer, nullable=False),
    sa.Column("announced", TIME),
    sa.Column("step", sa.Text),
    sa.Column("reason", sa.Text),
    sa.Column("updated", TIME),
)

update_events = sa.Table(
    "update_events", METADATA,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("fleet", sa.Text, nullable=False),
    sa.Column("device", sa.Text, nullable=False),
    sa.Column("received", TIME, nullable=False),
    sa.Column("time", TIME, nullable=False),
    sa.Column("release", sa.BigInteger, nullable=False),
    sa.Column("rollout", sa.BigInteger),
    sa.Column("step", sa.Text, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("refusal", sa.Text),
    sa.Column("payload", JSON, nullable=False),
    sa.Index("update_events_release", "fleet", "release", "device"),
)


class JSONText(sa.types.TypeDecorator):
    """A JSON column written with text :func:`dumps` made already: passed to the driver as it is.

    SQLAlchemy's JSON type would serialize each value again, per column and
    row; on PostgreSQL the parameter is still cast to ``json`` (the dialect's
    bind cast), so the server checks it as before.
    """

    impl = sa.JSON
    cache_ok = True

    def bind_processor(self, dialect):
        return None


#: ``windows`` as :meth:`.store.Store.record_messages` writes it: its JSON columns take :func:`dumps` text.
windows_text = sa.table("windows", *(sa.column(c.name, JSONText() if isinstance(c.type, sa.JSON) else c.type)
                                     for c in windows.c if c.name != "id"))

rejected = sa.Table(
    "rejected", METADATA,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("received", TIME, nullable=False),
    sa.Column("topic", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
)


# -- the JSON columns' text ----------------------------------------------------------------------

def dumps(value) -> str:
    """JSON for the JSON columns: no NaN or infinity, and text both databases keep; ValueError if not.

    orjson writes it (12 times faster than the standard library here, the
    store's largest cost); it writes NaN and infinity as ``null`` and refuses
    what it cannot write, so a text with a ``null`` in it, or a refusal, is
    written again by the standard library, which refuses NaN and says why.

    >>> dumps({"psi": 0.5}), dumps(["caf\u00e9"])
    ('{"psi":0.5}', '["caf\u00e9"]')
    >>> dumps({"psi": float("nan")})
    Traceback (most recent call last):
    ...
    ValueError: Out of range float values are not JSON compliant
    """
    try:
        raw = _orjson(value)
    except (TypeError, _orjson_error):
        raw = b"null"
    if b"null" in raw:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
        text.encode("utf-8")  # an unpaired surrogate raises UnicodeEncodeError, a ValueError
    else:
        text = raw.decode("utf-8")
    if "\\u0000" in text:
        raise ValueError("a JSON text holds a NUL character, which PostgreSQL does not store")
    return text


def loads(text: str | bytes):
    """The value of a JSON text a JSON column holds (orjson: 3 times faster than the standard library here)."""
    return _orjson_loads(text)
