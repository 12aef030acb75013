"""Records from an MQTT input topic against a real Mosquitto: poison messages are acknowledged, kept aside, counted.

Before: a message of JSON nested 100,000 deep raised inside paho's callback, so it was never acknowledged and
the broker redelivered it on every reconnect, forever; a record holding a lone surrogate crashed the scorer.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time

import pytest
from broker import Subscriber, wait_until

from edgeml_runtime.agent import Agent
from edgeml_runtime.deadletter import DeadLetters
from edgeml_runtime.mqtt import MqttSettings
from edgeml_runtime.outbox import Outbox
from edgeml_runtime.protocol import DeviceTopics, VerdictRule, describe_window, examples
from edgeml_runtime.settings import resolve_settings
from edgeml_runtime.telemetry import Telemetry

TOPIC = "sensors/pi-07/readings"
BIRTH = {"model": examples()["drift"]["model"], "window": describe_window(1000, 300.0, VerdictRule())}
DEEP = b"[" * 100_000 + b"]" * 100_000
SURROGATE = b'{"machine_type": "\\ud800", "rpm": 1500}'
READING = {"timestamp": "2024-01-01T00:00:53", "machine_id": "M-0008", "machine_type": "L", "air_temp_c": 19.6,
           "process_temp_c": 29.4, "rpm": 1657, "torque_nm": 31.3, "vibration_mm_s": 4.11, "tool_wear_min": 195}


def publisher(broker):
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sensor")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    return client


def publish(client, payloads) -> None:
    for payload in payloads:
        client.publish(TOPIC, payload, qos=1).wait_for_publish(10)


def reader(broker, box, items, letters, protocol, **settings) -> Telemetry:
    t = Telemetry(MqttSettings(broker.url, protocol=protocol, reconnect_min=0.05, reconnect_max=0.2, **settings),
                  DeviceTopics("plant-a", "pi-07"), birth=BIRTH, outbox=box, dead_letters=letters,
                  log=logging.getLogger("test.input"))
    t.subscribe_records(TOPIC, items)
    return t


def drain(items: queue.Queue) -> list:
    out = []
    while True:
        try:
            out.append(items.get_nowait())
        except queue.Empty:
            return out


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_poison_messages_are_acknowledged_kept_aside_and_not_redelivered(broker, tmp_path, protocol):
    items: queue.Queue = queue.Queue()
    letters = DeadLetters(tmp_path / "o.db.deadletter.jsonl")
    with Outbox(tmp_path / "o.db") as box:
        first = reader(broker, box, items, letters, protocol, input_max_bytes=300_000)
        first.start()
        wait_until(lambda: first.stats["connected"], what="the first connection")
        first.stop()  # the broker keeps the session: what follows waits for the device

        sender = publisher(broker)
        publish(sender, [DEEP, b'{"rpm": 1500}', SURROGATE, b"\xff\xfe not text", b"x" * 300_001,
                         b'{"rpm": 1510}\n[1]\n'])
        second = reader(broker, box, items, letters, protocol, input_max_bytes=300_000)
        second.start()
        wait_until(lambda: second.stats["records_received"] == 6 and second.stats["messages_refused"] == 1,
                   what="every message handled")
        stats = second.stats
        assert stats["connected"] and stats["row_errors"] == 4 and stats["records_dropped"] == 0
        second.stop()

        third = reader(broker, box, items, letters, protocol, input_max_bytes=300_000)  # nothing is redelivered
        third.start()
        wait_until(lambda: third.stats["connected"], what="the third connection")
        publish(sender, [b'{"rpm": 1520}'])
        wait_until(lambda: third.stats["records_received"] == 1, what="the marker record")
        third.stop()
        sender.disconnect()
        sender.loop_stop()

    got = drain(items)
    assert [i.record for i in got if i.record is not None] == [{"rpm": 1500}, {"rpm": 1510}, {"rpm": 1520}]
    reasons = [str(i.error) for i in got if i.error is not None]
    assert len(reasons) == 4
    assert "surrogate" in " ".join(reasons) and "UTF-8" in " ".join(reasons)
    lines = [json.loads(x) for x in (tmp_path / "o.db.deadletter.jsonl").read_text().splitlines()]
    refused = [x for x in lines if x["kind"] == "message"]
    assert len(refused) == 1 and refused[0]["bytes"] == 300_001 and "input_max_bytes" in refused[0]["reason"]
    assert len([x for x in lines if x["kind"] == "row"]) == 4 and all(x["topic"] == TOPIC for x in lines)
    assert all(len(json.dumps(x)) < 6000 for x in lines)  # the 200 KB nesting is kept as a preview only


def test_a_device_reading_a_topic_scores_on_past_poison_and_surrogates(broker, demo_bundle, tmp_path):
    """The whole agent: poison and a lone surrogate are bad rows of the window; the process keeps scoring."""
    s = resolve_settings({"device_id": "pi-07", "fleet": "plant-a", "broker": broker.url, "input_topic": TOPIC,
                          "outbox": str(tmp_path / "outbox.db"), "window_rows": 1000}, environ={})
    watcher = Subscriber(broker.url).start()
    agent = Agent(demo_bundle, s)
    done: list = []
    runner = threading.Thread(target=lambda: done.append(agent.run()), daemon=True)
    runner.start()
    sender = publisher(broker)
    surrogate = json.dumps(READING).replace('"L"', '"\\ud800"').encode()
    good = json.dumps(READING).encode()
    wait_until(lambda: (publish(sender, [good]), agent.stats.scored)[1], timeout=30, what="the agent scoring")
    time.sleep(0.5)  # the records published while it subscribed have arrived
    before = agent.stats.rows
    assert agent.stats.scored == before
    publish(sender, [DEEP, surrogate, good, b"x" * (2**20 + 1), good])
    wait_until(lambda: agent.stats.rows == before + 4 and agent.stats.scored == before + 2, timeout=20,
               what="the rest scored")
    agent.stop.set()
    runner.join(30)
    sender.disconnect()
    sender.loop_stop()
    assert not runner.is_alive() and done, "the agent did not finish"
    stats = done[0]
    assert (stats.rows, stats.scored) == (before + 4, before + 2)  # two bad rows, one refused message
    (_, window), = watcher.wait_for(lambda w: w.on("drift"), what="the drift window")
    watcher.stop()
    assert (window["rows"], window["bad_rows"]) == (stats.scored, 2)
    assert "surrogate" in " ".join(window["errors"])
    letters = (tmp_path / "outbox.db.deadletter.jsonl").read_text().splitlines()
    assert [json.loads(x)["kind"] for x in letters] == ["row", "row", "message"]
