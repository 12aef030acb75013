"""MQTT telemetry against a real Mosquitto: fields, will, broker restarts, kill -9, a full outbox, an input topic.

Every message the subscriber receives is validated against the JSON Schemas shipped in the package
(``edgeml_runtime/schemas/``, loaded with :mod:`edgeml_runtime.protocol.schemas`).
Device processes that are killed run tests/device_process.py. What telemetry refuses and the schemas
themselves, which need no broker, are tested in test_telemetry_contract.py; ACL, passwords and TLS
in test_mqtt_security.py. The helpers here are shared by those files.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import queue
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from broker import Subscriber, wait_until
from device_process import DeviceProcess
from jsonschema import Draft202012Validator, FormatChecker

from edgeml_runtime.errors import TelemetryError
from edgeml_runtime.mqtt import MqttSettings
from edgeml_runtime.outbox import MIN_MAX_BYTES, Outbox
from edgeml_runtime.protocol import (
    ENVELOPE_KEYS,
    FORMAT_VERSION,
    DeviceTopics,
    VerdictRule,
    decode,
    describe_window,
    examples,
    schema,
    window_key,
)
from edgeml_runtime.telemetry import Telemetry

REPO = Path(__file__).resolve().parents[1]
FLEET = "plant-a"
BASE = datetime(2026, 1, 1, tzinfo=UTC)
EXAMPLE = examples()["drift"]
MODEL = EXAMPLE["model"]
BIRTH = {"model": MODEL, "window": describe_window(1000, 300.0, VerdictRule())}
FAST = dict(reconnect_min=0.05, reconnect_max=0.2)  # reconnect quickly in tests


def instant(i: int) -> str:
    return (BASE + timedelta(minutes=i)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def window(i: int) -> dict:
    """Window number ``i``: the documented example's window part, opening ``i`` minutes after BASE."""
    w = {k: v for k, v in copy.deepcopy(EXAMPLE).items() if k not in ENVELOPE_KEYS}
    return dict(w, start=instant(i), end=instant(i + 1))


def index(msg: dict) -> int:
    start = datetime.fromisoformat(msg["start"].replace("Z", "+00:00"))
    return round((start - BASE).total_seconds() / 60)


VALIDATORS = {kind: Draft202012Validator(schema(kind), format_checker=FormatChecker())
               for kind in ("announcement", "birth", "drift", "death", "prediction", "status", "update")}


def check(kind: str, payload: dict) -> dict:
    VALIDATORS[kind].validate(payload)
    return payload


def received(sub: Subscriber, kind: str) -> list[dict]:
    """The decoded ``kind`` messages, each checked against its schema."""
    return [check("prediction" if kind == "predictions" else kind, j) for _, j in sub.on(kind)]


def unique_windows(sub: Subscriber) -> list[dict]:
    """Drift windows de-duplicated by (fleet, device, session, seq) (:func:`window_key`), in order of first arrival."""
    seen, out = set(), []
    for m, j in sub.on("drift"):
        key = window_key(*decode(m.topic, m.payload))
        check("drift", j)
        if key not in seen:
            seen.add(key)
            out.append(j)
    return out


def assert_in_order(windows: list[dict]) -> None:
    assert [index(w) for w in windows] == sorted(index(w) for w in windows)
    keys = [(w["session"], w["seq"]) for w in windows]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


@pytest.fixture
def subscriber(broker):
    with Subscriber(broker.url, persistent=True) as sub:
        yield sub


@pytest.fixture
def device_process():
    """Starts :class:`DeviceProcess` es and kills any still running after the test."""
    started: list[DeviceProcess] = []

    def start(*args, **kwargs) -> DeviceProcess:
        started.append(DeviceProcess(*args, **kwargs))
        return started[-1]

    yield start
    for p in started:
        p.kill()


def telemetry(url: str, box: Outbox, device: str = "pi-07", **settings) -> Telemetry:
    return Telemetry(MqttSettings(url, **{**FAST, **settings}), DeviceTopics(FLEET, device), birth=BIRTH,
                     outbox=box, log=logging.getLogger(f"test.telemetry.{device}"))


