"""``edgeml fleet status`` and ``edgeml fleet decisions`` on a real SQLite store: their wiring, both outputs, errors."""

from __future__ import annotations

import json
import math
import time

import pytest
from click.testing import CliRunner
from test_fleet_judge import BUNDLE, DEVICES, MANIFEST, UNKNOWN, stream

from edgeml.cli import main
from edgeml.fleet.judge import decide
from edgeml.fleet.status import load_policy
from edgeml.fleet.store import Store
from edgeml_runtime.protocol import VerdictRule, decode, describe_window, envelopes
from edgeml_runtime.protocol.topics import DeviceTopics

POLICY_TOML = """[store]
url = "sqlite:///{db}"

[policy]
slice = "1m"
slices = 5
drifted_slices = 3
recover_slices = 1
cooldown = 0
"""


def births(store, devices, bundle=BUNDLE):
    for i, d in enumerate(devices):
        topics = DeviceTopics("plant-a", d)
        model = {"name": "demo", "version": "1", "bundle_sha256": bundle, "artifact": "model.onnx",
                 "sha256": "0" * 64}
        message = envelopes.birth(topics, bd_seq=1, time="2026-12-01T12:00:00.000Z",
                                  runtime={"version": "0.1.0", "mqtt_protocol": "5"},
                                  description={"model": model, "window": describe_window(500, 60.0,
                                                                                          VerdictRule())})
        store.record_birth(*decode(topics.birth, json.dumps(message).encode()))
        if i == 0:
            death = envelopes.death(topics, bd_seq=1, reason="lost")
            store.record_death(*decode(topics.death, json.dumps(death).encode()))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """A store with 5 devices (one offline), 3 of them shifted for 20 minutes up to now, a drift decided, and 3
    windows of a bundle the registry does not hold."""
    folder = tmp_path_factory.mktemp("status")
    config = folder / "fleet.toml"
    config.write_text(POLICY_TOML.format(db=folder / "fleet.db"))
    now = time.time()
    t0 = math.floor(now / 60) * 60 - 20 * 60
    with Store.open(f"sqlite:///{folder}/fleet.db") as store:
        store.add_bundle(BUNDLE, MANIFEST, "test")
        births(store, DEVICES)
        stream(store, range(20), lambda d, k: 10.0 if d in {"pi-0", "pi-2", "pi-4"} else 0.0, t0=t0)
        stream(store, range(3), lambda d, k: 0.0, devices=["pi-9"], bundle=UNKNOWN, t0=t0 + 17 * 60)
        decided = decide(store, load_policy(config), holder="test", lease_seconds=30, now=now)
    assert [d.kind for d in decided] == ["drift", "unknown_bundle"]  # by bundle identity
    return config


def invoke(*args):
    result = CliRunner().invoke(main, ["fleet", *args])
    assert "Traceback" not in result.output, result.output
    return result


def test_status_json_shows_devices_drift_per_column_and_the_last_decision(fleet):
    result = invoke("status", "--json", "--config", str(fleet))
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    plant = report["fleets"]["plant-a"]
    assert [(d["device"], d["online"], d["bundle_name"]) for d in plant["devices"]] == \
        [("pi-0", False, "demo"), ("pi-1", True, "demo"), ("pi-2", True, "demo"), ("pi-3", True, "demo"),
         ("pi-4", True, "demo")]
    assert all(d["last_window"].endswith("Z") and d["runtime_version"] == "0.1.0" for d in plant["devices"])
    demo = plant["bundles"][BUNDLE]
    assert (demo["state"], demo["drifted_devices"], demo["reporting"], demo["drifted_slices"]) == \
        ("drift", ["pi-0", "pi-2", "pi-4"], 5, 5)
    assert set(demo["columns"]) == {"x0", "x1", "x2", "x3", "(output)"}
    assert demo["columns"]["x0"]["latest_status"] == "significant" and demo["columns"]["x0"]["horizon_psi"] > 0.25
    unknown = plant["bundles"][UNKNOWN]
    assert {k: unknown[k] for k in ("name", "known", "state", "anomalies", "windows")} == \
        {"name": None, "known": False, "state": "unknown", "anomalies": [], "windows": 3}
    assert (demo["last_decision"]["id"], demo["last_decision"]["kind"]) == (1, "drift")
    assert unknown["last_decision"]["summary"].startswith("3 windows of bundle cdcdcdcdcdcd… which the registry")
    assert plant["last_decision"]["kind"] == "unknown_bundle" and report["policy"]["slices"] == 5


def test_status_prints_compact_tables(fleet):
    result = invoke("status", "--config", str(fleet))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "fleet plant-a: 5 devices, 4 online" in out
    assert "bundle demo 1 (abababababab): drift; 3 of 5 reporting devices drifted, 5 of 5 slices" in out
    assert "unknown bundle cdcdcdcdcdcd: 3 windows stored, not judged" in out
    assert "last decision: #2 unknown_bundle" in out


def test_decisions_lists_them_oldest_first(fleet):
    listed = json.loads(invoke("decisions", "--json", "--config", str(fleet)).output)
    assert [(d["id"], d["kind"], d["published"]) for d in listed] == [(1, "drift", False),
                                                                      (2, "unknown_bundle", False)]
    assert [d["id"] for d in json.loads(invoke("decisions", "--json", "--last", "1", "--config",
                                               str(fleet)).output)] == [2]
    text = invoke("decisions", "--config", str(fleet)).output
    assert "plant-a abababababab  drift: fleet drift: 5 of the last 5 slices drifted" in text
    assert json.loads(invoke("decisions", "--json", "--fleet", "other", "--config", str(fleet)).output) == []


def test_bad_store_or_policy_is_one_clear_line(tmp_path, fleet):
    bad = invoke("status", "--store", "nonsense://x")
    assert bad.exit_code != 0 and bad.output.startswith("error: ") and len(bad.output.strip().splitlines()) == 1
    config = tmp_path / "fleet.toml"
    config.write_text(fleet.read_text() + "slcie = 60\n")
    bad = invoke("status", "--config", str(config))
    assert bad.exit_code != 0 and f"error: {config}: [policy] has no key 'slcie'" in bad.output
    config.write_text(fleet.read_text().replace('"1m"', '"soon"'))
    bad = invoke("decisions", "--config", str(config), "--store", f"sqlite:///{tmp_path}/x.db")
    assert bad.exit_code == 0  # decisions judges nothing: it needs no policy
    assert "error: " in invoke("status", "--config", str(config)).output
