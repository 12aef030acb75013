"""What telemetry accepts and promises, without a broker: settings and inputs it refuses, plain JSON, a timely stop.

The payload JSON Schemas are checked to be valid, and the documented
examples (shipped in the package and in docs/telemetry.md) to match them.
Telemetry against a real Mosquitto is tested in test_telemetry.py.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from jsonschema import Draft202012Validator
from test_telemetry import FLEET, MODEL, REPO, VALIDATORS, check, telemetry, window

from edgeml_runtime.errors import ProtocolError, SettingsError, TelemetryError
from edgeml_runtime.mqtt import MqttSettings
from edgeml_runtime.outbox import Outbox
from edgeml_runtime.protocol import FORMAT_VERSION, DeviceTopics, examples
from edgeml_runtime.telemetry import Telemetry

# -- settings and inputs -------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"url": "http://broker:1883"}, "must look like mqtt://host:1883"),
    ({"url": "mqtt://user:pw@broker"}, "do not belong in the URL"),
    ({"url": "mqtt://broker", "ca_file": "ca.crt"}, "use mqtts://broker:8883"),
    ({"url": "mqtts://broker", "key_file": "k.pem"}, "without its certificate"),
    ({"url": "mqtt://broker", "password": "x"}, "without a user name"),
    ({"url": "mqtt://broker", "protocol": "3"}, "use 5 or 3.1.1"),
    ({"url": "mqtt://broker", "reconnect_min": 5, "reconnect_max": 1}, "reconnect_min <= reconnect_max"),
])
def test_settings_that_cannot_work_are_refused(kwargs, message):
    with pytest.raises(SettingsError, match=message):
        MqttSettings(**kwargs)


def test_password_is_not_in_the_settings_repr():
    assert "hunter2" not in repr(MqttSettings("mqtt://b", username="pi-07", password="hunter2"))


def test_telemetry_refuses_bad_inputs(tmp_path):
    with Outbox(tmp_path / "o.db") as box:
        with pytest.raises(SettingsError, match=r"^ca_file = '.*missing.pem': does not exist; give the path of the "
                                                "PEM certificate of the CA"):
            telemetry("mqtts://b", box, ca_file=str(tmp_path / "missing.pem"))
        with pytest.raises(SettingsError, match=r"^cert_file = '.*': is a folder, not a file"):
            telemetry("mqtts://b", box, cert_file=str(tmp_path))
        bad_pem = tmp_path / "bad.pem"
        bad_pem.write_text("not a certificate")
        with pytest.raises(TelemetryError, match=r"^mqtt_ca_file = '.*bad.pem': cannot be loaded for TLS \(.*\); "
                                                 "give the PEM certificate of the CA"):
            telemetry("mqtts://b", box, ca_file=str(bad_pem))
        with pytest.raises(TelemetryError, match=r"^mqtt_cert_file = '.*bad.pem', mqtt_key_file = '.*bad.pem': "
                                                 "cannot be loaded for TLS"):
            telemetry("mqtts://b", box, cert_file=str(bad_pem), key_file=str(bad_pem))
        with pytest.raises(SettingsError, match=r"device_id = 'a/b': cannot contain '/', '\+' or '#'"):
            telemetry("mqtt://b", box, device="a/b")
        with pytest.raises(ProtocolError, match="needs 'model' with name, version, bundle_sha256, artifact, sha256 "
                                                r"\(got keys None\); build it with describe_model\(\)"):
            Telemetry(MqttSettings("mqtt://b"), DeviceTopics(FLEET, "d"), birth={"window": {}}, outbox=box)
        with pytest.raises(ProtocolError, match=r"needs 'window' with rows, seconds, rule \(got keys \['rows'\]\)"):
            Telemetry(MqttSettings("mqtt://b"), DeviceTopics(FLEET, "d"), birth={"model": MODEL, "window": {"rows": 1}},
                      outbox=box)
        t = telemetry("mqtt://b", box)
        with pytest.raises(ProtocolError, match=r"may not set \['seq'\]"):
            t.send_drift(dict(window(0), seq=3))


def test_numpy_values_and_nan_become_plain_json(tmp_path):
    np = pytest.importorskip("numpy")
    with Outbox(tmp_path / "o.db") as box:
        t = telemetry("mqtt://127.0.0.1:1", box)  # never started: the window only goes to the outbox
        w = window(0)
        w["columns"] = {"x": {"count": np.int64(10), "mean": np.float32(1.5), "std": float("nan"),
                              "hist": np.array([1, 2])}}
        t.send_drift(w)
        (msg,) = box.pending()
    doc = json.loads(msg.payload, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert doc["columns"]["x"] == {"count": 10, "mean": 1.5, "std": None, "hist": [1, 2]}


def test_stop_returns_in_time_when_the_broker_is_down(tmp_path):
    with Outbox(tmp_path / "o.db") as box:
        t = telemetry("mqtt://127.0.0.1:9", box)  # the discard port: nothing listens
        t.start()
        t.send_drift(window(0))
        began = time.monotonic()
        t.stop(timeout=0.5)
        assert time.monotonic() - began < 3 and t.stats["pending"] == 1


# -- the payload schemas and the documented examples ------------------------------

def test_schemas_are_valid_and_the_documented_examples_match_them():
    for validator in VALIDATORS.values():
        Draft202012Validator.check_schema(validator.schema)
    shipped = examples()
    assert sorted(shipped) == ["announcement", "birth", "death", "death-lost", "drift", "prediction", "status",
                              "update", "update-refused"]
    for name, example in shipped.items():
        assert check(name.split("-")[0], example)["format_version"] == FORMAT_VERSION


def test_the_payloads_in_the_docs_match_the_schemas():
    doc = (REPO / "docs" / "telemetry.md").read_text()
    blocks = re.findall(r"<!-- schema: (\w+) -->\n```json\n(.*?)```", doc, re.S)
    assert sorted({kind for kind, _ in blocks}) == ["birth", "death", "drift", "prediction"]
    for kind, text in blocks:
        check(kind, json.loads(text))
