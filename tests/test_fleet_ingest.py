"""The controller hears every window exactly once: real Mosquitto, real ``edgeml fleet run`` processes, QoS 1.

One broker for the module (configured with docs/mosquitto's queue limits),
each test on a fleet of its own; publishers are real paho clients sending
windows in the runtime's own envelopes. Each test checks the store's rows
against the exact set of window keys sent: none missing, none twice.
"""

from __future__ import annotations

import threading
import time

import pytest
from broker import wait_until
from fleet_traffic import Controller, Publisher, expected_keys, stored_keys, traffic


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/fleet.db"
    server = request.getfixturevalue("postgres")
    return server.create_database("ingest_once")


def controller(folder, broker, store, client_id, *extra, name=None, env=None):
    return Controller(folder, "--broker", broker.url, "--store", store, "--judge-every", "0",
                      "--client-id", client_id, "--batch-wait", "0.05", *extra, name=name or client_id, env=env)


def count(store) -> int:
    return len(stored_keys(store))


def assert_exactly_once(store, expected: set) -> None:
    keys = stored_keys(store)
    assert len(keys) == len(set(keys)), "a window is stored twice"
    missing, unexpected = expected - set(keys), set(keys) - expected
    assert not missing and not unexpected, (f"{len(missing)} windows missing (e.g. {sorted(missing)[:3]}), "
                                            f"{len(unexpected)} unexpected")


def test_every_window_stored_once(mqtt_broker, store_url, tmp_path):
    fleet = "once-" + store_url.split(":")[0].split("+")[0]
    c = controller(tmp_path, mqtt_broker, store_url, fleet, "--fleet", fleet).start()
    c.wait_log("subscribed to")
    pub = Publisher(mqtt_broker.url, f"pub-{fleet}")
    sent = pub.send(traffic(fleet, 20, 10))
    pub.close()
    wait_until(lambda: count(store_url) == 200, timeout=60, what="200 windows stored")
    assert c.stop() == 0
    assert_exactly_once(store_url, expected_keys(fleet, 20, 10))
    outcomes = c.counters()
    assert outcomes == {"stored": sent}, outcomes  # 20 births and 200 windows, no duplicate, nothing rejected
    assert "disconnected" in c.log() and "Traceback" not in c.log()


def test_sigkill_mid_ingest_then_restart_loses_nothing(mqtt_broker, tmp_path):
    store = f"sqlite:///{tmp_path}/fleet.db"
    fleet, devices, windows = "killed", 30, 100
    messages = traffic(fleet, devices, windows)
    c = controller(tmp_path, mqtt_broker, store, "kill-1", "--fleet", fleet).start()
    c.wait_log("subscribed to")
    pub = Publisher(mqtt_broker.url, "pub-kill")
    sender = threading.Thread(target=pub.send, args=(messages,), kwargs={"pace": 0.0002})
    sender.start()
    wait_until(lambda: count(store) >= 300, timeout=60, what="300 windows stored before the kill")
    c.kill()  # SIGKILL: whatever it received and had not committed was never acknowledged
    at_kill = count(store)
    sender.join(120)
    pub.close()
    assert at_kill < devices * windows, "the stream ended before the kill: nothing was mid-ingest"
    again = controller(tmp_path, mqtt_broker, store, "kill-1", "--fleet", fleet, name="kill-1b").start()
    wait_until(lambda: count(store) == devices * windows, timeout=90, what="every window after the restart")
    assert again.stop() == 0
    assert_exactly_once(store, expected_keys(fleet, devices, windows))
    assert "session resumed" in again.log()


def test_broker_restart_mid_stream(mqtt_broker, tmp_path):
    store = f"sqlite:///{tmp_path}/fleet.db"
    fleet, devices, windows = "restarted", 20, 40
    flags = ("--fleet", fleet, "--batch-size", "1")  # a commit (an fsync) per message: slow enough to be mid-stream
    first = controller(tmp_path, mqtt_broker, store, "restart-1", *flags).start()
    first.wait_log("subscribed to")
    assert first.stop() == 0  # its session stays: the broker queues what follows for it
    pub = Publisher(mqtt_broker.url, "pub-restart")
    pub.send(traffic(fleet, devices, windows))
    pub.close()
    c = controller(tmp_path, mqtt_broker, store, "restart-1", *flags, name="restart-1b").start()
    wait_until(lambda: count(store) >= 100, timeout=60, what="100 windows stored")
    stored_before = count(store)
    mqtt_broker.restart()  # SIGTERM: Mosquitto saves the queue, including messages in flight unacknowledged
    assert stored_before < devices * windows, "the controller had stored everything before the restart"
    wait_until(lambda: count(store) == devices * windows, timeout=90, what="every window after the restart")
    assert c.stop() == 0
    assert_exactly_once(store, expected_keys(fleet, devices, windows))
    log = c.log()
    assert "lost the connection" in log and log.count("connected to") >= 2 and "session resumed" in log


