"""Drift statistics on the device: per window, counts per reference bin, then PSI and JS.

``edgeml build`` stores in the manifest a fixed *reference* for every input
column and for the model's output (see docs/drift.md). A
:class:`DriftMonitor` counts the scored rows into the same bins, closes a
window after ``window_rows`` rows or ``window_seconds`` seconds, and turns
each closed window into a JSON-ready dict: the raw counts (which add up
across windows and devices) and, per column, the statistics in
:data:`STATISTICS`, a p-value and a status
(:func:`~.protocol.verdict.judge_window`). Bins are right-closed —
``(-inf, e1], (e1, e2], …, (ek, +inf)`` — which is
``np.searchsorted(edges, v, side="left")`` on the host and on the device
alike.

Example: four rows far above the reference are too few to test (every expected count is below 5: the
p-value is 1); forty are not.

>>> from edgeml_runtime.schema import InputColumn, InputSchema
>>> schema = InputSchema((InputColumn("temp", "numeric", ("temp",)),))
>>> reference = {"format": 1, "bins": "right-closed", "rows": {"train": 1000, "valid": 200},
...              "output": {"kind": "classes", "classes": [0, 1], "shares": [0.5, 0.5], "split": "valid"},
...              "columns": {"temp": {"kind": "numeric", "edges": [20.0], "shares": [0.5, 0.5], "missing_rate": 0.0,
...                                   "range": [10.0, 30.0]}}}
>>> settings = DriftSettings(window_rows=4, rule=VerdictRule(min_rows=1))
>>> monitor = DriftMonitor(reference, schema, settings, clock=lambda: 0.0)
>>> feeds = {"temp": np.array([[25.0], [26.0], [27.0], [40.0]], dtype=np.float32)}
>>> [window] = monitor.update(feeds, np.array([1, 1, 1, 0])).poll()
>>> temp = window["columns"]["temp"]
>>> temp["counts"], temp["above_range"], temp["psi"], temp["p_value"], temp["status"], window["verdict"]["status"]
([0, 4], 1, 4.603789, 1.0, 'ok', 'ok')
>>> monitor = DriftMonitor(reference, schema, DriftSettings(window_rows=40, rule=VerdictRule(min_rows=1)))
>>> [window] = monitor.update({"temp": np.full((40, 1), 25.0, dtype=np.float32)}, np.array([1, 0] * 20)).poll()
>>> window["columns"]["temp"]["p_value"], window["columns"]["temp"]["status"], window["verdict"]["status"]
(5.42366e-10, 'significant', 'drift')
"""

from __future__ import annotations

import math
import time
from array import array
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from .distributions import (  # noqa: F401  (STATISTICS, statistic, statistics_from_counts: part of this API)
    COUNTERS,
    STATISTICS,
    BinCounter,
    CategoryCounter,
    IndexCounter,
    statistic,
    statistics_from_counts,
)
from .errors import BundleError, RowError, SettingsError, check_count, shorten
from .performance import PerformanceCounter
from .protocol.performance import add_performance
from .protocol.verdict import VerdictRule, judge_window
from .schema import InputSchema

#: The layout of ``manifest["reference"]`` this module reads.
REFERENCE_FORMAT = 1
#: Single rows are buffered (numbers in typed arrays, text in lists) and binned together this many at a time.
CHUNK_ROWS = 1024
#: The longest error message kept in a window (a window keeps at most ``max_errors`` of them).
ERROR_CHARS = 300
#: The most error messages a window may keep (``DriftSettings.max_errors``); bad rows are counted all the same.
MAX_ERRORS = 100
#: Closed windows kept until :meth:`DriftMonitor.poll`; beyond this the oldest are dropped (and counted).
MAX_UNPOLLED = 1000


