"""``edgeml fleet run``: its settings (flags > EDGEML_FLEET_* > fleet.toml > defaults, refusals by name), and the
process against a real Mosquitto: a clean stop on SIGTERM, a broker down at start, messages that are not the
protocol, and the controller's own ACL from ``edgeml fleet credentials``.
"""

from __future__ import annotations

import json
import os
import threading

import pytest
from broker import Broker, free_port, require_mosquitto, wait_until
from click.testing import CliRunner
from fleet_traffic import Controller, Publisher, expected_keys, stored_keys, traffic

from edgeml.cli import main
from edgeml.errors import FleetError
from edgeml.fleet.settings import resolve


def write(path, text, mode=0o600):
    path.write_text(text)
    os.chmod(path, mode)
    return path


# -- settings (no broker) --------------------------------------------------------------------------------------


def test_flags_override_environment_override_file_override_defaults(tmp_path):
    config = write(tmp_path / "fleet.toml", '[broker]\nurl = "mqtt://file-host:1883"\ngroup = "file-group"\n'
                   'client_id = "file-id"\n[controller]\nbatch_size = 100\nbatch_wait = 1\nfleets = ["plant-a"]\n'
                   '[store]\nurl = "sqlite:///file.db"\n')
    env = {"EDGEML_FLEET_GROUP": "env-group", "EDGEML_FLEET_BATCH_SIZE": "200", "EDGEML_FLEET_STORE": "sqlite:///e.db",
           "EDGEML_FLEET_FLEET": "plant-b, plant-c"}
    s = resolve({"batch_size": 300, "broker": None}, config, env)
    assert (s.batch_size, s.group, s.broker.url, s.client_id, s.batch_wait, s.store) == \
        (300, "env-group", "mqtt://file-host:1883", "file-id", 1.0, "sqlite:///e.db")
    assert s.fleets == ("plant-b", "plant-c") and s.holder == "file-id" and s.lease_seconds == 30.0
    assert s.sources["batch_size"] == "flag --batch-size"
    assert s.sources["group"] == "environment EDGEML_FLEET_GROUP"
    assert s.sources["batch_wait"] == f"{config} [controller] batch_wait"
    assert s.filters == tuple(f"$share/env-group/edgeml/{f}/+/{k}" for f in ("plant-b", "plant-c")
                              for k in ("birth", "drift", "death", "update"))
    defaults = resolve({}, None, {})
    assert (defaults.broker.url, defaults.store, defaults.group, defaults.judge_every, defaults.receive_maximum) == \
        ("mqtt://127.0.0.1:1883", "sqlite:///fleet.db", None, None, 2000)
    assert defaults.filters == ("edgeml/+/+/birth", "edgeml/+/+/drift", "edgeml/+/+/death", "edgeml/+/+/update")


@pytest.mark.parametrize("text, match", [
    ("[brokers]\nurl = 'mqtt://h:1883'\n", r"fleet.toml: \[brokers\] is not a table of fleet.toml; the tables are "
                                            r"\[broker\], \[store\], \[controller\], \[policy\]"),
    ("[controller]\nbatch = 5\n", r"fleet.toml: \[controller\] batch is not a key of this table; its keys are "
                                  r"fleets, batch_size"),
    ("[controller]\nbatch_size = 'many'\n", r"batch_size = 'many' \(from .*fleet.toml \[controller\] batch_size\): "
                                            r"must be a whole number"),
    ("[controller]\nfleets = ['plant/a']\n", r"'plant/a' cannot contain '/'"),
    ("[broker]\nurl = 'http://h'\n", r"url = 'http://h'.*must look like mqtt://host:1883.*\(from .*fleet.toml "
                                     r"\[broker\] url\)"),
    ("[store]\nurl = 'sqlite:///a.db'\npath = 'x'\n", r"\[store\] may set only url, not \['path'\]"),
    ("[broker]\nca_file = 'nowhere.pem'\n", r"ca_file = 'nowhere.pem' .*no such file"),
    ("[controller]\nworkers = 0\n", r"workers = 0 \(from .*fleet.toml \[controller\] workers\): must be a whole "
                                    r"number from 1 to 64; processes that decode and commit batches"),
])
def test_bad_fleet_toml_is_refused_by_name(tmp_path, text, match):
    with pytest.raises(FleetError, match=match):
        resolve({}, write(tmp_path / "fleet.toml", text), {})


