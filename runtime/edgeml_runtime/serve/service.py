"""What ``serve`` serves: the loaded bundle, its drift windows and telemetry, and the swap of one bundle for another.

A :class:`Service` holds one :class:`Served` at a time: a
:class:`~edgeml_runtime.model.Model` with its drift monitor behind a lock
(requests are scored by several threads; the monitor is not thread-safe).
Every scored request is counted into the windows; :meth:`Service.poll`
closes them on time and sends them as ``run`` does
(:class:`~edgeml_runtime.run.WindowSinks`: the broker's outbox, a JSON Lines
file). :meth:`Service.swap` is the hook the update agent calls: the new
bundle is loaded and self-tested beside the current one while requests go
on, then put in place with one assignment; each request is scored wholly by
the model it started with, and the old model's last window is closed (and
sent) once its last request is done. A bundle that fails to load raises,
and the current one keeps serving.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from ..agent import open_telemetry
from ..model import Model, Predictions
from ..payloads import dumps
from ..protocol.envelopes import describe_model
from ..run import WindowFile, WindowSinks
from ..update.process import listen, open_updates, reporter
from .metrics import ServeMetrics


class SharedMonitor:
    """A :class:`~edgeml_runtime.drift.DriftMonitor` behind a re-entrant lock, for the model's scoring threads."""

    def __init__(self, monitor):
        self.monitor = monitor
        self.lock = threading.RLock()

    @property
    def performance(self):
        return self.monitor.performance

    @property
    def settings(self):
        return self.monitor.settings

    def update(self, feeds, outputs, errors=(), seconds=None) -> SharedMonitor:
        with self.lock:
            self.monitor.update(feeds, outputs, errors, seconds)
        return self

    def count_labels(self, labels, predicted) -> SharedMonitor:
        with self.lock:
            self.monitor.count_labels(labels, predicted)
        return self

    def poll(self) -> list[dict]:
        with self.lock:
            return self.monitor.poll()

    def flush(self) -> dict | None:
        with self.lock:
            return self.monitor.flush()

    def current(self) -> dict:
        with self.lock:
            return self.monitor.current()


class Served:
    """One loaded bundle and the requests scoring with it now (:attr:`users`)."""

    def __init__(self, model: Model, monitor: SharedMonitor):
        self.model, self.monitor = model, monitor
        self.description = describe_model(model)
        self.model_json = b'{"model":' + dumps(self.description) + b","  #: the start of every /predict answer
        self.kinds = {c.name: c.kind for c in model.manifest.schema.columns}
        self.label = model.manifest.label
        self.users = 0
        self.idle = threading.Condition()

    @property
    def manifest(self):
        return self.model.manifest