@dataclass(frozen=True)
class DriftSettings:
    """When a window closes, and the :class:`~.protocol.verdict.VerdictRule` that judges it.

    A window closes after ``window_rows`` scored rows or ``window_seconds``
    seconds, whichever comes first; at most ``max_errors`` row errors (up to
    :data:`MAX_ERRORS`) are kept in it, each cut to :data:`ERROR_CHARS`
    characters, so bad input cannot grow a window. ``rule`` (the test's ``alpha``, the PSI thresholds and
    ``min_rows``) is part of the protocol: the device states it in its birth message, and the fleet
    controller judges summed windows with it. Each value is checked by the
    dataclass that owns it, once; a bad one raises
    :class:`~edgeml_runtime.errors.SettingsError` naming it.

    >>> DriftSettings(window_rows=500, rule=VerdictRule(min_rows=10)).rule.min_rows
    10
    """

    window_rows: int = 1000
    window_seconds: float = 300.0
    max_errors: int = 5
    rule: VerdictRule = VerdictRule()

    def __post_init__(self):
        check_count("window_rows", self.window_rows, 1, "rows")
        if isinstance(self.window_seconds, bool) or not isinstance(self.window_seconds, int | float) or \
                not (math.isfinite(self.window_seconds) and self.window_seconds > 0):
            raise SettingsError(key="window_seconds", value=self.window_seconds,
                                allowed="must be a finite number of seconds above 0", fix="e.g. 300")
        check_count("max_errors", self.max_errors, 0, "errors kept per window")
        if self.max_errors > MAX_ERRORS:
            raise SettingsError(key="max_errors", value=self.max_errors, allowed=f"must be at most {MAX_ERRORS}",
                                fix="bad rows are counted in every window anyway; keep a few messages (default 5)")
        if not isinstance(self.rule, VerdictRule):
            raise SettingsError(key="rule", value=self.rule, allowed="must be a VerdictRule",
                                fix="give rule=VerdictRule(psi_moderate=..., ...)")


# --- the monitor ------------------------------------------------------------------------------

@dataclass
class _Tracked:
    """One monitored input column (``feature`` set) or the output (``feature`` None)."""

    name: str
    feature: str | None
    entry: Mapping
    counter: BinCounter | CategoryCounter | IndexCounter = field(init=False)
    pending: list | array = field(init=False)

    def __post_init__(self):
        kind = self.entry["kind"]
        self.counter = COUNTERS[kind](self.entry)
        # Buffered single rows. Numbers go into typed arrays, not lists of float objects: a window's worth of
        # live floats made the allocator grow and shrink its arenas, and the page faults showed in the latency tail.
        self.pending = [] if kind == "categorical" else array("q" if kind == "classes" else "d")


