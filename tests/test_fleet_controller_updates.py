"""``edgeml fleet run`` and over-the-air updates, against the module's real Mosquitto and a real SQLite store.

The controller (:func:`edgeml.fleet.controller.run`, in a thread) advances a
rollout started in the store: it announces the release, retained, on the
canary's release topic (the signatures verify with the root public key of
the keys folder), serves the archive the announcement names over HTTP (its
SHA-256 is the signed one), stores the update steps a device publishes
(once each, however often they are delivered) and moves the rollout to its
next wave; an update step that is not the protocol is rejected with the
reason, naming its topic.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import urllib.request

import jsonschema
import paho.mqtt.client as mqtt
import pytest
import sqlalchemy as sa
from broker import free_port, wait_until
from click.testing import CliRunner
from release_helpers import make_releases, second_bundle

from edgeml.cli import main
from edgeml.errors import FleetError
from edgeml.fleet import controller, releases, rollout
from edgeml.fleet.settings import resolve
from edgeml.fleet.store import Store
from edgeml_runtime.protocol import schema
from edgeml_runtime.protocol.status import iso
from edgeml_runtime.protocol.topics import DeviceTopics
from edgeml_runtime.protocol.updates import release_topic, update_status
from edgeml_runtime.update import signing
from edgeml_runtime.update.trust import TrustState, verify_release

DEVICES = ["d1", "d2", "d3"]
HEALTH = {"windows": 2, "rows": 240, "bad": 0, "latency_ms": 0.05}


class Lines(logging.Handler):
    """The controller's log lines, as text."""

    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)


class Running:
    """``controller.run`` in a thread: :meth:`stop` sets its stop event and returns its exit code."""

    def __init__(self, settings):
        self.log = logging.getLogger(f"test.updates.{settings.client_id}")
        self.log.setLevel(logging.INFO)
        self.lines = Lines()
        self.log.addHandler(self.lines)
        self.halt, self.code = threading.Event(), []
        self.thread = threading.Thread(target=lambda: self.code.append(controller.run(settings, stop=self.halt,
                                                                                      log=self.log)))
        self.thread.start()

    def stop(self) -> int:
        self.halt.set()
        self.thread.join(30)
        self.log.removeHandler(self.lines)
        assert not self.thread.is_alive(), "the controller did not stop"
        return self.code[0]


