"""The fleet end to end: real `edgeml-runtime run` devices, a real Mosquitto, two real controllers, one store.

Three fleets stream the built-in demo data through one broker at once, each
device its own `edgeml-runtime run` process reading 600 fresh rows on stdin:

* ``calm``: three devices, nothing shifted: no decision;
* ``world``: four devices, three of them see the world change (air +5 °C,
  torque +20 Nm): one fleet drift decision;
* ``broken``: four devices, one of them far from the others (its sensors read
  off): a device anomaly for it, no fleet drift.

Two controllers (`edgeml fleet run`) share the load through one MQTT shared
subscription and one SQLite store: every window is stored once, and each
decision is taken once (by whichever holds the judging lease) and published,
retained, on the fleet's status topic.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
from broker import Subscriber, require_mosquitto, wait_until
from conftest import BIN, run_env
from fleet_traffic import FAST_POLICY, SHIFT, edgeml, fleet_broker

#: One device far from the others: its sensors read off.
BROKEN = {"air_temp_c": -8.0, "process_temp_c": -8.0, "torque_nm": -15.0, "vibration_mm_s": 10.0}
FLEETS = {
    "calm": {"d1": None, "d2": None, "d3": None},
    "world": {"d1": SHIFT, "d2": SHIFT, "d3": SHIFT, "d4": None},
    "broken": {"d1": None, "d2": None, "d3": None, "d4": BROKEN},
}
ROWS, WINDOW_ROWS = 600, 300
JUDGE_EVERY = 0.5
POLICY = FAST_POLICY


class Controller:
    """``edgeml fleet run`` as a process, its log lines collected as they come."""

    def __init__(self, config: Path, client_id: str):
        self.proc = subprocess.Popen([str(BIN / "edgeml"), "fleet", "run", "--config", str(config),
                                      "--client-id", client_id], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=run_env())
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True)
        self._reader.start()

    def saw(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._reader.join(10)


def device_rows(seed: int, shift: dict | None) -> str:
    from edgeml.data.demo import demo_frame

    frame = demo_frame(rows=ROWS, seed=seed, label=False)
    for column, delta in (shift or {}).items():
        frame[column] = frame[column] + delta
    return "".join(json.dumps(r) + "\n" for r in frame.astype(str).to_dict("records"))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, demo_bundle):
    require_mosquitto()
    tmp = tmp_path_factory.mktemp("fleet-e2e")
    broker = fleet_broker(tmp / "mosquitto").start()  # with docs/mosquitto's queue limits
    store = f"sqlite:///{tmp / 'fleet.db'}"
    edgeml("registry", "add", demo_bundle, "--store", store)
    config = tmp / "fleet.toml"
    config.write_text(f'[broker]\nurl = "{broker.url}"\ngroup = "e2e"\n\n[store]\nurl = "{store}"\n{POLICY}')
    controllers = [Controller(config, f"controller-{i}") for i in (1, 2)]
    try:
        for c in controllers:
            wait_until(lambda c=c: c.saw("subscribed to") or c.proc.poll() is not None, 60,
                       what="the controllers' subscriptions")
            assert c.proc.poll() is None, "".join(c.lines)
        with Subscriber(broker.url, topic="edgeml/+/_controller/status", client_id="watcher") as statuses:
            devices = []
            for f, (fleet_name, members) in enumerate(FLEETS.items()):
                for d, (device, shift) in enumerate(members.items()):
                    cmd = [str(BIN / "edgeml-runtime"), "run", str(demo_bundle), "--fleet", fleet_name,
                           "--device-id", device, "--broker", broker.url,
                           "--outbox", str(tmp / f"{fleet_name}-{device}.db"), "--window-rows", str(WINDOW_ROWS)]
                    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.PIPE, text=True, env=run_env())
                    devices.append((proc, device_rows(100 + 10 * f + d, shift)))
            for proc, text in devices:
                _, err = proc.communicate(text, timeout=120)
                assert proc.returncode == 0, err
            yield {"store": store, "broker": broker, "statuses": statuses, "controllers": controllers,
                   "config": config}
    finally:
        codes = [c.stop() for c in controllers]
        broker.stop()
    assert codes == [0, 0], [c.lines[-5:] for c in controllers]


def decisions(store: str) -> list[dict]:
    return json.loads(edgeml("fleet", "decisions", "--json", "--store", store).stdout)


def test_each_fleet_gets_exactly_its_decision(fleet):
    store = fleet["store"]
    expected = [("world", "drift", None), ("broken", "anomaly", "d4")]

    def taken():
        return {(d["fleet"], d["kind"], d["device"]) for d in decisions(store)} >= set(expected)

    wait_until(taken, 60, what="a drift decision for world and an anomaly for broken/d4", interval=0.5)
    time.sleep(3 * JUDGE_EVERY)  # three more judgements: nothing more is decided, by either controller
    found = [(d["fleet"], d["kind"], d["device"]) for d in decisions(store)]
    assert sorted(found) == sorted(expected), found  # each once: one controller held the lease
    deciders = [c for c in fleet["controllers"] if c.saw("published decision")]
    assert len(deciders) == 1, [c.lines for c in fleet["controllers"]]


def test_every_window_stored_once(fleet):
    from edgeml.fleet.store import Store

    with Store.open(fleet["store"]) as store:
        for name, members in FLEETS.items():
            seqs = {d: [w.seq for w in store.windows(name, None, device=d)] for d in members}
            assert seqs == {d: list(range(ROWS // WINDOW_ROWS)) for d in members}, (name, seqs)
            assert [d.device for d in store.devices(name)] == list(members)
        assert store.rejected() == []


def test_decisions_are_published_retained_on_the_status_topic(fleet):
    import jsonschema

    from edgeml_runtime.protocol import schema, status_topic

    with Subscriber(fleet["broker"].url, topic="edgeml/+/_controller/status", client_id="late") as late:
        got = late.wait_for(lambda s: len(s.messages) >= 2 and s.messages, what="the retained statuses")
    by_topic = {m.topic: (m, json.loads(m.payload)) for m in got}
    assert set(by_topic) == {status_topic("world"), status_topic("broken")}
    for m, payload in by_topic.values():
        assert m.retain
        jsonschema.validate(payload, schema("status"))
    print(by_topic[status_topic("world")][1])
    seen = {json.loads(m.payload)["decision"]["id"] for m in fleet["statuses"].messages}
    assert seen == {d["id"] for d in decisions(fleet["store"])}  # every decision was published, live


def test_fleet_status_shows_the_devices_and_the_verdicts(fleet):
    status = json.loads(edgeml("fleet", "status", "--json", "--config", fleet["config"]).stdout)["fleets"]
    assert set(status) == set(FLEETS)
    for name, members in FLEETS.items():
        assert [d["device"] for d in status[name]["devices"]] == list(members)
        assert not any(d["online"] for d in status[name]["devices"])  # each device said goodbye at the end
        (bundle,) = status[name]["bundles"].values()
        assert bundle["known"] and bundle["name"] == "demo"
    world, = status["world"]["bundles"].values()
    broken, = status["broken"]["bundles"].values()
    calm, = status["calm"]["bundles"].values()
    assert world["state"] == "drift" and world["anomalies"] == []
    assert broken["state"] == "ok" and broken["anomalies"] == ["d4"]
    assert calm["state"] == "ok" and calm["anomalies"] == [] and calm["last_decision"] is None
    human = edgeml("fleet", "status", "--config", fleet["config"]).stdout
    assert "fleet world: 4 devices, 0 online" in human and "anomalies: d4" in human
