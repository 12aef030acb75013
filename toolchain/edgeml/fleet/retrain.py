"""Retrain requests and runs, in the store's ``retrains`` table: one at a time per fleet, across controllers.

:func:`request` records a pending retrain of a fleet (``reason``: drift,
performance, schedule, manual). A fleet never has more than one retrain
pending or running: a request while one is records itself on it (the
decision in ``evidence["decisions"]``, the request in
``evidence["requests"]``) and returns it.

A :class:`Runner` takes the oldest due pending retrain of a fleet only while
it holds the store lease ``retrain:<fleet>`` (renewed while the retrain runs),
so two controllers never retrain one fleet at once. It runs the trigger
(:mod:`.triggers`) in a child process (``multiprocessing``'s spawn context, in
a process group of its own) and kills the group when ``[trigger] timeout``
passes. The row goes ``pending`` → ``running`` → ``promoted``, ``rejected``,
``done``, ``failed`` or ``timeout``, with ``error`` (why) and ``result``
(what the trigger said). A failure or a timeout is retried only by policy: a
new row, ``attempt`` + 1, due ``retry_after`` seconds later (its
``requested`` is when it is due), up to ``attempts`` rows in all. A
``running`` row whose lease expired (its controller was killed) is marked
``failed`` with the reason ``controller stopped`` by the next runner of that
fleet, and retried by the same policy.

>>> import tempfile
>>> from edgeml.fleet.store import Store
>>> store = Store.open(f"sqlite:///{tempfile.mkdtemp()}/fleet.db")
>>> first = request(store, "plant-a", reason="drift", trigger="command")
>>> again = request(store, "plant-a", reason="manual", trigger="command")
>>> (first.id, first.status, first.attempt), again.id == first.id, again.evidence["requests"][0]["reason"]
((1, 'pending', 1), True, 'manual')
>>> request(store, "plant-a", reason="often", trigger="command")
Traceback (most recent call last):
...
edgeml.errors.FleetError: retrain reason 'often' is not one of drift, performance, schedule, manual
>>> store.close()
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import sqlalchemy as sa

from edgeml.errors import FleetError

from . import schema as t
from .triggers import Job, run_in_child, trigger

REASONS = ("drift", "performance", "schedule", "manual")
ACTIVE = ("pending", "running")
FINISHED = ("promoted", "rejected", "done", "failed", "timeout")
#: Outcomes retried by ``attempts`` and ``retry_after``.
RETRIED = ("failed", "timeout")
STOPPED = "controller stopped"
#: Progress lines of a run kept in its result.
PROGRESS_KEPT = 20


def lease_name(fleet: str) -> str:
    return f"retrain:{fleet}"


@dataclass(frozen=True)
class Retrain:
    """One row of ``retrains``: an attempt at retraining a fleet (and cohort), why, and how it went."""

    id: int
    fleet: str
    cohort: str
    trigger: str
    reason: str
    decision_id: int | None
    requested: float
    started: float | None
    finished: float | None
    status: str
    attempt: int
    holder: str | None
    error: str | None
    evidence: dict
    result: dict

    @property
    def request_id(self) -> int:
        """The id of the request's first attempt (the same for all its retries)."""
        return self.evidence.get("request", self.id)

    def to_dict(self) -> dict:
        return asdict(self)