def test_a_bad_environment_value_names_the_variable():
    with pytest.raises(FleetError, match=r"batch_wait = 'soon' \(from environment EDGEML_FLEET_BATCH_WAIT\) is not "
                                         r"a number; the default is 0.2"):
        resolve({}, None, {"EDGEML_FLEET_BATCH_WAIT": "soon"})


def test_a_password_in_a_world_readable_fleet_toml_is_refused(tmp_path):
    text = '[broker]\nurl = "mqtt://127.0.0.1:1883"\nusername = "controller"\npassword = "s3cret-s3cret"\n'
    with pytest.raises(FleetError, match=r"holds the broker's password and can be read by every user on this "
                                         r"machine \(mode 0644\); run chmod o-rwx"):
        resolve({}, write(tmp_path / "open.toml", text, 0o644), {})
    assert resolve({}, write(tmp_path / "closed.toml", text, 0o600), {}).broker.password == "s3cret-s3cret"


def test_the_command_reports_one_line_and_teaches_in_help(tmp_path):
    runner = CliRunner()
    done = runner.invoke(main, ["fleet", "run", "--config", str(write(tmp_path / "f.toml", "[x]\n"))])
    assert done.exit_code == FleetError.exit_code != 0
    assert "error: " in done.output and "[x] is not a table of fleet.toml" in done.output
    assert "Traceback" not in done.output
    shown = " ".join(runner.invoke(main, ["fleet", "run", "--help"]).output.split())
    for text in ("Example fleet.toml", "[broker]", "group = \"controllers\"", "EDGEML_FLEET_BROKER", "--judge-every",
                 "0 turns judging off"):
        assert text in shown, text


# -- the process, with a real broker ---------------------------------------------------------------------------


def controller(folder, url, store, client_id, *extra, name=None):
    return Controller(folder, "--broker", url, "--store", store, "--judge-every", "0", "--client-id", client_id,
                      "--batch-wait", "0.05", *extra, name=name or client_id)


def test_sigterm_commits_and_acknowledges_what_it_received(mqtt_broker, tmp_path):
    """SIGTERM mid-stream: exit 0; restarted, it gets only what was never committed (no duplicate at all)."""
    store, fleet, devices, windows = f"sqlite:///{tmp_path}/fleet.db", "termed", 20, 100
    c = controller(tmp_path, mqtt_broker.url, store, "term-1", "--fleet", fleet, "--receive-maximum", "100",
                   "--batch-size", "50").start()
    c.wait_log("subscribed to")
    pub = Publisher(mqtt_broker.url, "pub-term")
    sender = threading.Thread(target=pub.send, args=(traffic(fleet, devices, windows),), kwargs={"pace": 0.001})
    sender.start()
    wait_until(lambda: len(stored_keys(store)) >= 200, timeout=60, what="200 windows stored")
    assert c.stop() == 0
    at_stop = len(stored_keys(store))
    sender.join(120)
    pub.close()
    assert "stopped:" in c.log() and "disconnected" in c.log()
    assert at_stop < devices * windows, "the stream ended before SIGTERM"
    again = controller(tmp_path, mqtt_broker.url, store, "term-1", "--fleet", fleet, name="term-1b").start()
    wait_until(lambda: len(stored_keys(store)) == devices * windows, timeout=60, what="every window")
    assert again.stop() == 0
    assert sorted(stored_keys(store)) == sorted(expected_keys(fleet, devices, windows))
    assert again.counters().get("duplicate", 0) == 0, "a message committed before SIGTERM was not acknowledged"


def test_a_broker_down_at_start_is_retried(tmp_path):
    require_mosquitto()
    port, store = free_port(), f"sqlite:///{tmp_path}/fleet.db"
    c = controller(tmp_path, f"mqtt://127.0.0.1:{port}", store, "late-1").start()
    c.wait_log("cannot connect to mqtt://127.0.0.1:")
    late = Broker(tmp_path / "mosquitto", port=port, persistence=True)
    with late:
        c.wait_log("subscribed to", timeout=30)
        pub = Publisher(late.url, "pub-late")
        pub.send(traffic("late", 2, 3))
        pub.close()
        wait_until(lambda: len(stored_keys(store)) == 6, timeout=30, what="6 windows")
        assert c.stop() == 0
    assert "Traceback" not in c.log()