class Heard:
    """A paho client that keeps every message of ``topic`` (topic, parsed payload, retained flag)."""

    def __init__(self, url: str, topic: str, name: str):
        self.messages: list[tuple[str, dict, bool]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
        self.client.on_message = lambda c, u, m: self.messages.append(
            (m.topic, json.loads(m.payload) if m.payload else None, m.retain))  # empty: a retained message cleared
        host, port = url.removeprefix("mqtt://").split(":")
        self.client.connect(host, int(port))
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def on(self, topic: str) -> list[dict]:
        return [payload for t, payload, _ in self.messages if t == topic]

    def publish(self, topic: str, payload: dict) -> None:
        self.client.publish(topic, json.dumps(payload), qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def fleet(request) -> str:
    """A fleet name of this test's own: the module's broker keeps every test's retained messages."""
    return f"upd-{request.node.name[5:20].replace('_', '-')}-{time.monotonic_ns() % 10**6}"


@pytest.fixture
def started(tmp_path, demo_bundle, fleet):
    """A store with releases 1 and 2 of the fleet and a running rollout of 2: d1 first, then d2 and d3."""
    url = f"sqlite:///{tmp_path}/fleet.db"
    with Store.open(url) as store:
        released = make_releases(store, tmp_path, fleet, [demo_bundle, second_bundle(demo_bundle, tmp_path)],
                                 now=time.time())
        r = rollout.start(store, fleet=fleet, release=2, canary="30%", waves="100%", abort_failure_rate="10%",
                          min_executed=1, wave_timeout="30m", devices=DEVICES, keys=str(released.keys),
                          releases_dir=str(released.folder))
    assert r.waves == [["d1"], ["d2", "d3"]]
    return url, released, r


def settings_for(mqtt_broker, url: str, fleet: str, released, **more):
    flags = {"broker": mqtt_broker.url, "store": url, "judge_every": 0.0, "fleets": (fleet,), "batch_wait": 0.02,
             "client_id": f"ctl-{fleet}", "rollout_every": 0.1, "releases": str(released.folder), **more}
    return resolve(flags, environ={})


def step(fleet: str, device: str, name: str, r, identity: str, **extra) -> dict:
    return update_status(DeviceTopics(fleet, device), release=r.release, bundle=identity, step=name,
                         time=iso(time.time()), rollout=r.id, **extra)


def rows(url: str, query: str) -> list[tuple]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = [tuple(row) for row in conn.execute(sa.text(query))]
    engine.dispose()
    return found


def test_the_controller_announces_serves_stores_the_steps_and_moves_the_wave(mqtt_broker, started, fleet, tmp_path):
    url, released, r = started
    port = free_port()
    with Store.open(url) as store:  # another controller holds the rollout lease: nothing is announced
        assert store.acquire_lease("rollout", "other-controller", 60)
        record = releases.get(store, fleet, 2)
    heard = Heard(mqtt_broker.url, release_topic(fleet) + "/+", f"heard-{fleet}")
    running = Running(settings_for(mqtt_broker, url, fleet, released, http=f"127.0.0.1:{port}"))
    try:
        wait_until(lambda: running.lines.has("serving the release folders") and running.lines.has("subscribed to"),
                   what="the controller up")
        time.sleep(0.5)  # five ticks of --rollout-every 0.1 s without the lease
        assert heard.messages == [] and not running.lines.has("announced")
        with Store.open(url) as store:
            assert store.release_lease("rollout", "other-controller")
        wait_until(lambda: heard.on(release_topic(fleet, "d1")), what="the canary's announcement")
        (announced,) = heard.on(release_topic(fleet, "d1"))
        jsonschema.validate(announced, schema("announcement"))
        assert (announced["fleet"], announced["device"], announced["rollout"], announced["archive"]) == \
            (fleet, "d1", r.id, f"/releases/{fleet}/2/bundle.tar.gz")
        checked = verify_release(announced["release"], announced["root"],
                                 signing.read_public(released.keys / "root.pub"), TrustState.load(tmp_path / "dev"),
                                 fleet=fleet, now=time.time())
        assert (checked.version, checked.bundle.identity) == (2, record.identity)
        archive = urllib.request.urlopen(f"http://127.0.0.1:{port}{announced['archive']}", timeout=10).read()
        assert hashlib.sha256(archive).hexdigest() == checked.bundle.sha256
        late = Heard(mqtt_broker.url, release_topic(fleet, "d1"), f"late-{fleet}")  # retained: a device subscribing
        wait_until(lambda: late.messages, what="the retained announcement")  # after it was published gets it
        late.close()
        assert late.messages[0][1:] == (announced, True)
        assert heard.on(release_topic(fleet, "d2")) == []  # the next wave waits for the canary

        device = Heard(mqtt_broker.url, f"edgeml/{fleet}/d1/none", f"device-{fleet}-d1")
        steps = [step(fleet, "d1", name, r, record.identity, **({"health": HEALTH} if name in ("active", "committed")
                                                                else {}))
                 for name in ("offered", "downloading", "verifying", "testing", "active", "committed")]
        for payload in (*steps, steps[-1]):  # the last one delivered twice
            device.publish(DeviceTopics(fleet, "d1").update, payload)
        device.close()
        wait_until(lambda: heard.on(release_topic(fleet, "d2")) and heard.on(release_topic(fleet, "d3")),
                   what="the second wave's announcements")
    finally:
        heard.close()
        assert running.stop() == 0
    assert rows(url, f"SELECT step FROM update_events WHERE fleet = '{fleet}' ORDER BY id") == \
        [(s["step"],) for s in steps], "a step delivered twice was counted twice"
    assert rows(url, f"SELECT device, step FROM rollout_devices WHERE rollout = {r.id} ORDER BY device") == \
        [("d1", "committed"), ("d2", None), ("d3", None)]
    assert rows(url, f"SELECT state, wave FROM rollouts WHERE id = {r.id}") == [("running", 1)]
    assert running.lines.has(f"rollout {r.id} moves on: wave 1 of 2 passed")
    assert running.lines.has(f"rollout {r.id} wave 2: announced release 2 to d3")
    assert running.lines.has("outcomes: duplicate=1 stored=6")


def test_a_rollout_aborted_by_hand_withdraws_its_announcements(mqtt_broker, started, fleet):
    url, released, r = started
    heard = Heard(mqtt_broker.url, release_topic(fleet) + "/+", f"heard-{fleet}")
    running = Running(settings_for(mqtt_broker, url, fleet, released))
    try:
        wait_until(lambda: heard.on(release_topic(fleet, "d1")), what="the canary's announcement")
        with Store.open(url) as store:
            rollout.abort(store, r.id, "the operator stopped it")
        wait_until(lambda: running.lines.has(f"rollout {r.id} aborted: its announcement withdrawn from 1 device"),
                   what="the withdrawal")
        assert heard.on(release_topic(fleet, "d1"))[-1] is None  # an empty retained message: cleared
        late = Heard(mqtt_broker.url, release_topic(fleet, "d1"), f"late-{fleet}")
        time.sleep(0.5)
        late.close()
        assert late.messages == []  # a device back after the abort hears nothing to install
    finally:
        heard.close()
        assert running.stop() == 0


def test_an_update_step_that_is_not_the_protocol_is_rejected_with_the_reason(mqtt_broker, started, fleet):
    url, released, r = started
    running = Running(settings_for(mqtt_broker, url, fleet, released, rollout_every=0.0))
    device = Heard(mqtt_broker.url, f"edgeml/{fleet}/d1/none", f"device-{fleet}")
    try:
        wait_until(lambda: running.lines.has("subscribed to"), what="the controller up")
        good = step(fleet, "d1", "offered", r, "ab" * 32)
        for bad in ({**good, "step": "done"}, {**good, "release": 0}, {**good, "bundle": "xyz"},
                    {**good, "health": {"windows": -1, "rows": 0, "bad": 0, "latency_ms": None}}):
            device.publish(DeviceTopics(fleet, "d1").update, bad)
        topic = f"edgeml/{fleet}/d1/update"
        wait_until(lambda: len(rows(url, f"SELECT reason FROM rejected WHERE topic = '{topic}'")) == 4,
                   what="the 4 rejections")
    finally:
        device.close()
        assert running.stop() == 0
    reasons = [reason for (reason,) in rows(url, f"SELECT reason FROM rejected WHERE topic = '{topic}' ORDER BY id")]
    assert reasons == [
        f"{topic}: step 'done' is not one of offered, downloading, verifying, testing, active, committed, failed, "
        "rolled_back",
        f"{topic}: release 0 is not a release version (a whole number from 1)",
        f"{topic}: bundle 'xyz' is not a bundle identity (64 lowercase hex digits) or null",
        f"{topic}: health.windows is -1, not a whole number from 0"]
    assert rows(url, f"SELECT count(*) FROM update_events WHERE fleet = '{fleet}'") == [(0,)]


def test_a_release_server_off_loopback_needs_a_token(tmp_path):
    """Refused before anything starts, as one line naming the setting and the fix (no traceback)."""
    done = CliRunner().invoke(main, ["fleet", "run", "--http", "0.0.0.0:0", "--judge-every", "0", "--store",
                                     f"sqlite:///{tmp_path}/fleet.db", "--broker", "mqtt://127.0.0.1:1"])
    assert done.exit_code != 0 and "Traceback" not in done.output
    assert "http = 0.0.0.0:0 (from flag --http): the release server would listen on 0.0.0.0 without a token" in \
        done.output and "--http-token-file FILE" in done.output
    token = tmp_path / "token"
    token.write_text("short\n")
    token.chmod(0o600)
    done = CliRunner().invoke(main, ["fleet", "run", "--http", "0.0.0.0:0", "--http-token-file", str(token)])
    assert done.exit_code != 0 and "must hold a token of at least 16 printable characters" in done.output
    done = CliRunner().invoke(main, ["fleet", "run", "--http", "8080"])
    assert done.exit_code != 0 and "http = '8080' (from flag --http): not HOST:PORT" in done.output


def test_the_release_server_settings_from_flags_environment_and_file(tmp_path):
    token = tmp_path / "token"
    token.write_text("a-token-of-32-characters-0123456\n")
    token.chmod(0o600)
    config = tmp_path / "fleet.toml"
    config.write_text(f'[controller]\nreleases = "/srv/releases"\nhttp = "[::1]:8443"\nhttp_token_file = "{token}"\n'
                      'rollout_every = "2s"\n')
    s = resolve({}, config, environ={"EDGEML_FLEET_ROLLOUT_EVERY": "0"})
    assert (s.releases, s.http, s.http_token, s.rollout_every) == ("/srv/releases", ("::1", 8443),
                                                                   "a-token-of-32-characters-0123456", 0.0)
    assert s.sources["rollout_every"] == "environment EDGEML_FLEET_ROLLOUT_EVERY"
    assert resolve({"releases": "mine"}, config, environ={}).releases == "mine"
    assert resolve({}, None, environ={}).http is None
    token.chmod(0o644)
    with pytest.raises(FleetError, match=r"http_token_file = .* \(from .*fleet.toml \[controller\] http_token_file\) "
                                         r"can be read by every user"):
        resolve({}, config, environ={})
