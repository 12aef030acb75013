"""The scoring loop of ``run`` swaps one loaded model for another between two batches: every row read is scored
by exactly one of them, and each window is told with the bundle that scored it."""

from __future__ import annotations

import csv
import logging
import queue
import threading

from edgeml_runtime.drift import DriftSettings
from edgeml_runtime.model import Model
from edgeml_runtime.run import StreamScorer
from edgeml_runtime.stream import END, Item


def _model(bundle) -> Model:
    model = Model.load(bundle)
    model.monitor = model.drift_monitor(DriftSettings(window_rows=100, window_seconds=3600))
    return model


def test_rows_in_equal_rows_scored_across_a_swap(demo_bundle, demo_rows):
    with open(demo_rows, newline="") as f:
        records = list(csv.DictReader(f))
    old, new = _model(demo_bundle), _model(demo_bundle)
    scorer = StreamScorer(old, None, log=logging.getLogger("test"))
    seen = []
    scorer.sinks.listeners.append(lambda window, identity: seen.append((window["rows"], window["bad_rows"],
                                                                          identity, window.get("latency"))))
    items: queue.Queue = queue.Queue(maxsize=64)  # small: the feeder keeps pace with the loop
    total = 3_000
    stop = threading.Event()
    loop = threading.Thread(target=lambda: scorer.run(items, stop))
    loop.start()
    for i in range(total // 2):
        items.put(Item(i + 1, records[i % len(records)]))
    assert scorer.swap(new, timeout=30) is old
    assert scorer.model is new and scorer.monitor is new.monitor
    by_old = sum(rows + bad for rows, bad, _, _ in seen)  # the old model's windows, its last one closed at the swap
    assert 0 < by_old <= total // 2 and old.monitor.rows == 0 and old.monitor.bad_rows == 0
    for i in range(total // 2, total):
        items.put(Item(i + 1, records[i % len(records)]))
    items.put(END)
    loop.join(60)
    assert not loop.is_alive()
    assert scorer.stats.rows == total and scorer.stats.scored + scorer.stats.bad_rows == total
    assert sum(rows + bad for rows, bad, _, _ in seen) == total  # no row in both windows, none in neither
    assert {i for _, _, i, _ in seen} == {old.manifest.identity}
    # every scored row was timed (a batch split across two windows is timed in the first)
    assert sum((latency or {}).get("rows", 0) for *_, latency in seen) == scorer.stats.scored
    assert all(latency["seconds"] > 0 for *_, latency in seen if latency)
    # the old model's last window was closed at the swap: the windows before it are whole, it may be partial
    assert scorer.stats.windows == len(seen)