def request(store, fleet: str, cohort: str = "", reason: str = "manual", decision=None, *, trigger: str,
            every: float | None = None, now: float | None = None) -> Retrain | None:
    """Record a pending retrain of ``fleet`` (or note this request on the one pending or running); the row.

    ``decision``: the :class:`~.records.Decision` that asks for it. ``every``
    (the schedule): request only if the fleet had no retrain requested within
    that many seconds, else None.
    """
    if reason not in REASONS:
        raise FleetError(f"retrain reason {reason!r} is not one of {', '.join(REASONS)}")
    now = time.time() if now is None else now
    note = None if decision is None else {"id": decision.id, "kind": decision.kind, "bundle": decision.bundle_sha256,
                                          "time": decision.time, "evidence": decision.evidence}
    r = t.retrains
    with store._write() as conn:
        _lock(conn)
        active = conn.execute(sa.select(r).where(r.c.fleet == fleet, r.c.status.in_(ACTIVE))
                              .order_by(r.c.id)).mappings().first()
        if active is not None:
            if every is not None:
                return None  # the schedule asks nothing of a fleet already being retrained
            evidence = dict(active["evidence"])
            evidence["requests"] = [*evidence.get("requests", []), {"reason": reason, "time": now,
                                                                    "decision": None if note is None else note["id"]}]
            if note is not None:
                evidence["decisions"] = [*evidence.get("decisions", []), note]
            conn.execute(sa.update(r).where(r.c.id == active["id"]).values(evidence=evidence))
            return Retrain(**{**active, "evidence": evidence})
        if every is not None:
            last = conn.execute(sa.select(sa.func.max(r.c.requested)).where(r.c.fleet == fleet)).scalar()
            if last is not None and last > now - every:
                return None
        row = {"fleet": fleet, "cohort": cohort, "trigger": trigger, "reason": reason,
               "decision_id": None if note is None else note["id"], "requested": now, "status": "pending",
               "attempt": 1, "evidence": {"decisions": [note] if note else []}, "result": {}}
        new = conn.execute(sa.insert(r).values(row).returning(r.c.id)).scalar_one()
    return get(store, new)