def test_messages_that_are_not_the_protocol_are_rejected_and_acknowledged(mqtt_broker, tmp_path):
    import sqlalchemy as sa

    store, fleet = f"sqlite:///{tmp_path}/fleet.db", "garbled"
    c = controller(tmp_path, mqtt_broker.url, store, "garbled-1", "--fleet", fleet).start()
    c.wait_log("subscribed to")
    old = {**json.loads(traffic(fleet, 1, 1)[1][1]), "format_version": 3}
    pub = Publisher(mqtt_broker.url, "pub-garbled")
    pub.send([(f"edgeml/{fleet}/pi-1/drift", b"\xff not json"), (f"edgeml/{fleet}/d0000/drift", json.dumps(old)),
              *traffic(fleet, 1, 2)])
    pub.close()
    wait_until(lambda: len(stored_keys(store)) == 2, timeout=30, what="the 2 good windows")
    assert c.stop() == 0
    assert c.counters() == {"stored": 3, "undecodable": 2}
    again = controller(tmp_path, mqtt_broker.url, store, "garbled-1", "--fleet", fleet, name="garbled-1b").start()
    again.wait_log("subscribed to")
    assert again.stop() == 0
    assert again.counters() == {}, "a rejected message came back: it was not acknowledged"
    engine = sa.create_engine(store)
    with engine.connect() as conn:
        reasons = [r for (r,) in conn.execute(sa.text("SELECT reason FROM rejected ORDER BY id"))]
    engine.dispose()
    assert len(reasons) == 2 and "the payload is not JSON" in reasons[0] and "format_version 3 is not 4" in reasons[1]


def test_the_controller_acl_lets_it_read_its_fleet_and_write_its_status(tmp_path):
    """``[controllers.<name>]`` of devices.toml: a shared subscription under that ACL, and the status topic."""
    import paho.mqtt.client as mqtt

    from edgeml.fleet.credentials import write_credentials

    require_mosquitto()
    devices = write(tmp_path / "devices.toml", '[fleets.plant-a]\ndevices = ["d0000", "d0001"]\n'
                    '[controllers.ctl-1]\nfleets = ["plant-a"]\n')
    write_credentials(devices, tmp_path / "creds")
    secret = (tmp_path / "creds" / "passwords")
    users = {"d0000": (secret / "plant-a" / "d0000").read_text().strip(),
             "ctl-1": (secret / "_controllers" / "ctl-1").read_text().strip()}
    b = Broker(tmp_path / "mosquitto", users=users, acl=(tmp_path / "creds" / "acl").read_text())
    with b:
        store = f"sqlite:///{tmp_path}/fleet.db"
        c = Controller(tmp_path, "--broker", b.url, "--store", store, "--judge-every", "0", "--client-id", "ctl-1",
                       "--username", "ctl-1", "--password-file", str(secret / "_controllers" / "ctl-1"),
                       "--group", "controllers", "--fleet", "plant-a", name="ctl-1").start()
        c.wait_log("subscribed to $share/controllers/edgeml/plant-a/+/birth")
        device = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="d0000", protocol=mqtt.MQTTv5)
        device.username_pw_set("d0000", users["d0000"])
        device.connect("127.0.0.1", b.port)
        device.loop_start()
        for topic, payload in traffic("plant-a", 1, 3):
            device.publish(topic, payload, qos=1).wait_for_publish(10)
        wait_until(lambda: len(stored_keys(store)) == 3, timeout=30, what="3 windows through the ACL")
        device.disconnect()
        device.loop_stop()
        assert c.stop() == 0
        assert "refused the subscriptions" not in c.log()
        status = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ctl-status", protocol=mqtt.MQTTv5)
        acks = []
        status.on_publish = lambda client, userdata, mid, reason_code, properties: acks.append(reason_code)
        status.username_pw_set("ctl-1", users["ctl-1"])
        status.connect("127.0.0.1", b.port)
        status.loop_start()
        status.publish("edgeml/plant-a/_controller/status", b"{}", qos=1, retain=True).wait_for_publish(10)
        status.publish("edgeml/plant-a/d0001/birth", b"{}", qos=1).wait_for_publish(10)
        status.disconnect()
        status.loop_stop()
    assert not acks[0].is_failure and str(acks[1]) == "Not authorized", acks  # its status yes, a device's no