def connected(t: Telemetry) -> bool:
    return t.stats["connected"]


def online(url: str, box: Outbox, **kwargs) -> Telemetry:
    """A started :class:`Telemetry`, once it is connected."""
    t = telemetry(url, box, **kwargs)
    t.start()
    wait_until(lambda: connected(t), what=f"{t.topics.device_id}'s connection")
    return t


# -- fields, retain, will ----------------------------------------------------

@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_birth_drift_predictions_and_death_have_the_documented_fields(broker, subscriber, tmp_path, protocol):
    with Outbox(tmp_path / "outbox.db") as box:
        t = online(broker.url, box, protocol=protocol)
        for i in range(3):
            assert t.send_drift(window(i)) == i
        t.send_prediction({"row": 1, "prediction": 1, "probabilities": {"0": 0.25, "1": 0.75}})
        subscriber.wait_for(lambda s: len(s.on("drift")) == 3 and s.on("predictions"), what="3 windows")
        wait_until(lambda: t.stats["acked"] == 3 and t.stats["pending"] == 0, what="3 acks")
        t.stop()
        subscriber.wait_for(lambda s: s.on("death"), what="the death message")
        stats = t.stats

    (birth,) = received(subscriber, "birth")
    assert birth["device"] == "pi-07" and birth["fleet"] == FLEET and birth["model"] == MODEL
    assert birth["window"] == BIRTH["window"] and birth["runtime"]["mqtt_protocol"] == protocol
    session = birth["bdSeq"]

    drift = received(subscriber, "drift")
    assert [(w["session"], w["seq"]) for w in drift] == [(session, 0), (session, 1), (session, 2)]
    for i, w in enumerate(drift):
        assert w["device"] == "pi-07" and w["model"] == MODEL
        assert w["outbox_dropped"] == 0 and w["historical"] is False
        assert {k: v for k, v in w.items() if k not in ENVELOPE_KEYS} == window(i)
    (prediction,) = received(subscriber, "predictions")
    assert prediction["session"] == session and prediction["probabilities"] == {"0": 0.25, "1": 0.75}

    (death,) = received(subscriber, "death")
    assert death["reason"] == "shutdown" and death["bdSeq"] == session
    assert stats.items() >= {"sent": 3, "acked": 3, "refused": 0, "pending": 0, "connected": False}.items()

    with Subscriber(broker.url, client_id="late-subscriber") as late:  # birth and death are retained
        late.wait_for(lambda s: s.on("birth") and s.on("death"), what="the retained birth and death")
        assert [m.retain for m, _ in late.on("birth") + late.on("death")] == [True, True]
        assert received(late, "birth")[0]["bdSeq"] == received(late, "death")[0]["bdSeq"] == session


def test_death_is_the_last_will_when_the_process_is_killed(broker, subscriber, tmp_path, device_process):
    device = device_process(broker.url, tmp_path / "outbox.db")
    device.wait_line("connected")
    (birth,) = subscriber.wait_for(lambda s: received(s, "birth"), what="the birth")
    device.kill()
    (death,) = subscriber.wait_for(lambda s: received(s, "death"), what="the will")
    assert death["reason"] == "lost" and death["bdSeq"] == birth["bdSeq"] and "time" not in death
    with Subscriber(broker.url, client_id="late-subscriber") as late:
        (message, _), = late.wait_for(lambda s: s.on("death"), what="the retained will")
        assert message.retain


