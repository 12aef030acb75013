"""The agent wires a whole device process from one settings value, in this process.

The broker is unreachable here on purpose: every closed window must then be
waiting in the durable outbox, in its envelope, with the bundle's identity.
The end-to-end runs with a real Mosquitto are in test_run.py.
"""

from __future__ import annotations

import csv
import json
import threading

import pytest
from broker import wait_until
from jsonschema import Draft202012Validator, FormatChecker

from edgeml_runtime.agent import Agent, birth_description, default_outbox_path
from edgeml_runtime.outbox import Outbox
from edgeml_runtime.protocol import FORMAT_VERSION, DeviceTopics, VerdictRule, bundle_sha256, parse_topic, schema
from edgeml_runtime.settings import resolve_settings

NOWHERE = "mqtt://127.0.0.1:9"  # the discard port: nothing listens


def settings(tmp_path, **flags):
    return resolve_settings({"device_id": "pi-07", "fleet": "plant-a", "broker": NOWHERE,
                             "outbox": str(tmp_path / "outbox.db"), **flags}, environ={})


def waiting(outbox) -> list[dict]:
    with Outbox(outbox) as box:
        return [dict(json.loads(m.payload), _topic=m.topic) for m in box.pending(limit=10_000)]


def test_a_device_process_from_one_settings_value(demo_bundle, demo_rows, tmp_path):
    s = settings(tmp_path, input=str(demo_rows), format="csv", output=str(tmp_path / "scored.csv"),
                 window_rows=20, min_rows=10)
    stats = Agent(demo_bundle, s).run()
    with open(demo_rows, newline="") as f:
        n = len(list(csv.DictReader(f)))
    assert (stats.rows, stats.scored, stats.bad_rows, stats.windows) == (n, n, 0, 3)

    windows = waiting(tmp_path / "outbox.db")
    identity = bundle_sha256(json.loads((demo_bundle / "manifest.json").read_text()))
    validator = Draft202012Validator(schema("drift"), format_checker=FormatChecker())
    for seq, w in enumerate(windows):
        topic = parse_topic(w.pop("_topic"))
        assert (topic.fleet, topic.device, topic.kind) == ("plant-a", "pi-07", "drift")
        validator.validate(dict(w, historical=False))  # "historical" is added as a window is sent
        assert w["format_version"] == FORMAT_VERSION and w["seq"] == seq
        assert w["model"]["bundle_sha256"] == identity and w["model"]["artifact"] == "model.onnx"
    assert [w["rows"] for w in windows] == [20, 20, n - 40]

    with open(tmp_path / "scored.csv", newline="") as f:
        scored = list(csv.DictReader(f))
    assert len(scored) == n and all(r["prediction"] in ("0", "1") for r in scored)


def test_the_stop_event_ends_a_followed_input_and_sends_the_open_window(demo_bundle, demo_rows, tmp_path):
    stream = tmp_path / "stream.csv"
    stream.write_text(demo_rows.read_text())
    agent = Agent(demo_bundle, settings(tmp_path, input=str(stream), format="csv", follow=True, window_rows=1000))
    done: list = []
    runner = threading.Thread(target=lambda: done.append(agent.run()), daemon=True)
    runner.start()
    wait_until(lambda: agent.stats.scored == 50, what="the file's rows scored")
    agent.stop.set()
    runner.join(30)
    assert not runner.is_alive() and done[0].windows == 1
    (window,) = waiting(tmp_path / "outbox.db")  # closed at shutdown: fewer rows than window_rows
    assert window["rows"] == done[0].scored == 50


def test_the_birth_states_how_windows_are_judged(tmp_path):
    s = settings(tmp_path, window_rows=500, psi_moderate=0.05, drifted_share=0.5)
    window = birth_description({"name": "demo"}, s.drift)["window"]
    assert window == {"rows": 500, "seconds": 300.0, "rule": {"psi_moderate": 0.05, "psi_significant": 0.25,
                                                              "drifted_share": 0.5, "min_rows": 100,
                                                              "alpha": 0.01}}
    assert VerdictRule.from_dict(window["rule"]) == s.drift.rule
    Draft202012Validator(schema("birth")["$defs"]["rule"]).validate(window["rule"])


def test_settings_problems_surface_before_anything_starts(tmp_path):
    from edgeml_runtime.errors import SettingsError

    with pytest.raises(SettingsError, match=r"^mqtt_ca_file = '.*missing.pem' \(from flag --mqtt-ca-file\): does "
                                            "not exist; give the path of the PEM certificate of the CA"):
        settings(tmp_path, broker="mqtts://127.0.0.1:8883", mqtt_ca_file=str(tmp_path / "missing.pem"))


def test_an_unloadable_tls_file_is_named_and_the_outbox_closed_again(demo_bundle, tmp_path):
    from edgeml_runtime.errors import TelemetryError

    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    s = settings(tmp_path, broker="mqtts://127.0.0.1:8883", mqtt_ca_file=str(bad))
    with pytest.raises(TelemetryError, match=r"^mqtt_ca_file = '.*bad.pem': cannot be loaded for TLS"):
        Agent(demo_bundle, s).run()
    with Outbox(tmp_path / "outbox.db") as box:  # the outbox was closed again: it can be reopened
        assert len(box) == 0


def test_devices_whose_ids_join_alike_keep_their_own_outbox(tmp_path, monkeypatch):
    """``plant`` + ``a-pi-07`` and ``plant-a`` + ``pi-07`` shared ``plant-a-pi-07.outbox.db``; an outbox of that
    old name, once there, is still the one used, so the windows waiting in it are sent after the upgrade."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    one, other = DeviceTopics("plant", "a-pi-07"), DeviceTopics("plant-a", "pi-07")
    assert default_outbox_path(one) != default_outbox_path(other)
    assert default_outbox_path(other) == tmp_path / "edgeml" / "plant-a" / "pi-07.outbox.db"
    legacy = tmp_path / "edgeml" / "plant-a-pi-07.outbox.db"
    with Outbox(legacy) as box:
        box.put("edgeml/plant-a/pi-07/drift", b"{}")
    assert default_outbox_path(other) == legacy
