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

With a ``[trigger]`` (:mod:`.retrain`), a decision whose kind is in its
``on`` requests a retrain of its fleet, and so does the schedule (``every``:
a fleet with no retrain requested for that long gets one); a runner thread
runs the requests (under each fleet's ``retrain:<fleet>`` lease, the trigger
in a child process), so the MQTT loop and ingest never wait for a retrain.

With running rollouts (:mod:`.rollout`), every ``rollout_every`` seconds the
holder of the ``rollout`` lease advances them and publishes their
announcements (:mod:`.announcer`); with ``--http HOST:PORT`` the release
folders (``--releases``) are served for the controller's lifetime
(:mod:`.files`), where the announcements say to fetch the bundles, with
``/metrics`` and the JSON API (:mod:`.api`); ``--dashboard HOST:PORT`` adds
the dashboard (:mod:`.dashboard`) to that server (alone, it starts it there).

SIGTERM or SIGINT stops it: no more messages are taken, those received are
committed and acknowledged, the client disconnects cleanly, and it exits 0.
A retrain running then is left to finish, or to be killed at its timeout,
and recorded before the controller exits; a second SIGTERM kills it at once
(recorded as failed, ``controller stopped``, and retried by the policy).
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
from pathlib import Path

from edgeml.errors import FleetError

from .ingest import Ingest
from .settings import ControllerSettings
from .workers import Workers, quiet_gc

#: Seconds between the lines that say how much was stored.
REPORT_EVERY = 10.0


def run(settings: ControllerSettings, *, stop: threading.Event | None = None,
        log: logging.Logger | None = None) -> int:
    """Run the controller until ``stop`` is set (or SIGTERM/SIGINT when on the main thread); the exit code."""
    log = log or logging.getLogger("edgeml.fleet")
    stop = stop or threading.Event()
    retraining: list[Retraining] = []
    if threading.current_thread() is threading.main_thread():
        def stopping(*_):
            if stop.is_set() and retraining:
                retraining[0].abort()  # a second signal: the running retrain is killed now
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, stopping)
    served = _serve(settings, log)
    try:
        return _run(settings, stop, retraining, log)
    finally:
        if served is not None:
            server, store = served
            server.stop()
            store.close()


def _run(settings: ControllerSettings, stop: threading.Event, retraining: list, log: logging.Logger) -> int:
    from .announcer import Rollouts
    from .store import Store

    judging = _judging(settings)
    store = Store.open(settings.store)
    log.info("store %s open; %s%s", store.url,
             f"judging every {judging[1].judge_every:g} s as {settings.holder}" if judging else "judging off",
             f"; committing in {settings.workers} processes" if settings.workers > 1 else "")
    committer = Workers(settings.store, settings.workers, log=log).start() if settings.workers > 1 else None
    quiet_gc()
    ingest = Ingest(settings, store, committer=committer, log=log).start()
    report = Report(log, ingest)
    rollouts = Rollouts(store, settings, ingest.publish, lambda: ingest.connected, log)
    if settings.retraining.name:
        retraining.append(Retraining(store, settings, log).start())
    next_judgement = time.monotonic()
    try:
        while not stop.is_set():
            ingest.step(wait=0.2, stop=stop)
            report.maybe()
            if judging and time.monotonic() >= next_judgement:
                decided = _judge(judging, store, ingest, settings, log)
                if retraining:
                    retraining[0].decided(decided)
                next_judgement = time.monotonic() + judging[1].judge_every
            if retraining:
                retraining[0].maybe_schedule()
            rollouts.maybe()
    finally:
        rollouts.close()
        committed = ingest.close()
        report.final(committed)
        if retraining:
            retraining[0].close()
        if judging:
            _release(store, settings)
        store.close()
    return 1 if ingest.counters.abandoned else 0


def _serve(settings: ControllerSettings, log: logging.Logger):
    """The HTTP server on ``--http`` (or ``--dashboard``: one address) for the controller's lifetime (started) and
    the store it reads, or None without either: the release folders, ``/metrics``, the JSON API, the dashboard."""
    if settings.served is None:
        return None
    from .files import FileServer

    host, port = settings.served
    key = "http" if settings.http is not None else "dashboard"
    where = settings.sources.get(key, "the settings")
    try:
        server = FileServer(settings.releases, host, port, settings.http_token).start()
    except FleetError as exc:
        raise FleetError(f"{key} = {host}:{port} (from {where}): {exc}; a token: --http-token-file FILE "
                         "[EDGEML_FLEET_HTTP_TOKEN_FILE]") from None
    store = _mount_views(server, settings)
    if settings.http is not None and not Path(settings.releases).is_dir():
        log.warning("the release folder %s does not exist (yet): every release is 404 until edgeml release writes "
                    "one there (--releases)", settings.releases)
    log.info("serving the release folders of %s at %s%s", settings.releases, server.url,
             "" if settings.http_token is None else " (clients off loopback send the token)")
    if settings.dashboard is not None:
        log.info("dashboard at %s/%s", server.url,
                 "" if settings.http_token is None else " (off loopback: open /?token=TOKEN once)")
    return server, store