def test_real_drift_windows_go_through_unchanged_and_match_the_schema(broker, subscriber, tmp_path, demo_bundle,
                                                                      demo_rows):
    from edgeml_runtime import Model
    from edgeml_runtime.agent import birth_description
    from edgeml_runtime.drift import DriftSettings
    from edgeml_runtime.protocol import add_counts, bundle_sha256, decode, describe_model, judge_window

    model = Model.load(demo_bundle)
    drift = DriftSettings(window_rows=20, rule=VerdictRule(psi_moderate=0.05, psi_significant=0.2, min_rows=10))
    model.monitor = model.drift_monitor(drift)
    with open(demo_rows, newline="") as f:
        model.predict(list(csv.DictReader(f)), on_error="skip")
    windows = [*model.monitor.poll(), model.monitor.flush()]
    assert len(windows) == 3
    with Outbox(tmp_path / "outbox.db") as box:
        t = Telemetry(MqttSettings(broker.url, **FAST), DeviceTopics(FLEET, "pi-07"), outbox=box,
                      birth=birth_description(describe_model(model), drift))
        t.start()
        for w in windows:
            t.send_drift(w)
        subscriber.wait_for(lambda s: len(s.on("drift")) == 3 and s.on("birth"), what="3 real windows")
        t.stop()
    (birth,) = received(subscriber, "birth")
    assert birth["model"]["sha256"] == model.artifact.sha256
    manifest = json.loads((demo_bundle / "manifest.json").read_text())
    assert birth["model"]["bundle_sha256"] == bundle_sha256(manifest) and birth["format_version"] == FORMAT_VERSION
    got = [{k: v for k, v in w.items() if k not in ENVELOPE_KEYS} for w in received(subscriber, "drift")]
    assert got == json.loads(json.dumps(windows))

    # A fleet controller rebuilds the device's rule from the birth it received and reaches the device's verdicts.
    (message, _), = subscriber.on("birth")
    topic, decoded = decode(message.topic, message.payload)
    assert topic.kind == "birth" and decoded["window"]["rows"] == 20
    rule = VerdictRule.from_dict(decoded["window"]["rule"])
    assert rule == drift.rule and VerdictRule.from_dict(rule.to_dict()) == rule
    reference = manifest["reference"]
    for w in got:
        judged = judge_window(reference, w, rule)
        assert judged["verdict"] == w["verdict"] and judged["verdict"]["status"] is not None
        assert {n: c["status"] for n, c in judged["columns"].items()} == {n: c["status"] for n, c in
                                                                           w["columns"].items()}
        assert judge_window(reference, w, VerdictRule())["verdict"]["status"] is None  # 20 rows < the default 100
    fleet = judge_window(reference, add_counts(got), rule)
    assert fleet["verdict"]["status"] in ("ok", "drift")


# -- nothing is lost -----------------------------------------------------------

@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_broker_restart_mid_stream_every_window_once_in_order(broker, subscriber, tmp_path, protocol):
    with Outbox(tmp_path / "outbox.db") as box:
        t = online(broker.url, box, protocol=protocol)
        for i in range(10):
            t.send_drift(window(i))
        wait_until(lambda: t.stats["pending"] == 0, what="10 acks")

        broker.stop()
        wait_until(lambda: not t.stats["connected"], what="the client to notice")
        for i in range(10, 20):
            t.send_drift(window(i))
        assert t.stats["pending"] == 10

        broker.start()
        wait_until(lambda: connected(t), what="the reconnection")
        for i in range(20, 30):
            t.send_drift(window(i))
        subscriber.wait_for(lambda s: len(unique_windows(s)) >= 30, timeout=20, what="30 windows")
        t.stop()

    windows = unique_windows(subscriber)
    assert [index(w) for w in windows] == list(range(30))
    assert_in_order(windows)
    assert [w["historical"] for w in windows] == [False] * 10 + [True] * 10 + [False] * 10
    births = {b["bdSeq"] for b in received(subscriber, "birth")}
    assert len(births) == 2 and {w["session"] for w in windows} <= births


