"""``edgeml fleet run --workers N``: batches decoded and committed in store processes, acknowledged in order.

Real Mosquitto, real controllers as subprocesses, real SQLite files and the
suite's PostgreSQL; store processes killed with SIGKILL, and the controller
itself.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
from broker import wait_until
from fleet_traffic import Controller, Publisher, expected_keys, stored_keys, traffic
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/fleet.db"
    return request.getfixturevalue("postgres").create_database("workers_once")


def controller(folder, broker, store, client_id, *extra, name=None):
    return Controller(folder, "--broker", broker.url, "--store", store, "--judge-every", "0", "--client-id",
                      client_id, "--batch-wait", "0.05", "--batch-size", "50", "--workers", "2", *extra,
                      name=name or client_id)


def children(pid: int) -> list[int]:
    """The live store processes whose parent is ``pid`` (not zombies, nor multiprocessing's resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            except OSError:
                continue
            if int(ppid) == pid and state != "Z" and b"spawn_main" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def assert_exactly_once(store, expected: set) -> None:
    keys = stored_keys(store)
    assert len(keys) == len(set(keys)), "a window is stored twice"
    assert set(keys) == expected, f"{len(expected - set(keys))} missing, {len(set(keys) - expected)} unexpected"


def test_workers_store_every_window_once(mqtt_broker, store_url, tmp_path):
    import sqlalchemy as sa

    fleet = "workers-" + store_url.split(":")[0].split("+")[0]
    c = controller(tmp_path, mqtt_broker, store_url, fleet, "--fleet", fleet).start()
    c.wait_log("subscribed to")
    assert "committing in 2 processes" in c.log()
    assert len(children(c.proc.pid)) >= 2, "no store processes"
    pub = Publisher(mqtt_broker.url, f"pub-{fleet}")
    messages = [*traffic(fleet, 21, 20), (f"edgeml/{fleet}/d0000/drift", b"{not json")]
    device_20 = [m for m in messages if "/d0020/" in m[0]]  # the controller's lean path takes none of these:
    sent = pub.send([m for m in messages if "/d0020/" not in m[0]])
    with_properties = Properties(PacketTypes.PUBLISH)
    with_properties.UserProperty = ("source", "test")
    infos = [pub.client.publish(topic, payload, qos=i % 2, properties=with_properties if i % 2 else None)
             for i, (topic, payload) in enumerate(device_20)]  # with properties, or at QoS 0: paho's own path
    for info in infos:
        info.wait_for_publish(30)
    pub.close()
    wait_until(lambda: len(stored_keys(store_url)) == 420, timeout=60, what="420 windows stored")
    assert c.stop() == 0
    assert_exactly_once(store_url, expected_keys(fleet, 21, 20))
    assert c.counters() == {"stored": sent - 1 + len(device_20), "undecodable": 1}  # 21 births, 420 windows
    engine = sa.create_engine(store_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM rejected")).scalar() == 1
    engine.dispose()
    assert "Traceback" not in c.log()


def test_killed_store_process_and_killed_controller_lose_nothing(mqtt_broker, tmp_path):
    """A store process killed mid-stream is started again (its batch committed again, once); the controller
    killed with SIGKILL takes its store processes with it; restarted, it stores the rest, each window once."""
    store = f"sqlite:///{tmp_path}/fleet.db"
    fleet, devices, windows = "workers-killed", 30, 60
    c = controller(tmp_path, mqtt_broker, store, "wk-1", "--fleet", fleet).start()
    c.wait_log("subscribed to")
    pub = Publisher(mqtt_broker.url, "pub-wk")
    sender = threading.Thread(target=pub.send, args=(traffic(fleet, devices, windows),), kwargs={"pace": 0.0003})
    sender.start()
    wait_until(lambda: len(stored_keys(store)) >= 200, timeout=60, what="200 windows stored")
    os.kill(children(c.proc.pid)[0], signal.SIGKILL)
    c.wait_log("ended (exit code -9)", timeout=30)
    c.wait_log("started again", timeout=30)
    wait_until(lambda: len(children(c.proc.pid)) >= 2, timeout=30, what="the store process started again")
    at = len(stored_keys(store))
    wait_until(lambda: len(stored_keys(store)) > at + 100, timeout=60, what="storing after the restart")
    kept = children(c.proc.pid)
    c.kill()
    wait_until(lambda: not any(alive(p) for p in kept), timeout=30, what="the store processes to end with it")
    sender.join(120)
    pub.close()
    assert len(stored_keys(store)) < devices * windows, "everything was stored before the kill"
    again = controller(tmp_path, mqtt_broker, store, "wk-1", "--fleet", fleet, name="wk-1b").start()
    wait_until(lambda: len(stored_keys(store)) == devices * windows, timeout=90, what="every window")
    assert again.stop() == 0
    assert_exactly_once(store, expected_keys(fleet, devices, windows))
    assert "session resumed" in again.log()


def test_a_store_process_killed_while_idle_starts_again(mqtt_broker, tmp_path):
    """With no traffic at all, a killed store process is started again on its timer, not at the next message."""
    c = controller(tmp_path, mqtt_broker, f"sqlite:///{tmp_path}/fleet.db", "wk-idle", "--fleet", "idle").start()
    c.wait_log("subscribed to")
    first = children(c.proc.pid)
    os.kill(first[0], signal.SIGKILL)
    c.wait_log("started again", timeout=15)
    wait_until(lambda: len(children(c.proc.pid)) == 2 and first[0] not in children(c.proc.pid), timeout=15,
               what="two store processes, the killed one replaced")
    assert c.stop() == 0


def test_tls_broker_with_large_windows(tmp_path):
    """Over mqtts:// (paho's TLS socket under the controller's read-ahead), windows of 40 columns (~10 KB, several
    TLS records each) are stored once each, with workers."""
    import paho.mqtt.client as mqtt
    from broker import Broker, make_pki

    pki = make_pki(tmp_path / "pki")
    broker = Broker(tmp_path / "tls", pki=pki, persistence=True).start()
    try:
        store, fleet = f"sqlite:///{tmp_path}/fleet.db", "tls"
        c = controller(tmp_path, broker, store, "tls-1", "--fleet", fleet, "--ca-file", str(pki.ca)).start()
        c.wait_log("subscribed to")
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="pub-tls", protocol=mqtt.MQTTv5)
        pub.tls_set(ca_certs=str(pki.ca))
        pub.connect("localhost", broker.port, 30)
        pub.loop_start()
        infos = [pub.publish(t, p, qos=1) for t, p in traffic(fleet, 10, 30, columns=40)]
        for info in infos:
            info.wait_for_publish(60)
        pub.disconnect()
        pub.loop_stop()
        wait_until(lambda: len(stored_keys(store)) == 300, timeout=60, what="300 windows over TLS")
        assert c.stop() == 0
        assert_exactly_once(store, expected_keys(fleet, 10, 30))
    finally:
        broker.stop()
