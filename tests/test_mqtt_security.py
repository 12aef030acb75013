"""MQTT security against a real Mosquitto run with the documented configuration (docs/mosquitto/):
the ACL and password file `edgeml fleet credentials` makes from docs/mosquitto/devices.toml, TLS with a CA
the test makes, and client certificates as device identity."""

from __future__ import annotations

import logging
import re
import shutil

import pytest
from broker import Broker, Subscriber, free_port, make_pki, wait_until
from test_telemetry import BIRTH, FAST, REPO, online, received, telemetry, window

from edgeml.fleet.credentials import write_credentials
from edgeml_runtime.mqtt import MqttSettings
from edgeml_runtime.outbox import Outbox
from edgeml_runtime.protocol import DeviceTopics
from edgeml_runtime.telemetry import Telemetry

DOCS = REPO / "docs" / "mosquitto"
ACL = (DOCS / "acl").read_text()
#: The ACL shipped before: %u binds the device level only, not the fleet.
PATTERN_ACL = "pattern write edgeml/+/%u/#\nuser dashboard\ntopic read edgeml/#\n"


@pytest.fixture(scope="module")
def credentials(tmp_path_factory):
    """What `edgeml fleet credentials` writes for the documented device list."""
    out = tmp_path_factory.mktemp("credentials")
    write_credentials(DOCS / "devices.toml", out)
    return out


def password(credentials, *path: str) -> str:
    return credentials.joinpath("passwords", *path).read_text().rstrip("\n")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    pytest.importorskip("cryptography", reason="the TLS tests make their CA with the cryptography package")
    return make_pki(tmp_path_factory.mktemp("pki"), clients=("pi-07", "dashboard"))


@pytest.fixture
def fleet_broker(tmp_path, pki, credentials):
    """Mosquitto with the documented configuration (docs/mosquitto/): TLS, the generated passwords and ACL."""
    folder = tmp_path / "mosquitto"
    folder.mkdir()
    shutil.copy(credentials / "passwd", folder / "passwd")
    tls_port, plain_port = free_port(), free_port()
    conf = (REPO / "docs" / "mosquitto" / "mosquitto.conf").read_text()
    for old, new in {"/etc/mosquitto/edgeml.passwd": folder / "passwd", "/etc/mosquitto/edgeml.acl": folder / "acl",
                     "/etc/mosquitto/certs/ca.crt": pki.ca, "/etc/mosquitto/certs/server.crt": pki.server_cert,
                     "/etc/mosquitto/certs/server.key": pki.server_key, "/var/lib/mosquitto/": f"{folder}/",
                     "listener 8883": f"listener {tls_port} 127.0.0.1",
                     "listener 1883 127.0.0.1": f"listener {plain_port} 127.0.0.1"}.items():
        assert old in conf, f"docs/mosquitto/mosquitto.conf no longer has {old!r}: update this test"
        conf = conf.replace(old, str(new))
    with Broker(folder, acl=(credentials / "acl").read_text(), pki=pki, port=tls_port, config=conf) as broker:
        yield broker
    print(broker.log())


def fleet_telemetry(broker, box, device, user, password, protocol="5", start=False):
    make = online if start else telemetry
    return make(broker.url, box, device=device, username=user, password=password, protocol=protocol,
                ca_file=str(broker.pki.ca))


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_acl_refuses_a_device_publishing_as_another(fleet_broker, credentials, tmp_path, protocol):
    secret = password(credentials, "plant-a", "pi-07")
    with Subscriber(fleet_broker.url, username="dashboard", password=password(credentials, "_consumers", "dashboard"),
                    ca_file=fleet_broker.pki.ca) as sub, \
            Outbox(tmp_path / "impostor.db") as impostor_box, Outbox(tmp_path / "honest.db") as honest_box:
        impostor = fleet_telemetry(fleet_broker, impostor_box, "pi-08", "pi-07", secret, protocol, start=True)
        impostor.send_drift(window(0))
        if protocol == "5":  # the PUBACK says why; the window stays in the outbox
            wait_until(lambda: impostor.stats["refused"] == 1, what="the refusal")
            assert "Not authorized" in impostor.stats["last_error"] and impostor.stats["pending"] == 1
        else:  # MQTT 3.1.1 has no way to say no: the broker acknowledges and discards
            wait_until(lambda: impostor.stats["acked"] == 1, what="the silent discard")

        honest = fleet_telemetry(fleet_broker, honest_box, "pi-07", "pi-07", secret, protocol)
        honest.start()
        honest.send_drift(window(1))
        # The broker handles each client's messages in order, so once the honest window is through, the
        # impostor's (published earlier) would have been too.
        sub.wait_for(lambda s: s.on("drift"), what="the honest window")
        impostor.stop(timeout=1)
        honest.stop()
        assert {m.topic.split("/")[2] for m in sub.messages} == {"pi-07"}
        assert [w["device"] for w in received(sub, "drift")] == ["pi-07"]