def test_kill_9_mid_stream_then_restart_loses_no_window(broker, subscriber, tmp_path, device_process):
    outbox = tmp_path / "outbox.db"
    first = device_process(broker.url, outbox, count=500, pace=0.002)
    subscriber.wait_for(lambda s: len(s.on("drift")) >= 20, what="the first windows")
    first.kill()
    written = first.written()
    assert 20 <= len(written) < 500, "the device was not killed mid-stream"

    second = device_process(broker.url, outbox, drain=True)
    second.wait_exit()
    windows = unique_windows(subscriber)
    got = [index(w) for w in windows]
    assert set(written) <= set(got)
    assert got == list(range(len(got)))  # in order, none missing (a few written but not yet reported may follow)
    assert_in_order(windows)
    sessions = sorted(b["bdSeq"] for b in received(subscriber, "birth"))
    assert len(sessions) == 2
    assert all(w["historical"] for w in windows if w["session"] == sessions[1])
    assert any(d["reason"] == "lost" and d["bdSeq"] == sessions[0] for d in received(subscriber, "death"))


def test_windows_kept_while_the_broker_is_down_survive_kill_9(broker, subscriber, tmp_path, device_process):
    outbox = tmp_path / "outbox.db"
    broker.stop()
    offline = device_process(broker.url, outbox, count=15)
    offline.wait_line("done")
    offline.kill()
    assert offline.written() == list(range(15))

    broker.start()
    device_process(broker.url, outbox, drain=True).wait_exit()
    windows = subscriber.wait_for(lambda s: len(unique_windows(s)) == 15 and unique_windows(s), what="15 windows")
    assert [index(w) for w in windows] == list(range(15))
    assert all(w["historical"] for w in windows)
    assert_in_order(windows)


def test_a_full_outbox_drops_the_oldest_and_reports_how_many(broker, subscriber, tmp_path):
    broker.stop()
    with Outbox(tmp_path / "outbox.db", max_bytes=MIN_MAX_BYTES) as box:
        t = telemetry(broker.url, box)
        t.start()  # the broker is down: never raises
        wait_until(lambda: t.stats["last_error"], what="a failed connection")
        assert "cannot connect" in t.stats["last_error"] and not t.stats["connected"]
        total = 60
        for i in range(total):
            t.send_drift(window(i))
        assert t.stats["dropped"] > 0 and t.stats["pending"] < total
        broker.start()
        wait_until(lambda: t.stats["pending"] == 0, timeout=15, what="the outbox to drain")
        unreported = box.dropped
        t.stop()

    windows = subscriber.wait_for(lambda s: total - 1 in {index(w) for w in unique_windows(s)}
                                  and unique_windows(s), what="the last window")
    got = [index(w) for w in windows]
    assert got == list(range(total - len(got), total))  # the newest survive, in order
    assert len(got) + sum(w["outbox_dropped"] for w in windows) + unreported == total


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_records_from_an_input_topic_wait_for_an_offline_device(broker, tmp_path, protocol):
    import paho.mqtt.client as mqtt

    topic = "sensors/pi-07/readings"
    items: queue.Queue = queue.Queue()
    with Outbox(tmp_path / "o.db") as box:
        first = telemetry(broker.url, box, protocol=protocol)
        first.subscribe_records(topic, items)
        first.start()
        wait_until(lambda: connected(first), what="the first connection")
        first.stop()  # the broker keeps the session and its subscription

        sender = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sensor")
        sender.connect("127.0.0.1", broker.port)
        sender.loop_start()
        for payload in (b'{"rpm": 1500}', b'{"rpm": 1510}\n{"rpm": 1520}\n', b"not json"):
            sender.publish(topic, payload, qos=1).wait_for_publish(5)
        sender.disconnect()
        sender.loop_stop()

        second = telemetry(broker.url, box, protocol=protocol)
        second.subscribe_records(topic, items)
        second.start()
        wait_until(lambda: items.qsize() == 4, what="the records queued while the device was offline")
        assert second.stats["records_received"] == 4
        second.stop()
        with pytest.raises(TelemetryError, match="before start"):
            second.subscribe_records(topic, items)
    got = [items.get_nowait() for _ in range(4)]
    assert [(i.row, i.record) for i in got[:3]] == [(1, {"rpm": 1500}), (2, {"rpm": 1510}), (3, {"rpm": 1520})]
    assert got[3].record is None and "not valid JSON" in str(got[3].error)


# -- a device in its own process, to be killed -------------------------------------