def _lock(conn) -> None:
    """Serialise requests: SQLite's BEGIN IMMEDIATE already does; PostgreSQL locks the table against writers."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("LOCK TABLE retrains IN SHARE ROW EXCLUSIVE MODE")


def get(store, retrain_id: int) -> Retrain:
    found = retrains(store, where=t.retrains.c.id == retrain_id)
    if not found:
        raise FleetError(f"the store has no retrain {retrain_id}")
    return found[0]


def retrains(store, fleet: str | None = None, *, where=None) -> list[Retrain]:
    """The retrains (of ``fleet``), oldest first."""
    r = t.retrains
    q = sa.select(r).order_by(r.c.id)
    if fleet is not None:
        q = q.where(r.c.fleet == fleet)
    if where is not None:
        q = q.where(where)
    with store._read() as conn:
        return [Retrain(**{**row, "evidence": dict(row["evidence"] or {}), "result": dict(row["result"] or {})})
                for row in conn.execute(q).mappings()]


def evidence_document(row: Retrain, champion: dict | None = None) -> dict:
    """What a command reads on stdin and a webhook receives: the retrain, the decisions behind it, the champion."""
    keys = ("id", "fleet", "cohort", "trigger", "reason", "attempt", "requested", "decision_id")
    return {"retrain": {**{k: getattr(row, k) for k in keys}, "request": row.request_id},
            "decisions": row.evidence.get("decisions", []), "requests": row.evidence.get("requests", []),
            "champion": champion}


class Runner:
    """Runs the retrains of the fleets it is given (every fleet if none) under their leases, one at a time."""

    def __init__(self, store, store_url: str, settings, *, holder: str, lease_seconds: float = 30.0,
                 fleets: tuple[str, ...] = (), log: logging.Logger | None = None,
                 progress: Callable[[Retrain, str], None] | None = None):
        self.store, self.store_url, self.settings = store, store_url, settings
        self.holder, self.lease_seconds, self.fleets = holder, lease_seconds, tuple(fleets)
        self.log = log or logging.getLogger("edgeml.fleet")
        self.progress = progress
        self.abort = threading.Event()  #: set: kill the running child now (recorded as controller stopped)
        self.current: Retrain | None = None

    def due(self, now: float | None = None) -> list[str]:
        """Fleets with a pending retrain due, or a running one no live runner holds (to be marked failed)."""
        now = time.time() if now is None else now
        r = t.retrains
        q = sa.select(r.c.fleet).where(sa.or_(sa.and_(r.c.status == "pending", r.c.requested <= now),
                                              r.c.status == "running")).distinct().order_by(r.c.fleet)
        with self.store._read() as conn:
            found = [f for (f,) in conn.execute(q)]
        return [f for f in found if (not self.fleets or f in self.fleets)
                and self.store.lease_holder(lease_name(f), now=now) in (None, self.holder)]

    def run_next(self, fleet: str, *, now_anyway: bool = False) -> Retrain | None:
        """Run the fleet's oldest due pending retrain (any pending one with ``now_anyway``) if this runner takes
        the lease; the finished row, or None (nothing due, or another runner holds the lease)."""
        name = lease_name(fleet)
        if not self.store.acquire_lease(name, self.holder, self.lease_seconds):
            return None
        try:
            self._recover(fleet)
            row = self._take(fleet, None if now_anyway else time.time())
            if row is None:
                return None
            self.current = row
            self.log.info("retrain #%d of fleet %s started (%s, attempt %d, trigger %s)", row.id, fleet, row.reason,
                          row.attempt, row.trigger)
            try:
                outcome = self._execute(row)
            except FleetError as exc:  # the store failed before the trigger ran
                outcome = {"status": "failed", "error": str(exc)}
            done = self._finish(row, outcome)
            self.log.info("retrain #%d of fleet %s: %s%s", done.id, fleet, done.status,
                          f": {done.error}" if done.error else "")
            return done
        finally:
            self.current = None
            try:
                self.store.release_lease(name, self.holder)
            except FleetError:
                pass  # it expires on its own

    def _recover(self, fleet: str) -> None:
        """Running rows of a fleet whose lease this runner now holds: their runner died; failed, retried."""
        for row in retrains(self.store, fleet, where=t.retrains.c.status == "running"):
            self.log.warning("retrain #%d of fleet %s was left running by %s: %s", row.id, fleet, row.holder,
                             STOPPED)
            self._finish(row, {"status": "failed", "error": f"{STOPPED} ({row.holder} held it)"}, fenced=False)

    def _take(self, fleet: str, now: float | None) -> Retrain | None:
        r = t.retrains
        cond = [r.c.fleet == fleet, r.c.status == "pending"] + ([r.c.requested <= now] if now is not None else [])
        with self.store._write() as conn:
            found = conn.execute(sa.select(r.c.id).where(*cond).order_by(r.c.requested, r.c.id)).first()
            if found is None:
                return None
            # the trigger configured now runs it (a request made before fleet.toml changed says so in its row)
            conn.execute(sa.update(r).where(r.c.id == found[0]).values(status="running", started=time.time(),
                                                                         holder=self.holder,
                                                                         trigger=self.settings.name))
        return get(self.store, found[0])

    def _execute(self, row: Retrain) -> dict:
        """The trigger's outcome; the child killed at the timeout (or on abort, or when the lease is lost)."""
        from . import versions

        s = self.settings
        chosen = trigger(row.trigger, s.source)
        best = versions.champion(self.store, row.fleet, row.cohort)
        workdir = tempfile.mkdtemp(prefix=f"edgeml-retrain-{row.id}-")
        job = Job(retrain=row.to_dict(), evidence=evidence_document(row, best and best.to_dict()),
                  options=dict(s.options), store=self.store_url, build=dict(s.build), promotion=dict(s.promotion),
                  source=s.source, workdir=workdir)
        ctx = multiprocessing.get_context("spawn")
        receive, send = ctx.Pipe(duplex=False)
        child = ctx.Process(target=run_in_child, args=(chosen.run, job, send), name=f"edgeml-retrain-{row.id}")
        started = time.monotonic()
        child.start()
        send.close()
        outcome, lines, renewed = None, [], started
        while True:
            if receive.poll(0.2):
                try:
                    kind, payload = receive.recv()
                except (EOFError, OSError):
                    break
                if kind == "progress":
                    lines = [*lines, payload][-PROGRESS_KEPT:]
                    self.log.info("retrain #%d: %s", row.id, payload)
                    if self.progress:
                        self.progress(row, payload)
                else:
                    outcome = payload
            now = time.monotonic()
            if now - started > s.timeout:
                _kill(child)
                outcome = {"status": "timeout", "error": f"the {row.trigger} trigger ran past [trigger] timeout "
                                                         f"({s.timeout:g} s) and was killed"}
                break
            if self.abort.is_set():
                _kill(child)
                outcome = {"status": "failed", "error": f"{STOPPED}: killed by a second SIGTERM"}
                break
            if now - renewed >= self.lease_seconds / 3:
                renewed = now
                if not self._renew(row):
                    _kill(child)
                    outcome = {"status": "failed", "error": "the retrain lease was lost: it was not renewed within "
                                                            f"lease_seconds ({self.lease_seconds:g} s)"}
                    break
            if not child.is_alive() and not receive.poll(0):
                break
        child.join()
        receive.close()
        if outcome is None:
            outcome = {"status": "failed", "error": f"the {row.trigger} trigger's process died (exit code "
                                                    f"{child.exitcode}) before it said how it went"}
        return {**outcome, "progress": lines, "workdir": workdir, "seconds": round(time.monotonic() - started, 3)}

    def _renew(self, row: Retrain) -> bool:
        try:
            return self.store.acquire_lease(lease_name(row.fleet), self.holder, self.lease_seconds)
        except FleetError as exc:
            self.log.warning("retrain #%d: cannot renew its lease: %s", row.id, exc)
            return True  # the store may come back before the lease runs out; acquire_lease then says

    def _finish(self, row: Retrain, outcome: dict, *, fenced: bool = True) -> Retrain:
        """Record the outcome (only if this runner still holds the row) and the retry the policy calls for."""
        status = outcome.get("status") if outcome.get("status") in FINISHED else "failed"
        error = outcome.get("error") or (None if status != "failed" else f"the trigger said {outcome!r:.200}")
        result = {k: v for k, v in outcome.items() if k not in ("status", "error")}
        r, s, now = t.retrains, self.settings, time.time()
        with self.store._write() as conn:
            _lock(conn)
            where = [r.c.id == row.id, r.c.status == "running"] + ([r.c.holder == self.holder] if fenced else [])
            if conn.execute(sa.update(r).where(*where).values(status=status, error=error, result=result,
                                                              finished=now)).rowcount != 1:
                return get(self.store, row.id)
            current = conn.execute(sa.select(r.c.evidence).where(r.c.id == row.id)).scalar()
            if status in RETRIED and row.attempt < s.attempts:
                evidence = {**dict(current or {}), "request": row.request_id, "retry_of": row.id}
                conn.execute(sa.insert(r).values(
                    fleet=row.fleet, cohort=row.cohort, trigger=row.trigger, reason=row.reason,
                    decision_id=row.decision_id, requested=now + s.retry_after, status="pending",
                    attempt=row.attempt + 1, evidence=evidence, result={}))
        return get(self.store, row.id)


