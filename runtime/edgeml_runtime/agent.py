"""The composition root of a device process: one settings value in, a running device out.

:class:`Agent` wires what ``edgeml-runtime run`` runs from one
:class:`~.settings.AgentSettings`: the model and its drift monitor, the
durable outbox, MQTT telemetry (birth with the bundle identity, drift windows,
death), the record source (a file or stdin on a thread, or an MQTT topic),
the optional output files (scored records; drift windows as JSON Lines, which
is all a run without a broker reports), and the scoring loop
(:class:`~.run.StreamScorer`). The last log line says what was read, scored
and sent and how many windows still wait in the outbox; a reader that died
ends the run with a :class:`~.errors.SourceError` (a non-zero exit), never "done".
:func:`run_device` adds what a process needs around it: logging and the
SIGTERM/SIGINT handlers that end it cleanly. Nothing here validates a
setting: the settings arrive checked.

Example: the description a device states in its birth message, beside the envelope.

>>> birth_description({"name": "demo"}, DriftSettings(window_rows=500))["window"]
{'rows': 500, 'seconds': 300.0, 'rule': {'psi_moderate': 0.1, 'psi_significant': 0.25, 'drifted_share': 0.3, \
'min_rows': 100, 'alpha': 0.01}}
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import sys
import threading
from pathlib import Path

from .deadletter import DeadLetters
from .drift import DriftSettings
from .errors import SourceError
from .model import Model
from .outbox import Outbox
from .outputs import stream_file
from .protocol.envelopes import describe_model, describe_window
from .protocol.topics import DeviceTopics
from .records import RecordWriter
from .run import RunStats, StreamScorer, WindowFile
from .sdnotify import Notifier
from .settings import AgentSettings
from .stream import FileSource
from .telemetry import Telemetry
from .update.process import listen, open_updates, reporter

#: Telemetry counts the last log line names when they are not 0 (telemetry.stats key -> what it counts).
_LOST = {"unkept": "window(s) the outbox could not keep", "quarantined": "window(s) set aside as unsendable",
         "trimmed": "window(s) sent with their error sample trimmed",
         "messages_refused": "input message(s) refused", "records_dropped": "input record(s) dropped (queue full)"}
#: Input rows that may wait between the reader and the scoring loop.
QUEUE_ROWS = 10_000


def birth_description(model: dict, drift: DriftSettings) -> dict:
    """What the birth message says beyond its envelope: the ``model`` (:func:`describe_model`) and the ``window``."""
    return {"model": model, "window": describe_window(drift.window_rows, drift.window_seconds, drift.rule)}


def default_outbox_path(device: DeviceTopics) -> Path:
    """``$XDG_STATE_HOME/edgeml/<fleet>/<device>.outbox.db`` (``~/.local/state`` without the variable).

    One folder per fleet: ids may hold ``-``, so the earlier name,
    ``<fleet>-<device>.outbox.db``, was one file for fleet ``plant`` with
    device ``a-pi-07`` and for fleet ``plant-a`` with device ``pi-07``. Where
    a file of that old name exists (and none of the new), it is still used,
    so that no window waiting in it is lost to the upgrade.
    """
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "edgeml"
    path = state / device.fleet / f"{device.device_id}.outbox.db"
    legacy = state / f"{device.fleet}-{device.device_id}.outbox.db"
    if legacy.exists() and not path.exists():
        return legacy
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def open_telemetry(settings, model: Model, log: logging.Logger) -> tuple[Telemetry | None, Outbox | None,
                                                                         DeadLetters | None]:
    """The telemetry of ``settings`` (``mqtt``, ``device``, ``outbox``, ``drift``) for ``model``, its outbox and
    dead-letter file; three Nones without a broker. An outbox that cannot be used degrades (memory, a damaged
    file set aside); close the outbox after stopping the telemetry."""
    if settings.mqtt is None:
        return None, None, None
    path = Path(settings.outbox.path or default_outbox_path(settings.device))
    outbox = Outbox(path, max_bytes=settings.outbox.max_bytes, recover=True)
    letters = DeadLetters(path.with_name(path.name + ".deadletter.jsonl"), settings.outbox.dead_letter_max_bytes)
    try:
        telemetry = Telemetry(settings.mqtt, settings.device, outbox=outbox, dead_letters=letters,
                              birth=birth_description(describe_model(model), settings.drift), log=log)
    except BaseException:
        outbox.close()
        raise
    return telemetry, outbox, letters


class Agent:
    """One device process: scores ``bundle``'s records and reports drift, as ``settings`` say.

    :meth:`run` returns when the input ends or :attr:`stop` is set (a
    signal, or another thread): the open window is closed and sent, and the
    death message published.
    """

    def __init__(self, bundle: str | os.PathLike, settings: AgentSettings, *, log: logging.Logger | None = None):
        self.bundle, self.settings = bundle, settings
        self.log = log or logging.getLogger("edgeml_runtime")
        self.stop = threading.Event()
        self._scorer: StreamScorer | None = None

    @property
    def stats(self) -> RunStats:
        """Rows read, scored and bad, and windows sent so far (updated while :meth:`run` runs)."""
        return self._scorer.stats if self._scorer is not None else RunStats()

    def _load(self, bundle) -> Model:
        model = Model.load(bundle, precision=self.settings.run.precision)
        model.monitor = model.drift_monitor(self.settings.drift)
        return model

    def run(self) -> RunStats:
        """Score until the input ends or :attr:`stop` is set; a reader that failed raises :class:`SourceError`."""
        s = self.settings
        updates = open_updates(s, self.log)
        model = self._load(updates.startup(self.bundle) if updates is not None else self.bundle)
        telemetry, outbox, letters = open_telemetry(s, model, self.log)
        if updates is not None:
            listen(updates, telemetry)
        source = None
        sent: dict = {}
        notifier = Notifier.from_environ()
        try:
            items: queue.Queue = queue.Queue(maxsize=QUEUE_ROWS)
            if s.run.input_topic:
                telemetry.subscribe_records(s.run.input_topic, items)
            else:
                source = FileSource(s.run.input, s.run.format, items, follow=s.run.follow, stop=self.stop,
                                    limits=s.run.limits)
                source.start()
            windows = WindowFile(s.run.drift_output, describe_model(model), self.log) if s.run.drift_output else None
            with self._writer(model) as writer:
                if telemetry is not None:
                    telemetry.start()
                self.log.info("scoring %s (%s) with %s %s as %s/%s; drift windows of %d rows or %g s",
                              s.run.input_topic or s.run.input, s.run.format, model.manifest.name,
                              model.manifest.version, s.device.fleet, s.device.device_id, s.drift.window_rows,
                              s.drift.window_seconds)
                self._scorer = StreamScorer(model, telemetry, writer=writer, log=self.log, window_file=windows,
                                            publish_predictions=s.run.publish_predictions, notifier=notifier)
                # ready once the bundle is loaded and the input is read; a broker that is down does not hold it
                # back (the outbox keeps the windows until it is back)
                notifier.ready(f"scoring {s.run.input_topic or s.run.input} with {model.manifest.name} "
                               f"{model.manifest.version} as {s.device.fleet}/{s.device.device_id}")
                if updates is not None:
                    scorer = self._scorer
                    updates.attach(lambda path: scorer.swap(self._load(path)), scorer.sinks, reporter(telemetry))
                try:
                    stats = self._scorer.run(items, self.stop)
                finally:
                    if updates is not None:  # an exception on the way out counts as a crash of a bundle on test
                        updates.stop(clean=sys.exc_info()[0] is None)
                    if telemetry is not None:
                        telemetry.stop()
                    if windows is not None:
                        windows.close()
            if telemetry is not None:
                sent = telemetry.stats
                stats.backlog, stats.outbox_dropped = sent["pending"], sent["dropped"]
        finally:
            notifier.close()
            if outbox is not None:
                outbox.close()
        self._report(stats, source, sent, letters)
        return stats

    def _report(self, stats: RunStats, source: FileSource | None, sent: dict, letters: DeadLetters | None) -> None:
        """The last log line: what was read, scored and sent, and what still waits; or why reading stopped."""
        s = self.settings
        waiting = ""
        if s.mqtt is not None:
            waiting = (f"; {stats.backlog} window(s) wait in the outbox for the broker (sent after the next start)"
                       if stats.backlog else "; the outbox is empty")
            if stats.outbox_dropped:
                waiting += f"; the outbox dropped {stats.outbox_dropped} window(s) when full or set aside"
            lost = [f"{sent[k]} {what}" for k, what in _LOST.items() if sent.get(k)]
            if lost:
                waiting += "; " + ", ".join(lost)
            if letters is not None and letters.count:
                waiting += f"; {letters.count} dead letter(s) kept in {letters.path}"
        counts = stats.counts() + waiting
        if source is not None and source.error is not None:
            exc = source.error
            raise SourceError(f"reading {s.run.input} failed after {source.parser.rows} rows ({type(exc).__name__}: "
                              f"{exc}); the rest of the input was not read. Until then: {counts}")
        self.log.info("done: %s", counts)

    @contextlib.contextmanager
    def _writer(self, model: Model):
        """The writer of scored records (``output``), or None; the file is closed after the run (not stdout)."""
        path = self.settings.run.output
        if not path:
            yield None
            return
        source = self.settings.run.input or "-"
        with stream_file(path, source=source) as out:
            yield RecordWriter(out, self.settings.run.format, model.classes)


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM and SIGINT ask the loop to finish its window and shut down cleanly."""
    def handler(signum, frame):
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def run_device(bundle: str | os.PathLike, settings: AgentSettings) -> RunStats:
    """``edgeml-runtime run``: logging to stderr at ``log_level``, signal handlers, then :meth:`Agent.run`."""
    logging.basicConfig(level=settings.run.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    agent = Agent(bundle, settings)
    install_signal_handlers(agent.stop)
    return agent.run()
