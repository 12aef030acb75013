"""MQTT security against a real Mosquitto run with the documented configuration (docs/mosquitto/):
a per-device ACL, passwords, TLS with a CA the test makes, and client certificates as device identity."""

from __future__ import annotations

import re

import pytest
from broker import Broker, Subscriber, free_port, make_pki, wait_until
from test_telemetry import REPO, online, received, telemetry, window

from edgeml_runtime.outbox import Outbox

USERS = {"pi-07": "secret-07", "pi-08": "secret-08", "dashboard": "dash"}
ACL = (REPO / "docs" / "mosquitto" / "acl").read_text()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    pytest.importorskip("cryptography", reason="the TLS tests make their CA with the cryptography package")
    return make_pki(tmp_path_factory.mktemp("pki"), clients=("pi-07", "dashboard"))


@pytest.fixture
def fleet_broker(tmp_path, pki):
    """Mosquitto with the documented configuration (docs/mosquitto/): TLS, passwords and the per-device ACL."""
    folder = tmp_path / "mosquitto"
    tls_port, plain_port = free_port(), free_port()
    conf = (REPO / "docs" / "mosquitto" / "mosquitto.conf").read_text()
    for old, new in {"/etc/mosquitto/edgeml.passwd": folder / "passwd", "/etc/mosquitto/edgeml.acl": folder / "acl",
                     "/etc/mosquitto/certs/ca.crt": pki.ca, "/etc/mosquitto/certs/server.crt": pki.server_cert,
                     "/etc/mosquitto/certs/server.key": pki.server_key, "/var/lib/mosquitto/": f"{folder}/",
                     "listener 8883": f"listener {tls_port} 127.0.0.1",
                     "listener 1883 127.0.0.1": f"listener {plain_port} 127.0.0.1"}.items():
        assert old in conf, f"docs/mosquitto/mosquitto.conf no longer has {old!r}: update this test"
        conf = conf.replace(old, str(new))
    with Broker(folder, users=USERS, acl=ACL, pki=pki, port=tls_port, config=conf) as broker:
        yield broker
    print(broker.log())


def fleet_telemetry(broker, box, device, user, password, protocol="5", start=False):
    make = online if start else telemetry
    return make(broker.url, box, device=device, username=user, password=password, protocol=protocol,
                ca_file=str(broker.pki.ca))


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_acl_refuses_a_device_publishing_as_another(fleet_broker, tmp_path, protocol):
    with Subscriber(fleet_broker.url, username="dashboard", password="dash", ca_file=fleet_broker.pki.ca) as sub, \
            Outbox(tmp_path / "impostor.db") as impostor_box, Outbox(tmp_path / "honest.db") as honest_box:
        impostor = fleet_telemetry(fleet_broker, impostor_box, "pi-08", "pi-07", "secret-07", protocol, start=True)
        impostor.send_drift(window(0))
        if protocol == "5":  # the PUBACK says why; the window stays in the outbox
            wait_until(lambda: impostor.stats["refused"] == 1, what="the refusal")
            assert "Not authorized" in impostor.stats["last_error"] and impostor.stats["pending"] == 1
        else:  # MQTT 3.1.1 has no way to say no: the broker acknowledges and discards
            wait_until(lambda: impostor.stats["acked"] == 1, what="the silent discard")

        honest = fleet_telemetry(fleet_broker, honest_box, "pi-07", "pi-07", "secret-07", protocol)
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