def run_now(store, store_url: str, settings, fleet: str, cohort: str = "", *, holder: str,
            lease_seconds: float = 30.0, log: logging.Logger | None = None,
            progress: Callable[[Retrain, str], None] | None = None) -> Retrain:
    """``edgeml fleet retrain``: request a manual retrain and run it now, in the foreground, under the fleet's lease
    (a pending request of the fleet is run instead, with this one noted on it); the finished row. FleetError
    naming the holder while another retrain of the fleet runs."""
    if settings.name is None:
        raise FleetError(f"{settings.source}: no [trigger] name: say how to retrain, e.g. [trigger] name = "
                         "\"command\" and command = [\"/usr/local/bin/retrain\"]")
    name = lease_name(fleet)
    if not store.acquire_lease(name, holder, lease_seconds):
        raise FleetError(f"a retrain of fleet {fleet!r} is running, held by {store.lease_holder(name)}; wait for it "
                         "to finish (its row in the retrains table says how it went) and run this again")
    runner = Runner(store, store_url, settings, holder=holder, lease_seconds=lease_seconds, fleets=(fleet,), log=log,
                    progress=progress)
    try:
        request(store, fleet, cohort, "manual", trigger=settings.name)
    except BaseException:
        store.release_lease(name, holder)
        raise
    done = runner.run_next(fleet, now_anyway=True)
    if done is None:  # only if the lease was lost in between
        raise FleetError(f"the retrain of fleet {fleet!r} could not be taken: the lease went to "
                         f"{store.lease_holder(name)}")
    return done


def _kill(child) -> None:
    """Kill the child's process group (the program it runs with it), then the child itself."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    child.kill()


__all__ = ["ACTIVE", "FINISHED", "REASONS", "Retrain", "Runner", "evidence_document", "get", "lease_name", "request",
           "retrains", "run_now"]