def test_a_wrong_password_cannot_connect(fleet_broker, tmp_path, caplog):
    def refusals():  # read from the log: a retry may find the connection reset before the CONNACK is read
        return [r.getMessage() for r in caplog.records if "refused the connection" in r.getMessage()]

    with Outbox(tmp_path / "o.db") as box:
        for protocol in ("5", "3.1.1"):
            caplog.clear()
            t = fleet_telemetry(fleet_broker, box, "pi-07", "pi-07", "wrong", protocol)
            t.start()
            t.send_drift(window(0))
            (message, *_) = wait_until(refusals, what="the refusal")
            assert re.search("Not authorized|Bad user name or password", message)
            assert not t.stats["connected"] and t.stats["pending"] >= 1 and t.stats["last_error"]
            t.stop(timeout=0.5)
    assert "not authorised" in fleet_broker.log()


def test_tls_with_a_test_ca(tmp_path, pki):
    stranger = make_pki(tmp_path / "other-ca", clients=())
    with Broker(tmp_path / "mosquitto", pki=pki) as broker, \
            Subscriber(broker.url, ca_file=pki.ca) as sub, Outbox(tmp_path / "a.db") as a, \
            Outbox(tmp_path / "b.db") as b, Outbox(tmp_path / "c.db") as c:
        by_name = telemetry(broker.url, a, device="pi-07", ca_file=str(pki.ca))
        by_ip = telemetry(f"mqtts://127.0.0.1:{broker.port}", b, device="pi-08", ca_file=str(pki.ca))
        untrusting = telemetry(broker.url, c, device="pi-09", ca_file=str(stranger.ca))
        for t, i in ((by_name, 0), (by_ip, 1), (untrusting, 2)):
            t.start()
            t.send_drift(window(i))
        sub.wait_for(lambda s: len(s.on("drift")) == 2, what="two windows over TLS")
        wait_until(lambda: untrusting.stats["last_error"], what="the failed handshake")
        assert "certificate verify failed" in untrusting.stats["last_error"]
        for t in (by_name, by_ip, untrusting):
            t.stop(timeout=1)
    assert {w["device"] for w in received(sub, "drift")} == {"pi-07", "pi-08"}


def test_tls_client_certificates_are_the_device_identity(tmp_path, pki):
    cert, key = pki.clients["pi-07"]
    with Broker(tmp_path / "mosquitto", pki=pki, require_certificate=True, acl=ACL) as broker, \
            Subscriber(broker.url, ca_file=pki.ca, cert_file=pki.clients["dashboard"][0],
                       key_file=pki.clients["dashboard"][1]) as sub, \
            Outbox(tmp_path / "a.db") as a, Outbox(tmp_path / "b.db") as b, Outbox(tmp_path / "c.db") as c:
        device = telemetry(broker.url, a, device="pi-07", ca_file=str(pki.ca), cert_file=str(cert),
                           key_file=str(key))
        no_cert = telemetry(broker.url, b, device="pi-08", ca_file=str(pki.ca))
        impostor = telemetry(broker.url, c, device="pi-08", ca_file=str(pki.ca), cert_file=str(cert),
                             key_file=str(key))
        for t in (device, no_cert, impostor):
            t.start()
            t.send_drift(window(0))
        sub.wait_for(lambda s: s.on("drift"), what="the window from the certified device")
        wait_until(lambda: impostor.stats["refused"] and no_cert.stats["last_error"], what="both refusals")
        assert not no_cert.stats["connected"]
        for t in (device, no_cert, impostor):
            t.stop(timeout=1)
    assert {m.topic.split("/")[2] for m in sub.messages} == {"pi-07"}


# -- records in -----------------------------------------------------------------


# -- fleets: a device's user name is bound to its fleet too --------------------------------------------------