class Service:
    """The bundle being served, its telemetry, metrics and windows; see the module docstring."""

    def __init__(self, bundle: str | os.PathLike, settings, *, log: logging.Logger | None = None):
        self.bundle, self.settings = bundle, settings
        self.log = log or logging.getLogger("edgeml_runtime.serve")
        self.metrics = ServeMetrics()
        self.started = time.time()
        self._swap_lock = threading.Lock()      # one swap at a time
        self._enter_lock = threading.Lock()     # taking the current model and counting its user are one step
        self._send_lock = threading.Lock()      # windows reach the sinks in the order they closed
        self.updates = open_updates(settings, self.log)
        if self.updates is not None:
            self.bundle = bundle = self.updates.startup(bundle)
        self.served = self._load(bundle)
        self.telemetry, self._outbox, _ = open_telemetry(settings, self.served.model, self.log)
        options = settings.serve
        self.window_file = (WindowFile(options.drift_output, self.served.description, self.log)
                            if options.drift_output else None)
        self.sinks = WindowSinks(self.telemetry, self.window_file, self.log, settings.drift.rule.min_rows)
        if self.updates is not None:
            listen(self.updates, self.telemetry)
        if self.telemetry is not None:
            self.telemetry.start()
        if self.updates is not None:
            self.updates.attach(self.swap, self.sinks, reporter(self.telemetry))

    def _load(self, bundle) -> Served:
        options = self.settings.serve
        model = Model.load(bundle, precision=options.precision, threads=options.threads)
        monitor = SharedMonitor(model.drift_monitor(self.settings.drift))
        model.monitor = monitor
        return Served(model, monitor)

    # -- scoring ------------------------------------------------------------
    def score(self, records, *, on_error: str = "fail", row_numbers=None, bad=()) -> tuple[Served, Predictions]:
        """Score ``records`` (a list of dicts, or columns) with the current model; ``bad`` are the request's rows
        that could not be read (counted in the window as bad). Runs on a scoring thread."""
        with self._enter_lock:
            served = self.served
            served.users += 1
        started = time.perf_counter()
        try:
            if bad:
                served.monitor.update({}, None, bad)
            labelled = (served.monitor.performance is not None and type(records) is list and records
                        and served.label in records[0])
            if labelled:  # the labels are counted right after the update of the same rows: one step
                with served.monitor.lock:
                    result = served.model.predict(records, on_error=on_error, row_numbers=row_numbers)
                    served.monitor.count_labels([records[i].get(served.label) for i in result.rows],
                                                result.labels)
            else:
                result = served.model.predict(records, on_error=on_error, row_numbers=row_numbers)
        finally:
            with served.idle:
                served.users -= 1
                served.idle.notify_all()
        self.metrics.scored(time.perf_counter() - started, len(result), len(result.errors) + len(bad))
        return served, result

    def count_bad(self, errors) -> None:
        """Rows of a request refused before scoring (``on_error=fail``) still count as bad in the window."""
        self.served.monitor.update({}, None, errors)
        self.metrics.refused(len(errors))

    # -- windows ------------------------------------------------------------
    def poll(self) -> int:
        """Close the open window if its time is up; send every closed one. The number sent."""
        with self._send_lock:
            served = self.served
            return self._send(served.monitor.poll(), served.manifest.identity)

    def _send(self, windows, identity: str | None = None) -> int:
        sent = self.sinks.send(windows, identity)
        self.metrics.windows += sent
        return sent

    def current_window(self) -> dict:
        return self.served.monitor.current()

    # -- the swap -----------------------------------------------------------
    def swap(self, bundle: str | os.PathLike, timeout: float = 30.0) -> Served:
        """Load ``bundle`` beside the current one, then serve it; the old model's last window is sent.

        Raises what :meth:`Model.load` raises (a bundle that does not load or fails its self-test): then
        nothing changed. Call from any thread but the event loop's.
        """
        with self._swap_lock:
            new = self._load(bundle)
            with self._enter_lock:
                old, self.served = self.served, new
            with old.idle:
                old.idle.wait_for(lambda: old.users == 0, timeout)
            with self._send_lock:
                self.metrics.windows += self.sinks.hand_over(old.monitor, old.manifest.identity, new.description)
            self.bundle = bundle
            self.metrics.swaps += 1
            self.log.info("swapped in %s %s (bundle %s) for %s %s", new.manifest.name, new.manifest.version,
                          new.manifest.identity[:12], old.manifest.name, old.manifest.version)
            return new

    def close(self, clean: bool = True) -> None:
        """Send the open window and every closed one; stop the telemetry (its death message), close the files.
        ``clean``: a stop asked for, not an exception (a bundle on test then counts no crash)."""
        if self.updates is not None:
            self.updates.stop(clean=clean)
        with self._send_lock:
            windows = self.served.monitor.poll()
            last = self.served.monitor.flush()
            self._send(windows + ([last] if last is not None else []), self.served.manifest.identity)
        if self.telemetry is not None:
            self.telemetry.stop()
        if self._outbox is not None:
            self._outbox.close()
        if self.window_file is not None:
            self.window_file.close()


__all__ = ["Served", "Service", "SharedMonitor"]