def test_two_controllers_share_the_load(mqtt_broker, tmp_path):
    store = f"sqlite:///{tmp_path}/fleet.db"
    fleet, devices, windows = "shared", 20, 50
    both = [controller(tmp_path, mqtt_broker, store, f"share-{i}", "--fleet", fleet, "--group", "ctl",
                       "--batch-size", "20").start() for i in (1, 2)]
    for c in both:
        c.wait_log("subscribed to $share/ctl/")
    pub = Publisher(mqtt_broker.url, "pub-share")
    sent = pub.send(traffic(fleet, devices, windows), pace=0.0005)
    pub.close()
    wait_until(lambda: count(store) == devices * windows, timeout=60, what="every window")
    assert [c.stop() for c in both] == [0, 0]
    assert_exactly_once(store, expected_keys(fleet, devices, windows))
    one, two = (c.counters() for c in both)
    assert one.get("duplicate", 0) + two.get("duplicate", 0) == 0, (one, two)  # each message went to one of them
    assert one["stored"] + two["stored"] == sent
    assert min(one["stored"], two["stored"]) > sent / 5, f"the load was not split: {one['stored']} / {two['stored']}"


def test_retiring_a_group_member_strands_nothing(mqtt_broker, tmp_path):
    """docs/fleet.md's procedure: Mosquitto keeps queueing a stopped member's share of a group; started once with
    session expiry 0, it takes that share, and once stopped the broker gives the whole stream to the others."""
    store = f"sqlite:///{tmp_path}/fleet.db"
    fleet = "retire"
    flags = ("--fleet", fleet, "--group", "ret", "--batch-size", "20")
    stay = controller(tmp_path, mqtt_broker, store, "ret-1", *flags).start()
    leave = controller(tmp_path, mqtt_broker, store, "ret-2", *flags).start()
    for c in (stay, leave):
        c.wait_log("subscribed to $share/ret/")
    assert leave.stop() == 0
    pub = Publisher(mqtt_broker.url, "pub-retire")
    pub.send(traffic(fleet, 10, 20))  # 10 births, 200 windows: about half queued for the stopped member
    time.sleep(1.0)
    assert 0 < count(store) < 200, "the stopped member's share was not queued for it"
    retiring = controller(tmp_path, mqtt_broker, store, "ret-2", *flags, name="ret-2-retire",
                          env={"EDGEML_FLEET_SESSION_EXPIRY": "0"}).start()
    wait_until(lambda: count(store) == 200, timeout=60, what="the queued share taken")
    assert retiring.stop() == 0
    pub.send(traffic(fleet, 10, 40)[10 + 200:])  # the windows of seq 20 to 39
    pub.close()
    wait_until(lambda: count(store) == 400, timeout=60, what="every later window, by the member that stays")
    assert stay.stop() == 0
    assert_exactly_once(store, expected_keys(fleet, 10, 40))


@pytest.mark.parametrize("workers", [1, 2])
def test_failing_store_acknowledges_nothing(mqtt_broker, postgres, tmp_path, workers):
    """A read-only database: every batch fails, nothing is acknowledged; killed, fixed, restarted: all stored
    (with ``--workers 2``, the failures come from the store processes)."""
    import psycopg

    name = f"failing_store_{workers}"
    store = postgres.create_database(name)
    fleet, devices, windows = f"failing-{workers}", 10, 20

    def sql(statement):
        with psycopg.connect(host="127.0.0.1", port=postgres.port, user="edgeml", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(statement)

    def read_only(on: bool):
        sql(f'ALTER DATABASE "{name}" SET default_transaction_read_only = {"on" if on else "off"}')
        sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")

    c = controller(tmp_path, mqtt_broker, store, fleet, "--fleet", fleet, "--workers", str(workers)).start()
    c.wait_log("subscribed to")
    read_only(True)
    pub = Publisher(mqtt_broker.url, "pub-failing")
    pub.send(traffic(fleet, devices, windows))
    pub.close()
    c.wait_log("not acknowledged, retrying")
    time.sleep(1.0)  # a few retries: none may acknowledge anything
    c.kill()
    read_only(False)
    assert count(store) == 0
    again = controller(tmp_path, mqtt_broker, store, fleet, "--fleet", fleet, "--workers", str(workers),
                       name=f"{fleet}-b").start()
    wait_until(lambda: count(store) == devices * windows, timeout=60, what="every window once the store works")
    assert again.stop() == 0
    assert_exactly_once(store, expected_keys(fleet, devices, windows))
    assert "read-only transaction" in c.log()
