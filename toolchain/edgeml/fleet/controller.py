"""The fleet controller's long-running loop (``edgeml fleet run``): ingest, judge on a timer, publish decisions.

:func:`run` opens the store, starts :class:`~.ingest.Ingest` and then, on
one thread, takes batch after batch of messages (committed, then
acknowledged) and every ``judge_every`` seconds (the policy's, or
``--judge-every``; 0 turns judging off):

1. :func:`edgeml.fleet.judge.decide` takes or renews the store's ``judge``
   lease as this controller's ``holder``; if it holds it, it judges every
   fleet and bundle and stores new decisions (fenced by the lease, so of
   several controllers only one decides);
2. :func:`edgeml.fleet.judge.outgoing` lists the decisions not yet
   published; each is published retained at QoS 1 on its fleet's status
   topic and marked published once the broker acknowledged it. A controller
   killed between the PUBACK and the mark publishes that decision again
   (retained: a repeat of the same message).

SIGTERM or SIGINT stops it: no more messages are taken, those received are
committed and acknowledged, the client disconnects cleanly, and it exits 0.
A broker that is down (at start or later) is retried with backoff and
logged; a store that fails is retried likewise, acknowledging nothing.

A line is logged per event worth seeing: connected, subscribed, and every
:data:`REPORT_EVERY` seconds the windows stored and their rate, duplicates,
rejected messages; each decision.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time

from edgeml.errors import FleetError

from .ingest import Ingest
from .settings import ControllerSettings
from .workers import Workers, quiet_gc

#: Seconds between the lines that say how much was stored.
REPORT_EVERY = 10.0


def run(settings: ControllerSettings, *, stop: threading.Event | None = None,
        log: logging.Logger | None = None) -> int:
    """Run the controller until ``stop`` is set (or SIGTERM/SIGINT when on the main thread); the exit code."""
    from .store import Store

    log = log or logging.getLogger("edgeml.fleet")
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    judging = _judging(settings)
    store = Store.open(settings.store)
    log.info("store %s open; %s%s", store.url,
             f"judging every {judging[1].judge_every:g} s as {settings.holder}" if judging else "judging off",
             f"; committing in {settings.workers} processes" if settings.workers > 1 else "")
    committer = Workers(settings.store, settings.workers, log=log).start() if settings.workers > 1 else None
    quiet_gc()
    ingest = Ingest(settings, store, committer=committer, log=log).start()
    report = Report(log, ingest)
    next_judgement = time.monotonic()
    try:
        while not stop.is_set():
            ingest.step(wait=0.2, stop=stop)
            report.maybe()
            if judging and time.monotonic() >= next_judgement:
                _judge(judging, store, ingest, settings, log)
                next_judgement = time.monotonic() + judging[1].judge_every
    finally:
        committed = ingest.close()
        report.final(committed)
        if judging:
            _release(store, settings)
        store.close()
    return 1 if ingest.counters.abandoned else 0


def _judging(settings: ControllerSettings):
    """(the judge module, the policy), or None with judging off (``--judge-every 0``)."""
    if settings.judge_every == 0:
        return None
    try:
        from . import judge, policy
    except ImportError as exc:
        raise FleetError(f"judging needs edgeml.fleet.judge and edgeml.fleet.policy ({exc}); run with "
                         "--judge-every 0 to only store what devices send") from None
    source = settings.config or "fleet.toml"
    chosen = policy.Policy.from_table(settings.policy, source) if settings.policy else policy.Policy()
    if settings.judge_every is not None:
        chosen = dataclasses.replace(chosen, judge_every=settings.judge_every)
    # A cache of the windows read, kept across judgements: each reads and decodes only the windows new since.
    return None if chosen.judge_every == 0 else (judge, chosen, judge.WindowCache())


def _judge(judging, store, ingest: Ingest, settings: ControllerSettings, log: logging.Logger) -> None:
    """One judgement: decide (if this controller holds the lease), then publish what is unpublished."""
    judge, policy, cache = judging
    try:
        for d in judge.decide(store, policy, holder=settings.holder, lease_seconds=settings.lease_seconds,
                              cache=cache):
            log.info("decision #%d %s in fleet %s: %s", d.id, d.kind, d.fleet, d.evidence.get("summary", d.kind))
        if not ingest.connected or store.lease_holder(judge.LEASE) != settings.holder:
            return  # only the lease holder publishes: two controllers would race to publish one decision twice
        for decision_id, topic, payload in judge.outgoing(store):
            if not ingest.publish(topic, payload):
                log.warning("decision %d not acknowledged by the broker; published again at the next judgement",
                            decision_id)
                return
            store.mark_published([decision_id])
            log.info("published decision %d on %s", decision_id, topic)
    except FleetError as exc:
        log.error("judging failed: %s; trying again in %g s", exc, policy.judge_every)


def _release(store, settings: ControllerSettings) -> None:
    try:
        store.release_lease("judge", settings.holder)
    except FleetError:
        pass  # it expires on its own


class Report:
    """The periodic log line: windows stored (and their rate), duplicates, births and deaths, rejected."""

    def __init__(self, log: logging.Logger, ingest: Ingest):
        self.log, self.ingest = log, ingest
        self.at, self.seen = time.monotonic(), dict(ingest.counters.outcomes)

    def maybe(self) -> None:
        if time.monotonic() - self.at >= REPORT_EVERY:
            self._line()

    def _line(self, prefix: str = "") -> None:
        now, outcomes = time.monotonic(), dict(self.ingest.counters.outcomes)
        new = {k: v - self.seen.get(k, 0) for k, v in outcomes.items() if v - self.seen.get(k, 0)}
        if new:
            stored = new.get("stored", 0)
            rate = stored / max(now - self.at, 1e-9)
            rest = ", ".join(f"{v} {k}" for k, v in sorted(new.items()) if k != "stored")
            self.log.info("%sstored %d messages (%.0f/s)%s", prefix, stored, rate, f"; {rest}" if rest else "")
        self.at, self.seen = now, outcomes

    def final(self, committed: int) -> None:
        self._line("stopping: ")
        c = self.ingest.counters
        outcomes = " ".join(f"{k}={v}" for k, v in sorted(c.outcomes.items()))
        self.log.info("stopped: %d messages received, %d acknowledged in %d batches (%d committed while "
                      "stopping), %d left to the broker; disconnected; outcomes: %s", c.received, c.acknowledged,
                      c.batches, committed, c.abandoned + c.not_acknowledged, outcomes)
