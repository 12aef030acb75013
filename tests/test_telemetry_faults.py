"""Telemetry against a real Mosquitto when windows are too many, too large, or poison: every window accounted for.

Before: 120 windows through a 64 KiB outbox arrived as 43 received + 75 reported dropped (2 never told); a window
over the broker's max_packet_size made the device reconnect forever, delivering nothing and saying nothing; a
poison row at the head of the outbox blocked every window behind it; a 17 MiB bad value made the window
outgrow the outbox (exit 2).
"""

from __future__ import annotations

import json
import logging
import sqlite3

from broker import Broker, Subscriber, wait_until
from test_telemetry import index, received, telemetry, unique_windows, window

from edgeml_runtime.outbox import MIN_MAX_BYTES, Outbox


def small_broker(tmp_path, max_packet: int) -> Broker:
    """A Mosquitto whose max_packet_size is ``max_packet`` (MQTT 5 tells it in the CONNACK)."""
    b = Broker(tmp_path / "small")
    config = b.config() + f"max_packet_size {max_packet}\n"
    return Broker(tmp_path / "small", port=b.port, config=config.replace("user root\n", ""))


def test_120_windows_through_the_smallest_bound_are_each_received_or_reported_dropped(broker, tmp_path):
    produced = 120
    with Subscriber(broker.url, persistent=True) as sub:
        broker.stop()
        with Outbox(tmp_path / "outbox.db", max_bytes=MIN_MAX_BYTES) as box:
            t = telemetry(broker.url, box)
            t.start()
            for i in range(produced):
                t.send_drift(window(i))
            broker.start()
            wait_until(lambda: t.stats["pending"] == 0, timeout=20, what="the outbox to drain")
            assert box.dropped == 0  # nothing waits to be reported: the last put reported its own drops
            t.stop()
        windows = sub.wait_for(lambda s: produced - 1 in {index(w) for w in unique_windows(s)} and unique_windows(s),
                               what="the last window")
    dropped = sum(w["outbox_dropped"] for w in windows)
    assert len(windows) + dropped == produced, (len(windows), dropped)
    assert [index(w) for w in windows] == list(range(dropped, produced))


def big_window(i: int, errors: int = 5, chars: int = 300) -> dict:
    return dict(window(i), bad_rows=errors, errors=[f"row {n}: " + "x" * chars for n in range(errors)])


def test_a_window_over_the_brokers_packet_size_is_trimmed_or_set_aside_never_looped(tmp_path, caplog):
    with small_broker(tmp_path, 2400) as b, Subscriber(b.url) as sub, Outbox(tmp_path / "o.db") as box:
        t = telemetry(b.url, box)
        t.start()
        wait_until(lambda: t.stats["connected"], what="the connection")
        t.send_drift(big_window(0))                    # ~3.4 KB: its error sample is cut to fit
        hopeless = dict(window(1), columns={f"c{n}": window(1)["columns"]["Air temperature [K]"] for n in range(30)})
        t.send_drift(hopeless)                         # too large even without errors: set aside, counted
        t.send_drift(window(2))
        wait_until(lambda: t.stats["quarantined"], what="the hopeless window set aside")
        t.send_drift(window(3))                        # the next window put reports the one set aside
        got = sub.wait_for(lambda s: len(received(s, "drift")) == 3 and received(s, "drift"), what="3 windows")
        wait_until(lambda: t.stats["pending"] == 0, what="the last PUBACK")
        stats = t.stats
        t.stop()
    assert [index(w) for w in got] == [0, 2, 3] and [w["outbox_dropped"] for w in got] == [0, 0, 1]
    assert got[0]["bad_rows"] == 5 and 0 < len(json.dumps(got[0]["errors"])) < 1500
    assert (stats["trimmed"], stats["quarantined"], stats["pending"]) == (1, 1, 0)
    assert b.log().count("New client connected") == 2  # the subscriber and one device connection: no loop
    assert "over the broker's maximum packet size" in caplog.text


def test_a_311_broker_that_drops_the_connection_on_one_window_sets_it_aside(tmp_path, caplog):
    with small_broker(tmp_path, 2400) as b, Subscriber(b.url) as sub, Outbox(tmp_path / "o.db") as box:
        t = telemetry(b.url, box, protocol="3.1.1")  # no CONNACK property: the broker just hangs up
        hopeless = dict(window(0), columns={f"c{n}": window(0)["columns"]["Air temperature [K]"] for n in range(30)})
        t.send_drift(hopeless)
        t.send_drift(window(1))
        t.start()
        (w,) = sub.wait_for(lambda s: received(s, "drift"), timeout=20, what="the window behind it")
        assert t.stats["quarantined"] == 1
        t.stop()
    assert index(w) == 1
    assert "closed the connection each of the 5 times" in caplog.text