class DriftMonitor:
    """Counts scored rows against a bundle's reference and closes windows of drift statistics.

    ``update(feeds, outputs, errors)`` takes what the
    :class:`~edgeml_runtime.features.FeatureEncoder` produced for the scored
    rows, the model's outputs for them (class indices, or values), and the
    :class:`RowError` of rows that could not be scored. A single row is
    buffered as plain values (binned :data:`CHUNK_ROWS` at a time); a batch
    is binned at once. Nothing keeps a reference to the caller's arrays.
    Windows closed by row count wait for :meth:`poll`, which also closes one
    by time; :meth:`flush` closes the current one now. Closing a window only
    keeps its counts: the statistics are computed when :meth:`poll` or
    :meth:`flush` hands it over, off the scoring path. With a ``performance``
    counter, :meth:`count_labels` counts labelled rows against their
    predictions, and a window that counted any carries them as
    ``performance`` (:mod:`.protocol.performance`). Not thread-safe: give
    each scoring thread its own monitor, or hold a lock around ``predict``
    and ``poll``.
    """

    def __init__(self, reference: Mapping, schema: InputSchema, settings: DriftSettings = DriftSettings(),
                 clock: Callable[[], float] = time.time, *, performance: PerformanceCounter | None = None):
        if not isinstance(reference, Mapping) or reference.get("format") != REFERENCE_FORMAT:
            found = reference.get("format") if isinstance(reference, Mapping) else type(reference).__name__
            raise BundleError(f"drift reference has format {found!r}; this runtime reads {REFERENCE_FORMAT}. "
                              "Rebuild the bundle with the matching edgeml version")
        entries = reference.get("columns") or {}
        absent = [c.name for c in schema.columns if c.name not in entries]
        if absent or "output" not in reference:
            raise BundleError(f"drift reference lacks column(s) {absent or ['output']}; rebuild the bundle")
        self.reference, self.settings, self._clock = reference, settings, clock
        self.performance = performance
        self._columns = [_Tracked(c.name, c.features[0], entries[c.name])
                         for c in schema.columns if entries[c.name].get("monitored", True)]
        self._output = _Tracked("output", None, reference["output"])
        self._appends = [(t.feature, t.pending.append) for t in self._columns]
        self._append_output = self._output.pending.append
        self._closed: deque[dict] = deque(maxlen=MAX_UNPOLLED)
        self.dropped_windows = 0
        self._start = clock()
        self._reset_window()

    @property
    def monitored(self) -> list[str]:
        """The input columns this monitor counts (datetimes are not monitored)."""
        return [t.name for t in self._columns]

    @property
    def rows(self) -> int:
        """Scored rows in the current window."""
        return self._binned + len(self._output.pending)

    @property
    def bad_rows(self) -> int:
        """Rows in the current window that could not be scored."""
        return self._bad_rows

    def update(self, feeds: Mapping[str, np.ndarray], outputs, errors: Sequence[RowError] = (),
               seconds: float | None = None) -> DriftMonitor:
        """Count scored rows (``feeds``: feature name → ``(n, 1)`` array; ``outputs``: ``n`` values) and bad rows.

        ``outputs=None`` counts only ``errors`` (records that never reached
        the model). The bad rows count in the window open now; a batch that
        fills the window is split, so a window closed by count holds
        ``window_rows`` rows. ``seconds``, the engine's time for these rows,
        goes into the window's ``latency`` (rows timed and their seconds: the
        one-row latency an update's health gate checks) of the window open
        once they are counted.
        """
        if errors:
            self._bad_rows += len(errors)
            room = self.settings.max_errors - len(self._errors)
            self._errors += [shorten(str(e), ERROR_CHARS) for e in errors[:room]] if room > 0 else []
        if outputs is None:
            return self
        if type(outputs) is not np.ndarray:
            outputs = np.asarray(outputs)
        n = len(outputs)
        if seconds is not None and n:
            self._latency_rows += n
            self._latency_seconds += seconds
        if n == 1:
            for feature, append in self._appends:
                append(feeds[feature].item())
            self._append_output(outputs.item())
            self._countdown -= 1
            if not self._countdown:
                self._checkpoint()
        elif n:
            self._update_batch(feeds, outputs, n)
        return self

    def count_labels(self, labels: Sequence, predicted: Sequence) -> DriftMonitor:
        """Count scored rows' ``labels`` (as their records carried them) against ``predicted`` (the runtime's
        labels or values); nothing without a ``performance`` counter.

        Call it after the ``update`` of the same rows (``Model.predict`` makes that one): rows that update put
        into windows it closed are counted in those windows, each in its own, the rest in the window open now.
        A window closed by time between the two leaves the rows to the next one.
        """
        if self.performance is None:
            return self
        n = len(predicted)
        split = head = n - min(self.rows, n)  # the first rows of the batch went into windows its update closed
        for window in reversed(self._closed):  # the last closed holds the last of them, and so on back
            if not head:
                break
            take = min(window["rows"], head)
            done = PerformanceCounter(self.performance.task, self.performance.classes).update(
                labels[head - take:head], predicted[head - take:head])
            if done.counted:
                window["performance"] = add_performance([window["performance"], done.counts]) \
                    if "performance" in window else done.counts
            head -= take
        if head:  # their windows were polled already (or dropped): counted in the window open now
            self.performance.update(labels[:head], predicted[:head])
        self.performance.update(labels[split:], predicted[split:])
        return self

    def _empty(self) -> bool:
        return not (self.rows or self._bad_rows or self.performance is not None and self.performance.counted)

    def poll(self, now: float | None = None) -> list[dict]:
        """The windows closed since the last poll, after closing the current one if ``window_seconds`` have passed.

        An empty window (no rows, no errors) is not reported; its clock restarts.
        """
        now = self._clock() if now is None else now
        if now - self._start >= self.settings.window_seconds:
            if not self._empty():
                self._queue(now)
            else:
                self._start = now
        closed = [self._judge(w) for w in self._closed]
        self._closed.clear()
        return closed

    def flush(self) -> dict | None:
        """Close the current window now and return it (None if it has no rows and no errors); e.g. at shutdown."""
        if self._empty():
            return None
        return self._judge(self._close(self._clock()))

    def reset(self) -> DriftMonitor:
        """Forget the current window and every unpolled one; the next window starts now."""
        for t in (*self._columns, self._output):
            del t.pending[:]
        self._closed.clear()
        self._start = self._clock()
        self._reset_window()
        return self

    def _reset_window(self):
        for t in (*self._columns, self._output):
            t.counter.reset()
        if self.performance is not None:
            self.performance.reset()
        self._binned = self._bad_rows = self._latency_rows = 0
        self._latency_seconds = 0.0
        self._errors: list[str] = []
        self._countdown = min(CHUNK_ROWS, self.settings.window_rows)

    def _update_batch(self, feeds, outputs, n):
        start, limit = 0, self.settings.window_rows
        while start < n:
            stop = min(n, start + limit - self.rows)
            for t in self._columns:
                t.counter.update(feeds[t.feature][start:stop])
            self._output.counter.update(outputs[start:stop])
            self._binned += stop - start
            if self.rows >= limit:
                self._queue(self._clock())
            start = stop
        self._countdown = min(CHUNK_ROWS - len(self._output.pending), limit - self.rows)

    def _checkpoint(self):
        self._bin_pending()
        if self._binned >= self.settings.window_rows:
            self._queue(self._clock())
        self._countdown = min(CHUNK_ROWS, self.settings.window_rows - self._binned)

    def _bin_pending(self):
        n = len(self._output.pending)
        if n:
            for t in (*self._columns, self._output):
                t.counter.update(t.pending)
                del t.pending[:]
            self._binned += n

    def _queue(self, end: float):
        if len(self._closed) == self._closed.maxlen:
            self.dropped_windows += 1
        self._closed.append(self._close(end))

    def current(self) -> dict:
        """The open window judged as if it closed now, with its statistics; it stays open (a scrape of /metrics)."""
        self._bin_pending()
        self._countdown = min(CHUNK_ROWS, self.settings.window_rows - self._binned)
        return self._judge(self._counted(self._clock()))

    def _counted(self, end: float) -> dict:
        window = {"start": self._start, "end": end, "rows": self._binned, "bad_rows": self._bad_rows,
                  "errors": list(self._errors), "columns": {t.name: _counts(t) for t in self._columns},
                  "output": _counts(self._output)}
        if self.performance is not None and self.performance.counted:
            window["performance"] = self.performance.counts
        if self._latency_rows:
            window["latency"] = {"rows": self._latency_rows, "seconds": round(self._latency_seconds, 9)}
        return window

    def _close(self, end: float) -> dict:
        """The current window's counts (statistics come with :meth:`_judge`); the next window starts at ``end``."""
        self._bin_pending()
        window = self._counted(end)
        self._start = end
        self._reset_window()
        return window

    def _judge(self, window: dict) -> dict:
        """Add the statistics, statuses and verdict to a closed window: the JSON-ready payload."""
        judged = judge_window(self.reference, window, self.settings.rule)
        for name, stats in judged["columns"].items():
            window["columns"][name].update(stats)
        window["output"].update(judged["output"])
        window["start"], window["end"] = _iso(window["start"]), _iso(window["end"])
        window["verdict"] = judged["verdict"]
        return window


def _counts(t: _Tracked) -> dict:
    c = t.counter
    out = {"kind": t.entry["kind"], "counts": c.counts}
    if t.feature is not None:
        out["missing"] = c.missing
        if out["kind"] == "numeric":
            out["below_range"], out["above_range"] = c.below_range, c.above_range
    return out


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