def test_a_device_reads_its_own_and_its_fleets_release_topics_only(tmp_path):
    """The generated ACL on a real Mosquitto: d0000 reads plant-a's and its own release topic, never d0001's; the
    controller writes release topics and reads the devices' update steps.

    Mosquitto 2.0.11 grants a SUBSCRIBE its ACL would deny and checks ``topic read`` on every message it would
    deliver (a broker that refuses the SUBSCRIBE, 0x87, is as good): what proves it is what arrives, retained and
    live, on the wire."""
    import paho.mqtt.client as mqtt

    from edgeml.fleet.credentials import write_credentials
    from edgeml_runtime.protocol.updates import release_topic

    require_mosquitto()
    devices = write(tmp_path / "devices.toml", '[fleets.plant-a]\ndevices = ["d0000", "d0001"]\n'
                    '[controllers.ctl-1]\nfleets = ["plant-a"]\n')
    write_credentials(devices, tmp_path / "creds")
    secret = tmp_path / "creds" / "passwords"
    users = {"d0000": (secret / "plant-a" / "d0000").read_text().strip(),
             "ctl-1": (secret / "_controllers" / "ctl-1").read_text().strip()}

    def client(user: str) -> tuple[mqtt.Client, dict]:
        seen = {"subacks": [], "messages": [], "pubacks": []}
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"acl-{user}", protocol=mqtt.MQTTv5)
        c.on_subscribe = lambda cl, ud, mid, codes, props: seen["subacks"].append([str(rc) for rc in codes])
        c.on_message = lambda cl, ud, msg: seen["messages"].append(msg.topic)
        c.on_publish = lambda cl, ud, mid, rc, props: seen["pubacks"].append(rc.is_failure)
        c.username_pw_set(user, users[user])
        c.connect("127.0.0.1", b.port)
        c.loop_start()
        return c, seen

    own, fleet, other = release_topic("plant-a", "d0000"), release_topic("plant-a"), release_topic("plant-a", "d0001")
    with Broker(tmp_path / "mosquitto", users=users, acl=(tmp_path / "creds" / "acl").read_text()) as b:
        ctl, ctl_seen = client("ctl-1")
        ctl.subscribe("edgeml/plant-a/+/update", qos=1)
        wait_until(lambda: ctl_seen["subacks"], what="the controller's SUBACK")
        for topic in (own, fleet, other):
            ctl.publish(topic, b"{}", qos=1, retain=True).wait_for_publish(10)
        device, seen = client("d0000")
        device.subscribe([(own, 1), (fleet, 1), (other, 1)])
        wait_until(lambda: seen["subacks"], what="the device's SUBACK")
        wait_until(lambda: len(seen["messages"]) >= 2, what="the retained announcements it may read")
        ctl.publish(other, b"{}", qos=1).wait_for_publish(10)  # live, then one it may read: in order on its session
        ctl.publish(own, b"{}", qos=1).wait_for_publish(10)
        wait_until(lambda: len(seen["messages"]) >= 3, what="the live announcement")
        device.publish("edgeml/plant-a/d0000/update", b"{}", qos=1).wait_for_publish(10)
        wait_until(lambda: ctl_seen["messages"], what="the update step at the controller")
        for c in (device, ctl):
            c.disconnect()
            c.loop_stop()
    assert ctl_seen["subacks"] == [["Granted QoS 1"]] and ctl_seen["pubacks"] == [False] * 5  # none refused
    (codes,) = seen["subacks"]
    assert codes[:2] == ["Granted QoS 1"] * 2 and codes[2] in ("Granted QoS 1", "Not authorized")
    assert sorted(seen["messages"]) == sorted([own, fleet, own]), "a device read another device's announcement"
    assert ctl_seen["messages"] == ["edgeml/plant-a/d0000/update"]