def _publish_into_other_fleet(url: str, sub: Subscriber, tmp_path, mqtt: MqttSettings, refused: bool):
    """pi-07 of plant-a publishes a retained birth and a window as edgeml/plant-b/pi-07/, then its own window."""
    log = logging.getLogger("test.cross-fleet")
    with Outbox(tmp_path / "foreign.db") as foreign_box, Outbox(tmp_path / "own.db") as own_box:
        foreign = Telemetry(mqtt, DeviceTopics("plant-b", "pi-07"), birth=BIRTH, outbox=foreign_box, log=log)
        foreign.start()
        foreign.send_drift(window(0))
        wait_until(lambda: foreign.stats["refused" if refused else "acked"] == 1, what="the broker's answer")
        own = Telemetry(mqtt, DeviceTopics("plant-a", "pi-07"), birth=BIRTH, outbox=own_box, log=log)
        own.start()
        own.send_drift(window(1))
        # one broker thread: whatever it let through from the earlier connection reached the subscriber first
        sub.wait_for(lambda s: any(m.topic == "edgeml/plant-a/pi-07/drift" for m in s.messages),
                     what="pi-07's own window")
        foreign.stop(timeout=1)
        own.stop()
    return {m.topic for m in sub.messages}


def test_the_old_pattern_acl_let_a_device_publish_into_another_fleet(tmp_path):
    """The defect: with `pattern write edgeml/+/%u/#`, pi-07 of plant-a writes plant-b's drift and birth."""
    users = {"pi-07": "secret-07-long", "dashboard": "dashboard-long"}
    with Broker(tmp_path / "mosquitto", users=users, acl=PATTERN_ACL) as broker, \
            Subscriber(broker.url, username="dashboard", password=users["dashboard"]) as sub:
        mqtt = MqttSettings(broker.url, username="pi-07", password=users["pi-07"], **FAST)
        topics = _publish_into_other_fleet(broker.url, sub, tmp_path, mqtt, refused=False)
    assert {"edgeml/plant-b/pi-07/drift", "edgeml/plant-b/pi-07/birth"} <= topics


def test_a_device_cannot_publish_into_another_fleet(fleet_broker, credentials, tmp_path):
    """The generated ACL: pi-07 of plant-a (password from its generated file) reaches its own topics only."""
    from edgeml_runtime.settings import resolve_settings

    with Subscriber(fleet_broker.url, username="dashboard", password=password(credentials, "_consumers", "dashboard"),
                    ca_file=fleet_broker.pki.ca) as sub:
        settings = resolve_settings({"device_id": "pi-07", "fleet": "plant-a", "broker": fleet_broker.url,
                                     "mqtt_username": "pi-07", "mqtt_ca_file": str(fleet_broker.pki.ca),
                                     "mqtt_password_file": str(credentials / "passwords" / "plant-a" / "pi-07")},
                                    environ={})
        mqtt = MqttSettings(**{**settings.mqtt.__dict__, **FAST})
        topics = _publish_into_other_fleet(fleet_broker.url, sub, tmp_path, mqtt, refused=True)
    assert topics and all(t.startswith("edgeml/plant-a/pi-07/") for t in topics), topics
    assert "edgeml/plant-a/pi-07/drift" in topics


def test_the_other_fleets_pi_07_logs_in_with_a_systemd_credential(fleet_broker, credentials, tmp_path):
    """plant-b's pi-07 (user plant-b.pi-07) publishes below plant-b; its password comes from $CREDENTIALS_DIRECTORY."""
    from edgeml_runtime.settings import resolve_settings

    creds = tmp_path / "creds"
    creds.mkdir(mode=0o700)
    shutil.copy(credentials / "passwords" / "plant-b" / "pi-07", creds / "mqtt_password")
    env = {"CREDENTIALS_DIRECTORY": str(creds), "EDGEML_MQTT_USERNAME": "plant-b.pi-07"}
    settings = resolve_settings({"device_id": "pi-07", "fleet": "plant-b", "broker": fleet_broker.url,
                                 "mqtt_ca_file": str(fleet_broker.pki.ca)}, environ=env)
    assert settings.mqtt.password == password(credentials, "plant-b", "pi-07")
    monitor = password(credentials, "_consumers", "plant-b-monitor")
    pki_ca = fleet_broker.pki.ca
    with Subscriber(fleet_broker.url, username="plant-b-monitor", password=monitor, ca_file=pki_ca) as sub, \
            Outbox(tmp_path / "b.db") as box:
        t = Telemetry(MqttSettings(**{**settings.mqtt.__dict__, **FAST}), settings.device, birth=BIRTH, outbox=box,
                      log=logging.getLogger("test.plant-b"))
        t.start()
        t.send_drift(window(0))
        sub.wait_for(lambda s: s.on("drift"), what="plant-b's window")
        t.stop()
    assert {m.topic for m in sub.messages} >= {"edgeml/plant-b/pi-07/drift", "edgeml/plant-b/pi-07/birth"}