def test_a_poison_row_at_the_head_of_the_outbox_does_not_block_delivery(broker, tmp_path):
    path = tmp_path / "o.db"
    with Outbox(path):
        pass
    db = sqlite3.connect(path)
    db.executemany("INSERT INTO messages (topic, payload, size, reports_dropped, enqueued) VALUES (?, ?, ?, 0, 0)",
                   [("edgeml/plant-a/pi-07/drift", b"\xff not json", 9),        # cannot be decoded
                    ("edgeml/plant-a/+/drift", b'{"seq": 0}', 9),              # paho refuses the topic
                    ("edgeml/plant-a/pi-08/drift", b'{"seq": 0}', 9)])         # another device's
    db.commit()
    db.close()
    with Subscriber(broker.url) as sub, Outbox(path) as box:
        t = telemetry(broker.url, box)
        t.send_drift(window(0))
        t.start()
        sub.wait_for(lambda s: received(s, "drift"), what="the window behind the poison rows")
        t.send_drift(window(1))
        got = sub.wait_for(lambda s: len(received(s, "drift")) == 2 and received(s, "drift"), what="2 windows")
        assert t.stats["quarantined"] == 3
        t.stop()
    assert [(index(w), w["outbox_dropped"]) for w in got] == [(0, 0), (1, 3)]


def test_a_17_mib_bad_value_keeps_the_window_small(demo_bundle, tmp_path):
    from edgeml_runtime.agent import Agent
    from edgeml_runtime.settings import resolve_settings

    reading = {"timestamp": "2024-01-01T00:00:53", "machine_id": "M-0008", "machine_type": "L", "air_temp_c": 19.6,
               "process_temp_c": 29.4, "rpm": 1657, "torque_nm": 31.3, "vibration_mm_s": 4.11, "tool_wear_min": 195}
    rows = tmp_path / "rows.jsonl"
    with open(rows, "w") as f:
        for n in range(20):
            f.write(json.dumps(dict(reading, rpm="9" * (17 * 2**20) + "x" if n == 3 else 1600 + n)) + "\n")
    s = resolve_settings({"device_id": "pi-07", "fleet": "plant-a", "broker": "mqtt://127.0.0.1:9",
                          "outbox": str(tmp_path / "o.db"), "outbox_max_bytes": MIN_MAX_BYTES, "input": str(rows),
                          "window_rows": 1000}, environ={})
    logging.getLogger("edgeml_runtime").setLevel(logging.WARNING)
    stats = Agent(demo_bundle, s).run()
    assert (stats.rows, stats.scored, stats.windows) == (20, 19, 1)
    with Outbox(tmp_path / "o.db") as box:
        (msg,) = box.pending()
    w = json.loads(msg.payload)
    assert w["bad_rows"] == 1 and len(msg.payload) < 8000
    assert w["errors"][0].startswith("row 4") and len(w["errors"][0]) <= 400


def test_a_huge_quoted_value_is_cut_in_the_row_error_and_in_the_window():
    """Whatever limit a reader has, an error that quotes a value cannot carry megabytes into a window."""
    from edgeml_runtime.drift import ERROR_CHARS, DriftMonitor, DriftSettings
    from edgeml_runtime.errors import MESSAGE_CHARS, RowError
    from edgeml_runtime.schema import InputColumn, InputSchema

    error = RowError(4, "rpm", f"could not read {'9' * (17 * 2**20)!r} as a number")
    assert len(error.reason) < MESSAGE_CHARS + 40 and error.reason.endswith("more characters)")
    reference = {"format": 1, "bins": "right-closed", "output": {"kind": "classes", "classes": [0, 1],
                                                                 "shares": [0.5, 0.5]},
                 "columns": {"rpm": {"kind": "numeric", "edges": [1.0], "shares": [0.5, 0.5], "missing_rate": 0.0,
                                     "range": [0.0, 2.0]}}}
    monitor = DriftMonitor(reference, InputSchema((InputColumn("rpm", "numeric", ("rpm",)),)), DriftSettings())
    window = monitor.update({}, None, [error] * 10).flush()
    assert window["bad_rows"] == 10 and len(window["errors"]) == 5
    assert all(len(e) <= ERROR_CHARS + 40 for e in window["errors"])
