"""The scoring loop of ``edgeml-runtime run``: score a stream, watch it for drift, report to the fleet.

:mod:`.agent` wires it (model, monitor, telemetry, reader). A reader thread
puts input rows on a queue (:mod:`.stream`); this loop takes them in small
batches, scores them (the model's drift monitor counts every scored row),
counts the rows whose records carry the bundle's label against their
predictions (:mod:`.performance`; the window then carries ``performance``),
hands each closed drift window to :class:`~.telemetry.Telemetry` (which
writes it to the durable outbox before sending), and closes windows on time
even while no row arrives. Bad rows are counted and logged; they never stop
the loop, and every row read is either scored or counted bad, in the
window and in :class:`RunStats` alike. Each closed window goes to the
telemetry (when there is a broker) and to a :class:`WindowFile` (when
``drift_output`` is set). SIGTERM or SIGINT end it cleanly: the open window
is closed and sent, and the death message published (the handlers are in
:mod:`.agent`).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from .errors import InputError, RowError
from .model import Model
from .outputs import stream_file
from .payloads import dumps
from .protocol.envelopes import describe_model
from .sdnotify import Notifier
from .stream import END, Item

BATCH_ROWS = 256
IDLE_SECONDS = 0.25
#: Seconds between the STATUS= lines sent to systemd (rows scored, windows sent).
STATUS_SECONDS = 10.0
LOGGED_ERRORS = 20


@dataclass
class RunStats:
    """Rows read (= ``scored`` + ``bad_rows``) and windows closed; at the end, the windows still waiting in the
    outbox (``backlog``) and those it ever dropped when full."""

    rows: int = 0
    scored: int = 0
    bad_rows: int = 0
    windows: int = 0
    backlog: int = 0
    outbox_dropped: int = 0
    errors_logged: int = field(default=0, repr=False)

    def counts(self) -> str:
        """Rows read, scored and bad, and drift windows: the last log line's and systemd's STATUS= figures."""
        return f"{self.rows} rows, {self.scored} scored, {self.bad_rows} bad, {self.windows} drift windows"


class WindowFile:
    """Drift windows as JSON Lines, appended to ``path`` or written to stdout (``-``): for a device without a
    broker, or beside one. Each line is a window as the drift message carries it, with ``seq`` (0, 1, … in this
    run) and the ``model`` that scored it in front. A window that cannot be written is logged and counted."""

    def __init__(self, path: str, model: dict, log: logging.Logger):
        self.path, self.model, self.log = path, model, log
        self._files = contextlib.ExitStack()
        self._out = self._files.enter_context(stream_file(path, append=True, flag="--drift-output"))
        self.seq = self.failed = 0

    def write(self, window: dict) -> None:
        line = dumps({"seq": self.seq, "model": self.model, **window}).decode() + "\n"
        self.seq += 1
        try:
            self._out.write(line)
            self._out.flush()
        except OSError as exc:
            self.failed += 1
            self.log.error("cannot write drift window %d to %s (%s); %d window(s) lost so far", self.seq - 1,
                           self.path, exc.strerror, self.failed)

    def close(self) -> None:
        self._files.close()


class WindowSinks:
    """Where closed drift windows go: the telemetry (a broker), a :class:`WindowFile`, or both; each is logged
    with its verdict (or why it has none). Shared by ``run`` and ``serve``."""

    def __init__(self, telemetry, window_file: WindowFile | None, log: logging.Logger, min_rows: int):
        self.telemetry, self.window_file, self.log, self.min_rows = telemetry, window_file, log, min_rows
        #: called with each window sent and the identity of the bundle that scored it (the update agent's health
        #: gate counts the windows of the bundle it swapped in); a listener must not raise
        self.listeners: list = []

    def send(self, windows: list[dict], identity: str | None = None) -> int:
        """Send and log each window (scored by the bundle ``identity``); the number sent."""
        for window in windows:
            for listener in self.listeners:
                listener(window, identity)
            if self.telemetry is not None:
                self.telemetry.send_drift(window)
            if self.window_file is not None:
                self.window_file.write(window)
            verdict = window.get("verdict") or {}
            if verdict.get("status") is None:
                self.log.info("drift window %s..%s: %d rows, %d bad, no verdict: fewer scored rows than min_rows = %d "
                              "(lower --min-rows, or raise --window-seconds, to judge such windows)",
                              window.get("start"), window.get("end"), window.get("rows", 0), window.get("bad_rows", 0),
                              self.min_rows)
                continue
            self.log.info("drift window %s..%s: %d rows, %d bad, verdict %s%s", window.get("start"), window.get("end"),
                          window.get("rows", 0), window.get("bad_rows", 0), verdict.get("status"), _why(window))
        return len(windows)

    def hand_over(self, monitor, identity: str, model: dict) -> int:
        """A swap: send the old bundle's (``identity``) closed windows and its open one from ``monitor``, then
        point the telemetry and the window file at the new ``model`` (:func:`describe_model`); the number sent."""
        windows = monitor.poll()
        last = monitor.flush()
        sent = self.send(windows + ([last] if last is not None else []), identity)
        if self.window_file is not None:
            self.window_file.model = model
        if self.telemetry is not None:
            self.telemetry.set_model(model)
        return sent


class StreamScorer:
    """The loop: queue in, predictions and drift windows out."""

    def __init__(self, model: Model, telemetry, *, writer=None, publish_predictions: bool = False,
                 log: logging.Logger | None = None, window_file: WindowFile | None = None,
                 notifier: Notifier | None = None):
        self.model = model
        #: systemd's watchdog, fed on every turn of the loop (:mod:`.sdnotify`); a no-op outside systemd
        self.notifier = notifier or Notifier()
        watchdog = self.notifier.watchdog_seconds
        self.idle = min(IDLE_SECONDS, watchdog / 4) if watchdog else IDLE_SECONDS
        self.monitor = model.monitor
        self.telemetry = telemetry  # None without a broker
        self.window_file = window_file
        self.writer = writer
        self.publish_predictions = publish_predictions
        self.log = log or logging.getLogger("edgeml_runtime.run")
        self.sinks = WindowSinks(telemetry, window_file, self.log, self.monitor.settings.rule.min_rows)
        self.stats = RunStats()
        self._use(model)
        self._swaps: queue.SimpleQueue = queue.SimpleQueue()
        self._swap_lock = threading.Lock()
        self._ended = False

    def _use(self, model: Model) -> None:
        self.model, self.monitor = model, model.monitor
        counting = self.monitor is not None and self.monitor.performance is not None
        self.label = model.manifest.label if counting else None  # the column whose values are counted, if any

    def swap(self, model: Model, timeout: float = 60.0) -> Model:
        """Score with ``model`` (loaded, self-tested, its monitor set) from the next batch on; the old model.

        Called from another thread (the update agent's) while :meth:`run` runs: the loop swaps between two
        batches, so every row read is scored by exactly one of the two models, and the old model's last window
        is closed and sent first. Raises TimeoutError if the loop did not take it within ``timeout``.
        """
        done = Future()
        with self._swap_lock:
            if self._ended:
                raise TimeoutError("the scoring loop has ended: the swap was not taken")
            self._swaps.put((model, done))
        try:
            return done.result(timeout)
        except TimeoutError:
            done.cancel()  # not taken in time: the loop must not take it later either
            raise

    def _take_swaps(self) -> None:
        while not self._swaps.empty():
            model, done = self._swaps.get()
            if not done.set_running_or_notify_cancel():
                continue  # its caller gave up waiting
            old = self.model
            self.stats.windows += self.sinks.hand_over(self.monitor, old.manifest.identity, describe_model(model))
            self._use(model)
            self.log.info("swapped in %s %s (bundle %s) for %s %s", model.manifest.name, model.manifest.version,
                          model.manifest.identity[:12], old.manifest.name, old.manifest.version)
            done.set_result(old)

    def run(self, items: queue.Queue, stop: threading.Event) -> RunStats:
        ended = False
        status_at = time.monotonic() + STATUS_SECONDS
        while not ended and not stop.is_set():
            self._take_swaps()
            self.notifier.alive()
            if self.notifier.enabled and time.monotonic() >= status_at:
                self.notifier.status(self.stats.counts())
                status_at = time.monotonic() + STATUS_SECONDS
            batch: list[Item] = []
            try:
                first = items.get(timeout=self.idle)
            except queue.Empty:
                first = None
            if first is END:
                ended = True
            elif first is not None:
                batch.append(first)
                while len(batch) < BATCH_ROWS:
                    try:
                        nxt = items.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is END:
                        ended = True
                        break
                    batch.append(nxt)
            if batch:
                self._score(batch)
            self._send(self.monitor.poll())
        with self._swap_lock:  # a swap asked for from now on is refused; one asked for already is taken
            self._ended = True
        self._take_swaps()
        self.notifier.stopping(self.stats.counts())
        last = self.monitor.flush()
        if last is not None:
            self._send([last])
        return self.stats

    def _score(self, batch: list[Item]) -> None:
        self.stats.rows += len(batch)
        unreadable = [i.error for i in batch if i.error is not None]
        readable = [i for i in batch if i.error is None]
        if self.writer is not None and readable:
            readable = self._without_clashes(readable, unreadable)
        if unreadable:
            self.monitor.update({}, None, unreadable)
            self._log_errors(unreadable)
            self.stats.bad_rows += len(unreadable)
        if not readable:
            return
        try:
            result = self.model.predict([i.record for i in readable], on_error="skip",
                                        row_numbers=[i.row for i in readable])
        except InputError as exc:  # not expected with on_error="skip"; if it comes, every row of the batch is bad
            errors = [RowError(i.row, None, str(exc)) for i in readable]
            self.monitor.update({}, None, errors)
            self._log_errors(errors)
            self.stats.bad_rows += len(errors)
            return
        errors = list(result.errors)
        self._log_errors(errors)
        self.stats.bad_rows += len(errors)
        self.stats.scored += len(result)
        label = self.label
        # Decided once per batch, not per row: records of one input share their keys (a CSV header, a logger's
        # JSON), so a batch whose first and last records lack the label column has none to count.
        if label is not None and len(result) and (label in readable[0].record or label in readable[-1].record):
            self.monitor.count_labels([readable[i].record.get(label) for i in result.rows], result.labels)
        if self.writer is not None:
            self.writer.write([readable[i].record for i in result.rows], result.labels, result.probabilities)
        if self.publish_predictions:
            for j, i in enumerate(result.rows):
                payload = {"row": readable[i].row, "prediction": result.labels[j]}
                if result.probabilities is not None:
                    payload["probabilities"] = dict(zip(map(str, result.classes), result.probabilities[j].tolist(),
                                                        strict=False))
                self.telemetry.send_prediction(payload)

    def _without_clashes(self, readable: list[Item], unreadable: list[RowError]) -> list[Item]:
        """Records with a key the output adds (``prediction``, ``proba_<class>``) become row errors, not overwrites."""
        added = self.writer.added
        kept = []
        for item in readable:
            if added.isdisjoint(item.record):
                kept.append(item)
                continue
            clash = ", ".join(map(repr, self.writer.clashes(item.record)))
            unreadable.append(RowError(item.row, None, f"has column(s) {clash}, which the scored output adds itself; "
                                                       "rename them in the input"))
        return kept

    def _send(self, windows: list[dict]) -> None:
        self.stats.windows += self.sinks.send(windows, self.model.manifest.identity)

    def _log_errors(self, errors: list[RowError]) -> None:
        for e in errors:
            if self.stats.errors_logged < LOGGED_ERRORS:
                self.log.warning("skipped %s", e)
            elif self.stats.errors_logged == LOGGED_ERRORS:
                self.log.warning("more bad rows: counting them in the drift windows, not logging each")
            self.stats.errors_logged += 1


def _why(window: dict) -> str:
    """The drifted columns with their PSI and p-value, and the level they were tested at (or nothing)."""
    verdict, columns = window.get("verdict") or {}, window.get("columns") or {}
    drifted = [(n, columns.get(n) or {}) for n in verdict.get("drifted_columns") or []]
    if not drifted:
        return ""
    shown = ", ".join(f"{n} PSI {c.get('psi')} p {c.get('p_value')}" for n, c in drifted)
    return f" ({shown}; p-values tested at level {verdict.get('level')} = alpha / {verdict.get('tests')} tests)"
