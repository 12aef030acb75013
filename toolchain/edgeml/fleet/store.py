"""The fleet store: what devices said (births, deaths, drift windows), the bundle registry, decisions, leases.

SQLAlchemy Core over one of two databases, chosen by URL:

* **SQLite** (the default, ``sqlite:///fleet.db``: one file, zero setup), in
  WAL mode (readers never wait for the writer), ``synchronous=FULL``,
  ``foreign_keys=ON`` and a 10 s ``busy_timeout``. FULL, not NORMAL: the
  controller acknowledges a message to the broker once its transaction has
  committed, and the broker then forgets it, so a commit must survive a power
  cut, not only a killed process (NORMAL in WAL mode may lose the last
  commits on power loss). Batches make the fsync cheap per message
  (``bench/results/store.md``). Every write transaction begins with
  ``BEGIN IMMEDIATE``, so two processes on one file queue for the write lock
  instead of failing when a read turns into a write.
* **PostgreSQL** by URL for larger fleets or several controller hosts:
  ``postgresql+psycopg://user@host/db`` (``postgresql://`` means the same).

:meth:`Store.open` brings the schema up to date (:mod:`.migrations`) and
refuses a store newer than the code. The tables are in :mod:`.schema`; what a
message becomes (checked, and turned into its row) is :mod:`.rows`.

What the controller calls, for messages as
:func:`edgeml_runtime.protocol.decode` returns them (a topic, given as a
string or a parsed :class:`~edgeml_runtime.protocol.Topic`, and a dict):

* :meth:`Store.record_messages` stores many in one transaction and says what
  became of each (:class:`Batch`): commit a batch, then acknowledge every
  message of it. A message that cannot be stored (not the protocol, a value
  no database keeps) is kept in the ``rejected`` table with the reason and
  the others are stored; an error of the database itself (unreachable,
  locked) raises and nothing of the batch is committed, so nothing may be
  acknowledged. :meth:`Store.record_birth`, :meth:`~Store.record_death` and
  :meth:`~Store.record_window` do one message each, raising on a bad one;
* windows are de-duplicated on (fleet, device, session, seq): ``INSERT ...
  ON CONFLICT DO NOTHING`` on both databases, so a repeat stored by this or
  any other controller is a no-op (``record_window`` returns False). On
  SQLite a batch first tries a plain INSERT of its windows in a savepoint,
  the common case of none stored before, and takes ON CONFLICT only if one
  was (:func:`.inserts.sqlite_all_new`);
* an update step (``edgeml/<fleet>/<device>/update``) is kept in
  ``update_events`` once per (fleet, device, release, rollout, step, time)
  and made the device's last step of the rollout it names, in the same
  transaction (:func:`.inserts.update_event`); a repeat is ``duplicate``;
* births and deaths follow Sparkplug: each is kept only if its ``bdSeq`` is at
  least the last one's of its kind, and a device is online while its birth's
  ``bdSeq`` is greater than its death's (a late will of an old connection
  does not take it offline);
* :meth:`Store.windows` (a horizon: since a time, or the last N windows, of a
  fleet or a device, of one bundle), :meth:`~Store.devices`,
  :meth:`~Store.record_decision`, :meth:`~Store.decisions`,
  :meth:`~Store.acquire_lease` (one holder at a time, by a conditional
  upsert), and the registry's :meth:`~Store.add_bundle`, :meth:`~Store.bundles`.

Example:

>>> import tempfile, pathlib
>>> from edgeml_runtime.protocol import envelopes, examples
>>> from edgeml_runtime.protocol.topics import DeviceTopics
>>> store = Store.open(f"sqlite:///{tempfile.mkdtemp()}/fleet.db")
>>> pi07, window = DeviceTopics("plant-a", "pi-07"), examples()["drift"]
>>> birth = examples()["birth"]
>>> store.record_birth(pi07.birth, birth), store.devices()[0].online
(True, True)
>>> store.record_window(pi07.drift, window), store.record_window(pi07.drift, window)
(True, False)
>>> stale = envelopes.death(pi07, bd_seq=birth["bdSeq"] - 1, reason="lost")
>>> store.record_death(pi07.death, stale), store.devices()[0].online
(True, True)
>>> [(w.device, w.seq, w.rows, w.known) for w in store.windows("plant-a", window["model"]["bundle_sha256"])]
[('pi-07', 41, 1000, False)]
>>> store.record_messages([(pi07.drift, {**window, "seq": 42}), (pi07.drift, {"seq": "x"})]).outcomes
('stored', 'rejected')
>>> store.acquire_lease("judge", "controller-1", 30), store.acquire_lease("judge", "controller-2", 30)
(True, False)
>>> store.close()
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta

from edgeml.errors import FleetError
from edgeml_runtime.errors import ProtocolError
from edgeml_runtime.protocol import Topic

try:
    import orjson  # noqa: F401 - schema's JSON writer: named here, with the extra to install
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql, sqlite
except ModuleNotFoundError as exc:  # pragma: no cover - the extra is installed by make install
    raise FleetError(f"the fleet store needs SQLAlchemy ({exc.name} is not installed); install the fleet extra: "
                     "pip install 'edgeml[fleet]'") from None

from . import schema as t
from .database import MAYBE_REFUSED, connect, first_line, masked, refused_value, safe_text
from .inserts import KEY, PG_WINDOWS, device_upsert, key_of, pg_parameters, sqlite_all_new, update_event
from .migrations import HEAD, migrate
from .records import Batch, Decision, Device, Rejected, StoredWindow
from .rows import Prepared, prepare, whole

#: What a batch says of each message (see :class:`Batch`).
OUTCOMES = ("stored", "duplicate", "stale", "ignored", "rejected")
_INSERT = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}
class Store:
    """An open fleet store; :meth:`open` one, :meth:`close` it (or use it as a context manager)."""

    def __init__(self, engine: sa.Engine, url: str):
        self.engine, self.url = engine, url
        self._insert = _INSERT[engine.dialect.name]
        w = t.windows_text
        self._window_insert = (self._insert(w).on_conflict_do_nothing(index_elements=list(KEY))
                               .returning(*(w.c[k] for k in KEY)))

    @classmethod
    def open(cls, url: str, *, version: int = HEAD) -> Store:
        """Open the store at ``url`` and migrate it to ``version`` (the newest by default; older ones for tests)."""
        engine = connect(url)
        store = cls(engine, masked(url))
        with store._write() as conn:
            migrate(conn, store.url, version)
        return store

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _write(self):
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite), committed on leaving."""
        with self._failing(), self.engine.connect().execution_options(edgeml_write=True) as conn, conn.begin():
            yield conn

    @contextmanager
    def _read(self):
        with self._failing(), self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def _failing(self):
        """A failure of the database itself as a FleetError naming the store (a refused value passes through)."""
        try:
            yield
        except sa.exc.DBAPIError as exc:
            if refused_value(exc):
                raise
            raise FleetError(f"the fleet store {self.url} failed: {first_line(exc.orig)}; nothing of this "
                             "transaction was stored (acknowledge none of its messages)") from exc

    # -- messages ------------------------------------------------------------------------------------

    def record_birth(self, topic: str | Topic, message: Mapping) -> bool:
        """Keep a birth (False if an earlier one than the device's last birth: stale); ProtocolError if bad."""
        return self._one(topic, message, "birth") == "stored"

    def record_death(self, topic: str | Topic, message: Mapping) -> bool:
        """Keep a death (False if stale); it takes the device offline unless its bdSeq is below the birth's."""
        return self._one(topic, message, "death") == "stored"

    def record_window(self, topic: str | Topic, message: Mapping) -> bool:
        """Store a drift window: True if new, False if this key was stored before; ProtocolError if bad."""
        return self._one(topic, message, "drift") == "stored"

    def _one(self, topic, message, kind: str) -> str:
        m = prepare(topic, message, time.time())
        if m.reason is None and m.kind != kind:
            m.reason = f"{m.topic} is a {m.kind or 'predictions'} topic, not a {kind} one"
        if m.reason is not None:
            raise ProtocolError(m.reason)
        try:
            with self._write() as conn:
                return self._apply(conn, [m])[0]
        except MAYBE_REFUSED as exc:
            if not refused_value(exc):
                raise
            raise ProtocolError(f"{m.topic}: the database refused a value: "
                                f"{first_line(getattr(exc, 'orig', exc))}") from None

    def record_messages(self, messages: Iterable[tuple[str | Topic, Mapping]]) -> Batch:
        """Store many messages in one transaction; what became of each, in order (acknowledge them all after).

        Messages that break the protocol are rejected before the transaction;
        if the database then refuses a value of one message (a NaN in a JSON
        column, say), the batch is stored again one message at a time, each in
        a savepoint, and only the refused ones are rejected.
        """
        received = time.time()
        with _no_gc():
            batch = [prepare(topic, message, received) for topic, message in messages]
        try:
            with self._write() as conn:
                outcomes = self._apply(conn, batch)
                self._reject(conn, [m for m in batch if m.reason is not None], received)
        except MAYBE_REFUSED as exc:
            if not refused_value(exc):
                raise
            with self._write() as conn:
                outcomes = [self._apply_alone(conn, m) for m in batch]
                self._reject(conn, [m for m in batch if m.reason is not None], received)
        return Batch(tuple(outcomes), tuple(m.reason for m in batch))

    def _apply_alone(self, conn: sa.Connection, m: Prepared) -> str:
        if m.reason is not None:
            return "rejected"
        try:
            with conn.begin_nested():
                return self._apply(conn, [m])[0]
        except MAYBE_REFUSED as exc:
            if not refused_value(exc):
                raise
            m.reason = f"{m.topic}: the database refused a value: {first_line(getattr(exc, 'orig', exc))}"
            return "rejected"

    def _apply(self, conn: sa.Connection, batch: list[Prepared]) -> list[str]:
        outcomes = ["rejected" if m.reason else "ignored" for m in batch]
        for i, m in enumerate(batch):
            if m.reason is None and m.kind in ("birth", "death"):
                outcomes[i] = "stored" if conn.execute(device_upsert(self._insert, m)).first() else "stale"
            elif m.reason is None and m.kind == "update":
                outcomes[i] = "stored" if update_event(conn, m.row)[0] else "duplicate"
        fresh: dict[tuple, int] = {}
        for i, m in enumerate(batch):
            if m.reason is None and m.kind == "drift":
                key = key_of(m.row)
                outcomes[i] = "duplicate"
                fresh.setdefault(key, i)
        if fresh:
            rows = [batch[i].row for i in fresh.values()]
            if conn.dialect.name == "postgresql":
                result = conn.exec_driver_sql(PG_WINDOWS, pg_parameters(rows))
            elif sqlite_all_new(conn, rows):
                result = fresh  # every window of the batch was new: each key stored
            else:
                result = conn.execute(self._window_insert, rows)
            for key in result:
                outcomes[fresh[tuple(key)]] = "stored"
        return outcomes

    def _reject(self, conn: sa.Connection, refused: list[Prepared], received: float) -> None:
        if refused:
            conn.execute(sa.insert(t.rejected), [
                {"received": received, "topic": safe_text(m.topic), "reason": safe_text(m.reason),
                 "payload": json.dumps(m.message, ensure_ascii=True, default=repr)[:4096]} for m in refused])

    # -- queries -------------------------------------------------------------------------------------

    def windows(self, fleet: str, bundle: str | None, *, since: float | datetime | timedelta | None = None,
                last: int | None = None, device: str | None = None) -> list[StoredWindow]:
        """The windows of ``fleet`` (of one ``device`` if given) of ``bundle`` (every bundle if None), oldest first.

        A horizon: ``since`` keeps the windows that ended at or after a time
        (seconds since the epoch, a datetime, or a timedelta back from now);
        ``last`` keeps the latest N by the time they ended. Both may be given.
        ``known`` says whether the bundle is in the registry (a join: adding
        the bundle later makes its windows known).
        """
        w, b = t.windows, t.bundles
        known = sa.exists().where(b.c.bundle_sha256 == w.c.bundle_sha256)
        # JSON columns read as text and parsed by orjson: SQLAlchemy's (or psycopg's) json.loads took most of it
        q = sa.select(*(sa.cast(c, sa.Text) if isinstance(c.type, sa.JSON) else c for c in w.c),
                      known.label("known")).where(w.c.fleet == fleet)
        if bundle is not None:
            q = q.where(w.c.bundle_sha256 == bundle)
        if device is not None:
            q = q.where(w.c.device == device)
        if since is not None:
            q = q.where(w.c.ended >= _seconds(since))
        q = q.order_by(w.c.ended.desc(), w.c.id.desc())
        if last is not None:
            q = q.limit(whole(last, "last", "windows()", 1))
        with self._read() as conn:
            rows = conn.execute(q).all()
        with _no_gc():
            return [StoredWindow.from_text(r) for r in reversed(rows)]

    def devices(self, fleet: str | None = None) -> list[Device]:
        """Every device of ``fleet`` (of every fleet if None), by fleet and device id."""
        d, b = t.devices, t.bundles
        known = sa.exists().where(b.c.bundle_sha256 == d.c.bundle_sha256)
        q = sa.select(d, known.label("known")).order_by(d.c.fleet, d.c.device)
        if fleet is not None:
            q = q.where(d.c.fleet == fleet)
        with self._read() as conn:
            return [Device(**{**r, "online": bool(r["online"]), "known": bool(r["known"])})
                    for r in conn.execute(q).mappings()]

    def unknown_bundles(self, fleet: str | None = None) -> dict[tuple[str, str], int]:
        """(fleet, bundle) → windows stored of bundles the registry does not hold: report them as unknown."""
        w, b = t.windows, t.bundles
        q = (sa.select(w.c.fleet, w.c.bundle_sha256, sa.func.count()).group_by(w.c.fleet, w.c.bundle_sha256)
             .where(~sa.exists().where(b.c.bundle_sha256 == w.c.bundle_sha256)))
        if fleet is not None:
            q = q.where(w.c.fleet == fleet)
        with self._read() as conn:
            return {(f, sha): n for f, sha, n in conn.execute(q)}

    def rejected(self, last: int = 100) -> list[Rejected]:
        """The latest messages a batch could not store, oldest first."""
        r = t.rejected
        with self._read() as conn:
            rows = conn.execute(sa.select(r).order_by(r.c.id.desc()).limit(last)).mappings().all()
        return [Rejected(**row) for row in reversed(rows)]

    # -- decisions and leases ------------------------------------------------------------------------

    def record_decision(self, fleet: str, kind: str, evidence: Mapping, *, bundle: str | None = None,
                        when: float | None = None, lease: tuple[str, str] | None = None) -> int | None:
        """Store a decision and its evidence (unpublished); its id.

        With ``lease=(name, holder)`` it is stored only if ``holder`` holds
        that lease now, in the same statement (None if not): a controller
        whose lease ran out while it judged cannot decide after another took it.
        """
        when = time.time() if when is None else when
        values = {"fleet": fleet, "bundle_sha256": bundle, "kind": kind, "time": when,
                  "evidence": dict(evidence), "published": False}
        stmt = sa.insert(t.decisions).values(values)
        if lease is not None:
            ls = t.leases
            held = sa.select(*(sa.literal(v, t.decisions.c[k].type) for k, v in values.items())).where(
                ls.c.name == lease[0], ls.c.holder == lease[1], ls.c.expires > when)
            stmt = sa.insert(t.decisions).from_select(list(values), held)
        with self._write() as conn:
            row = conn.execute(stmt.returning(t.decisions.c.id)).first()
        return None if row is None else row[0]

    def decisions(self, fleet: str | None = None, *, bundle: str | None = None, kind: str | None = None,
                  published: bool | None = None, last: int | None = None) -> list[Decision]:
        """Decisions, oldest first, filtered by fleet, bundle, kind and whether published; the latest ``last``."""
        dc = t.decisions
        q = sa.select(dc).order_by(dc.c.time.desc(), dc.c.id.desc())
        for column, value in ((dc.c.fleet, fleet), (dc.c.bundle_sha256, bundle), (dc.c.kind, kind),
                              (dc.c.published, published)):
            if value is not None:
                q = q.where(column == value)
        if last is not None:
            q = q.limit(last)
        with self._read() as conn:
            return [Decision(**{**r, "published": bool(r["published"])})
                    for r in reversed(conn.execute(q).mappings().all())]

    def mark_published(self, ids: Iterable[int]) -> None:
        with self._write() as conn:
            conn.execute(sa.update(t.decisions).where(t.decisions.c.id.in_(list(ids))).values(published=True))

    def acquire_lease(self, name: str, holder: str, seconds: float, *, now: float | None = None) -> bool:
        """Take or renew the lease ``name`` for ``seconds``: True if ``holder`` holds it now.

        One statement, atomic on both databases: insert the lease, or take it
        over if it expired or ``holder`` already has it (a renewal).
        """
        now = time.time() if now is None else now
        ls = t.leases
        ins = self._insert(ls).values(name=name, holder=holder, expires=now + seconds)
        stmt = ins.on_conflict_do_update(
            index_elements=[ls.c.name], set_={"holder": ins.excluded.holder, "expires": ins.excluded.expires},
            where=sa.or_(ls.c.holder == ins.excluded.holder, ls.c.expires <= now)).returning(ls.c.holder)
        with self._write() as conn:
            return conn.execute(stmt).first() is not None

    def release_lease(self, name: str, holder: str) -> bool:
        """Give the lease up now (True if ``holder`` held it), so another controller takes it without waiting."""
        ls = t.leases
        with self._write() as conn:
            return conn.execute(sa.delete(ls).where(ls.c.name == name, ls.c.holder == holder)).rowcount == 1

    def lease_holder(self, name: str, *, now: float | None = None) -> str | None:
        """Who holds the lease ``name`` now (None if nobody, or if it expired)."""
        now = time.time() if now is None else now
        ls = t.leases
        with self._read() as conn:
            return conn.execute(sa.select(ls.c.holder).where(ls.c.name == name, ls.c.expires > now)).scalar()

    # -- the bundle registry ---------------------------------------------------------------------------

    def add_bundle(self, identity: str, manifest: Mapping, source: str) -> bool:
        """Register a bundle by identity with its manifest (False if it was registered already)."""
        b = t.bundles
        row = {"bundle_sha256": identity, "name": manifest["name"], "version": manifest["version"],
               "added": time.time(), "source": source, "reference": manifest["reference"],
               "manifest": dict(manifest)}
        stmt = self._insert(b).values(row).on_conflict_do_nothing(index_elements=[b.c.bundle_sha256])
        with self._write() as conn:
            return conn.execute(stmt.returning(b.c.bundle_sha256)).first() is not None

    def bundles(self) -> list[dict]:
        """The registered bundles (identity, name, version, added, source), by name and version."""
        b = t.bundles
        q = sa.select(b.c.bundle_sha256, b.c.name, b.c.version, b.c.added, b.c.source).order_by(
            b.c.name, b.c.version, b.c.added)
        with self._read() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def reference(self, identity: str) -> dict | None:
        """The drift reference of a registered bundle (None if the registry does not hold it)."""
        b = t.bundles
        with self._read() as conn:
            return conn.execute(sa.select(b.c.reference).where(b.c.bundle_sha256 == identity)).scalar()


@contextmanager
def _no_gc():
    """The cyclic garbage collector paused while many small acyclic objects are made (rows, parsed JSON).

    Its passes, triggered by every 700 allocations, took 60 % of parsing a
    horizon of 10,000 windows (bench/results/store.md); reference counting
    still frees everything these objects hold.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _seconds(since) -> float:
    if isinstance(since, timedelta):
        return time.time() - since.total_seconds()
    if isinstance(since, datetime):
        return since.timestamp()
    return float(since)