def _mount_views(server, settings: ControllerSettings):
    """``GET /metrics`` (:mod:`.metrics`), the JSON API (:mod:`.api`) and, with ``--dashboard``, the dashboard
    (:mod:`.dashboard`) on the HTTP server, read from a store of their own (returned)."""
    from . import dashboard, policy
    from .api import Api
    from .files import Response
    from .metrics import CONTENT_TYPE, FleetMetrics
    from .store import Store

    source = settings.config or "fleet.toml"
    chosen = policy.Policy.from_table(settings.policy, source) if settings.policy else policy.Policy()
    store = Store.open(settings.store)
    metrics = FleetMetrics(store, chosen)
    server.route("GET", r"/metrics", lambda request: Response(200, {"Content-Type": CONTENT_TYPE},
                                                              metrics.render().encode()))
    Api(store, chosen, stopping=server.stopping).mount(server)
    if settings.dashboard is not None:
        dashboard.mount(server)
    return store


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


def _judge(judging, store, ingest: Ingest, settings: ControllerSettings, log: logging.Logger) -> list:
    """One judgement: decide (if this controller holds the lease), then publish what is unpublished; the new
    decisions."""
    judge, policy, cache = judging
    decided = []
    try:
        decided = judge.decide(store, policy, holder=settings.holder, lease_seconds=settings.lease_seconds,
                               cache=cache)
        for d in decided:
            log.info("decision #%d %s in fleet %s: %s", d.id, d.kind, d.fleet, d.evidence.get("summary", d.kind))
        if not ingest.connected or store.lease_holder(judge.LEASE) != settings.holder:
            return decided  # only the lease holder publishes: two controllers would race to publish one decision
        for decision_id, topic, payload in judge.outgoing(store):
            if not ingest.publish(topic, payload):
                log.warning("decision %d not acknowledged by the broker; published again at the next judgement",
                            decision_id)
                return decided
            store.mark_published([decision_id])
            log.info("published decision %d on %s", decision_id, topic)
    except FleetError as exc:
        log.error("judging failed: %s; trying again in %g s", exc, policy.judge_every)
    return decided


class Retraining:
    """The controller's part of the loop: requests from decisions and the schedule, a thread that runs them."""

    #: Seconds between the runner's looks for due retrains, and between schedule checks (at most).
    POLL = 1.0

    def __init__(self, store, settings: ControllerSettings, log: logging.Logger):
        from . import retrain

        self.retrain, self.store, self.settings, self.log = retrain, store, settings, log
        self.trigger = settings.retraining
        self.runner = retrain.Runner(store, settings.store, self.trigger, holder=settings.holder,
                                     lease_seconds=settings.lease_seconds, fleets=settings.fleets, log=log)
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="edgeml-retrain-runner", daemon=True)
        self.next_schedule = time.monotonic()

    def start(self) -> Retraining:
        t = self.trigger
        self.log.info("retraining with the %s trigger on %s%s; timeout %g s, %d attempts %g s apart", t.name,
                      ", ".join(t.on) or "no decision", f", and every {t.every:g} s" if t.every else "", t.timeout,
                      t.attempts, t.retry_after)
        self.thread.start()
        return self

    def decided(self, decisions) -> None:
        for d in decisions:
            if d.kind in self.trigger.on:
                self._request(d.fleet, d.kind, d)

    def maybe_schedule(self) -> None:
        if not self.trigger.every or time.monotonic() < self.next_schedule:
            return
        self.next_schedule = time.monotonic() + min(self.trigger.every, self.POLL * 10)
        try:
            fleets = self.settings.fleets or sorted({d.fleet for d in self.store.devices()})
        except FleetError as exc:
            self.log.error("retrain schedule: %s", exc)
            return
        for fleet in fleets:
            self._request(fleet, "schedule", None, every=self.trigger.every)

    def _request(self, fleet: str, reason: str, decision, every: float | None = None) -> None:
        try:
            row = self.retrain.request(self.store, fleet, "", reason, decision, trigger=self.trigger.name, every=every)
        except FleetError as exc:
            self.log.error("cannot request a retrain of fleet %s: %s", fleet, exc)
            return
        if row is not None:
            why = f"{reason}, decision #{decision.id}" if decision is not None else reason
            noted = bool(row.evidence.get("requests"))  # a request made on a retrain pending or running
            self.log.info("retrain #%d of fleet %s %s (%s)", row.id, fleet,
                          f"already {row.status}: request noted" if noted else "requested", why)

    def _loop(self) -> None:
        while not self.closing.is_set():
            try:
                for fleet in self.runner.due():
                    if self.closing.is_set():
                        break
                    self.runner.run_next(fleet)
            except FleetError as exc:
                self.log.error("retrain runner: %s; trying again in %g s", exc, self.POLL)
            self.closing.wait(self.POLL)

    def abort(self) -> None:
        self.runner.abort.set()

    def close(self) -> None:
        """Start no more retrains; wait for the running one to finish or be killed at its timeout."""
        self.closing.set()
        running = self.runner.current
        if running is not None:
            self.log.info("stopping: waiting for retrain #%d of fleet %s (killed at its timeout, %g s after it "
                          "started; SIGTERM again to kill it now)", running.id, running.fleet, self.trigger.timeout)
        self.thread.join()


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
