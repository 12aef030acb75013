"""Fuzz the MQTT input topic: generated payloads, through paho's own message objects and through a real broker.

Held for every generated message: the handler never raises (so paho acknowledges it), and the message is
accounted for: refused whole (a dead letter) or read into one item per line, each a record or a row error; every
record is then scored by the real model or reported as a row error, never a crash. ~3,100 cases in all.
"""

from __future__ import annotations

import json
import logging
import queue

import pytest
from broker import Broker, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeml_runtime.deadletter import DeadLetters
from edgeml_runtime.errors import InputError
from edgeml_runtime.inbox import TopicRecords
from edgeml_runtime.model import Model
from edgeml_runtime.mqtt import MqttSettings
from edgeml_runtime.outbox import Outbox
from edgeml_runtime.protocol import DeviceTopics, VerdictRule, describe_window, examples
from edgeml_runtime.telemetry import Telemetry

TOPIC = "sensors/pi-07/readings"
LIMIT = 4096
READING = {"timestamp": "2024-01-01T00:00:53", "machine_id": "M-0008", "machine_type": "L", "air_temp_c": 19.6,
           "process_temp_c": 29.4, "rpm": 1657, "torque_nm": 31.3, "vibration_mm_s": 4.11, "tool_wear_min": 195}

values = st.one_of(
    st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1,
                                  max_size=3),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
records = st.builds(lambda changes: json.dumps(dict(READING, **changes)),
                    st.dictionaries(st.sampled_from(sorted(READING)), values, max_size=3))


def nested(depth: int, closed: bool) -> str:
    return "[" * depth + ("]" * depth if closed else "")


lines = st.one_of(
    records,
    st.builds(nested, st.integers(1, 150_000), st.booleans()),
    st.builds(lambda d: '{"rpm": ' + nested(d, True) + "}", st.integers(900, 5000)),
    st.builds(lambda s: json.dumps({"machine_type": s}), st.text(alphabet=st.characters(min_codepoint=0xD800,
                                                                                          max_codepoint=0xDFFF))),
    st.text(max_size=40),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
)
payloads = st.one_of(
    st.binary(max_size=300),
    st.lists(lines, min_size=1, max_size=5).flatmap(
        lambda ls: st.sampled_from(["\n", "\r\n"]).map(lambda sep: sep.join(ls).encode("utf-8", "surrogatepass"))),
    st.integers(LIMIT + 1, LIMIT + 3000).map(lambda n: b'{"rpm": "' + b"9" * n + b'"}'),
)


def mqtt_message(payload: bytes):
    """A real paho MQTTMessage, as paho's loop hands it to on_message."""
    from paho.mqtt.client import MQTTMessage

    message = MQTTMessage(mid=1, topic=TOPIC.encode())
    message.payload, message.qos = payload, 1
    return message


def bounds(payload: bytes) -> tuple[int, int]:
    """The fewest and most items a message that is read can give: one per line (cut at \n, \r\n or \r) that has
    a visible ASCII character, one per line at most."""
    segments = payload.splitlines() or [b""]
    return sum(any(0x21 <= c <= 0x7E for c in s) for s in segments), len(segments)


@pytest.fixture(scope="module")
def model(demo_bundle):
    return Model.load(demo_bundle)


def check_scored(model: Model, items: list) -> None:
    """Every readable record is scored or a row error; the scorer never crashes. In batches, as the loop scores."""
    for start in range(0, len(items), 256):
        score_batch(model, [i for i in items[start:start + 256] if i.error is None])


def score_batch(model: Model, readable: list) -> None:
    assert all(isinstance(i.record, dict) for i in readable)
    if readable:
        try:
            result = model.predict([i.record for i in readable], on_error="skip", row_numbers=[i.row for i in readable])
        except InputError:  # a column no record of the batch has: the scoring loop counts each row as bad
            return
        assert len(result) + len(result.errors) == len(readable)


def test_fuzzed_messages_through_the_handler_paho_calls(model, tmp_path):
    items: queue.Queue = queue.Queue()
    letters = DeadLetters(tmp_path / "o.db.deadletter.jsonl", max_bytes=256 * 1024)
    inbox = TopicRecords(TOPIC, items, max_bytes=LIMIT, dead_letters=letters, log=logging.getLogger("fuzz"))
    seen = {"messages": 0}
    scorable: list = []

    @settings(max_examples=3000, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(payloads)
    def handled(payload: bytes):
        before = dict(inbox.counts)
        inbox.on_message(None, None, mqtt_message(payload))  # raising here would leave it unacknowledged
        seen["messages"] += 1
        got = []
        while not items.empty():
            got.append(items.get_nowait())
        refused = inbox.counts["messages_refused"] - before["messages_refused"]
        if len(payload) > LIMIT:
            assert refused == 1 and not got
        else:
            low, high = bounds(payload)
            assert refused == 0 and low <= len(got) <= high, (payload[:200], got)
            assert inbox.counts["records_received"] - before["records_received"] == len(got)
            assert all((i.record is None) != (i.error is None) for i in got)
            scorable.extend(got)

    handled()
    check_scored(model, scorable)
    assert seen["messages"] >= 2700
    assert inbox.counts["records_dropped"] == 0
    assert letters.count == inbox.counts["messages_refused"] + inbox.counts["row_errors"] and not letters.unwritten
    kept = sum(p.stat().st_size for p in tmp_path.glob("o.db.deadletter.jsonl*"))
    assert kept <= 256 * 1024  # the dead-letter files stay within their bound


def test_fuzzed_messages_through_a_real_broker(tmp_path):
    """A smaller set, published for real: the device stays connected and accounts for every message."""
    import paho.mqtt.client as mqtt

    generated: list[bytes] = []

    @settings(max_examples=120, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(payloads)
    def collect(payload: bytes):
        generated.append(payload)

    collect()
    items: queue.Queue = queue.Queue()
    birth = {"model": examples()["drift"]["model"], "window": describe_window(1000, 300.0, VerdictRule())}
    with Broker(tmp_path / "mosquitto") as broker, Outbox(tmp_path / "o.db") as box:
        t = Telemetry(MqttSettings(broker.url, input_max_bytes=LIMIT, reconnect_min=0.05, reconnect_max=0.2),
                      DeviceTopics("plant-a", "pi-07"), birth=birth, outbox=box,
                      dead_letters=DeadLetters(tmp_path / "o.db.deadletter.jsonl"), log=logging.getLogger("fuzz"))
        t.subscribe_records(TOPIC, items)
        t.start()
        wait_until(lambda: t.stats["connected"], what="the device's connection")
        wait_until(lambda: "pi-07 (p5" in broker.log(), what="the device's connection in the broker's log")
        sender = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sensor")
        sender.connect("127.0.0.1", broker.port)
        sender.loop_start()
        for payload in [*generated, b'{"marker": true}']:
            sender.publish(TOPIC, payload, qos=1).wait_for_publish(10)
        refused = sum(len(p) > LIMIT for p in generated)
        wait_until(lambda: t.stats["messages_refused"] == refused and any(
            i.record == {"marker": True} for i in list(items.queue)), timeout=20, what="every message handled")
        low = sum(bounds(p)[0] for p in generated if len(p) <= LIMIT)
        high = sum(bounds(p)[1] for p in generated if len(p) <= LIMIT)
        stats = t.stats
        sender.disconnect()
        sender.loop_stop()
        t.stop()
        connections = broker.log().count(f"as {DeviceTopics('plant-a', 'pi-07').client_id} ")
    assert stats["connected"] and connections == 1  # no message ended the connection
    assert low + 1 <= stats["records_received"] == items.qsize() <= high + 1
