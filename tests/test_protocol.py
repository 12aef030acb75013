"""The device ↔ fleet protocol: topics, envelopes, bundle identity, schemas as package data, the window verdict.

The verdict tests follow river's drift tests: fixed count vectors (here, fixed
rows counted by real monitors), exact expected statuses.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from edgeml_runtime.drift import DriftMonitor, DriftSettings
from edgeml_runtime.errors import BundleError, ProtocolError, SettingsError
from edgeml_runtime.protocol import (
    FORMAT_VERSION,
    KINDS,
    DeviceTopics,
    Topic,
    VerdictRule,
    add_counts,
    bundle_sha256,
    canonical_json,
    decode,
    envelopes,
    examples,
    judge_window,
    parse_topic,
    schema,
    subscription,
    updates,
)
from edgeml_runtime.schema import InputColumn, InputSchema

RUNTIME = Path(__file__).resolve().parents[1] / "runtime"


# -- topics --------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_every_topic_parses_back_into_who_sent_what(kind):
    device = DeviceTopics("plant-a", "pi-07")
    assert device.topic(kind) == f"edgeml/plant-a/pi-07/{kind}"
    assert parse_topic(device.topic(kind)) == Topic("plant-a", "pi-07", kind)


@pytest.mark.parametrize("topic,message", [
    ("edgeml/plant-a/birth", "has 3 levels; a device topic is edgeml/<fleet>/<device>/<kind>"),
    ("edgeml/plant-a/pi-07/drift/extra", "has 5 levels"),
    ("fleet/plant-a/pi-07/drift", "starts with 'fleet', not 'edgeml'"),
    ("edgeml/plant-a/pi-07/status", "ends in 'status', which is not a message kind"),
    ("edgeml//pi-07/drift", "the fleet level '' must be a non-empty text"),
    ("edgeml/plant-a/+/drift", r"the device level '\+' cannot contain '/', '\+' or '#'"),
])
def test_malformed_topics_are_refused_with_what_is_wrong(topic, message):
    with pytest.raises(ProtocolError, match=message):
        parse_topic(topic)


def test_device_topics_validate_their_levels_once():
    with pytest.raises(SettingsError, match=r"^device_id = 'pi/07': cannot contain '/'"):
        DeviceTopics("plant-a", "pi/07")
    with pytest.raises(SettingsError, match=r"^fleet = '': must be a non-empty text"):
        DeviceTopics("", "pi-07")
    with pytest.raises(ProtocolError, match="'status' is not part of the protocol"):
        DeviceTopics("plant-a", "pi-07").topic("status")
    assert DeviceTopics("plant-a", "pi-07").all == "edgeml/plant-a/pi-07/#"
    assert subscription("plant-a") == "edgeml/plant-a/+/+" and subscription() == "edgeml/+/+/+"


# -- envelopes -----------------------------------------------------------------

def test_every_message_states_the_protocol_version_and_matches_its_schema():
    from jsonschema import Draft202012Validator, FormatChecker

    device = DeviceTopics("plant-a", "pi-07")
    drift_example = examples()["drift"]
    model = drift_example["model"]
    window = {k: v for k, v in drift_example.items() if k not in envelopes.ENVELOPE_KEYS}
    built = {
        "birth": envelopes.birth(device, bd_seq=3, time="2026-01-01T00:00:00.000Z",
                                 runtime={"version": "0.1.0", "mqtt_protocol": "5"},
                                 description={"model": model,
                                              "window": envelopes.describe_window(1000, 300.0, VerdictRule())}),
        "drift": dict(envelopes.drift(device, session=3, seq=0, model=model, outbox_dropped=0, window=window),
                      historical=False),
        "death": envelopes.death(device, bd_seq=3, reason="shutdown", time="2026-01-01T00:00:00.000Z"),
        "prediction": envelopes.prediction(device, session=3, time="2026-01-01T00:00:00.000Z",
                                           body={"row": 1, "prediction": 0}),
        "update": updates.update_status(device, release=7, bundle=model["bundle_sha256"], step="active",
                                        time="2026-01-01T00:00:00.000Z", rollout=2,
                                        health={"windows": 2, "rows": 240, "bad": 0, "latency_ms": 0.05}),
        "announcement": updates.announcement("plant-a", device="pi-07", rollout=2,
                                             time="2026-01-01T00:00:00.000Z", archive="/releases/plant-a/7/b.tar.gz",
                                             **{k: examples()["announcement"][k] for k in ("release", "root")}),
    }
    for kind, message in built.items():
        assert message["format_version"] == FORMAT_VERSION == 7
        Draft202012Validator(schema(kind), format_checker=FormatChecker()).validate(message)
    with pytest.raises(ProtocolError, match=r"may not set \['bdSeq'\]"):
        envelopes.birth(device, bd_seq=1, time="", runtime={}, description={"bdSeq": 9})
    with pytest.raises(ProtocolError, match="death reason 'gone' is not one of lost, shutdown"):
        envelopes.death(device, bd_seq=1, reason="gone")


@pytest.mark.parametrize("payload,message", [
    (b'{"format_version": 3, "bdSeq": 1}', "format_version 3 is not 4 or 5 or 6 or 7, the versions this runtime "
                                           "reads"),
    (b'{"format_version": 8, "bdSeq": 1}', "format_version 8 is not 4 or 5 or 6 or 7"),
    (b'{"format_version": 4.0, "bdSeq": 1}', "format_version 4.0 is not 4 or 5 or 6 or 7"),
    (b'{"bdSeq": 1}', "format_version None is not 4 or 5 or 6 or 7"),
    (b"[1, 2]", "the payload is a JSON list, not an object"),
    (b"{", "the payload is not JSON"),
])
def test_decode_refuses_what_this_version_cannot_read(payload, message):
    with pytest.raises(ProtocolError, match=message):
        decode("edgeml/plant-a/pi-07/death", payload)


# -- bundle identity -----------------------------------------------------------

def test_bundle_identity_ignores_layout_and_follows_content(demo_bundle):
    text = (demo_bundle / "manifest.json").read_text()
    manifest = json.loads(text)
    identity = bundle_sha256(manifest)
    assert len(identity) == 64 and int(identity, 16) >= 0
    reordered = json.loads(json.dumps(dict(reversed(list(manifest.items()))), indent=7))
    assert bundle_sha256(reordered) == identity  # key order and whitespace do not matter
    assert canonical_json(manifest) == canonical_json(reordered)
    canonical = canonical_json(manifest)
    assert b"\n" not in canonical and canonical.startswith(b'{"artifacts":[{"') and json.loads(canonical) == manifest
    tampered = json.loads(text)
    tampered["artifacts"][0]["sha256"] = "0" * 64
    assert bundle_sha256(tampered) != identity  # the manifest hashes every artifact, so the identity covers them
    assert bundle_sha256({"name": "é"}) == bundle_sha256(json.loads('{"name": "\\u00e9"}'))
    with pytest.raises(BundleError, match="finite numbers"):
        bundle_sha256({"x": float("nan")})


def test_the_typed_manifest_has_the_identity_of_the_file_it_was_read_from(demo_bundle):
    from edgeml_runtime.bundle import read_manifest

    raw = json.loads((demo_bundle / "manifest.json").read_text())
    assert read_manifest(demo_bundle).identity == bundle_sha256(raw)


def test_a_loaded_model_reports_its_bundle_identity_beside_its_artifact(demo_bundle):
    from edgeml_runtime import Model

    model = Model.load(demo_bundle)
    described = envelopes.describe_model(model)
    assert described["bundle_sha256"] == bundle_sha256(json.loads((demo_bundle / "manifest.json").read_text()))
    assert described["artifact"] == model.artifact.path and described["sha256"] == model.artifact.sha256


# -- schemas as package data -----------------------------------------------------

def test_the_schemas_ship_in_the_package_and_pyproject_declares_them():
    folder = RUNTIME / "edgeml_runtime" / "schemas"
    declared = tomllib.loads((RUNTIME / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert declared["edgeml_runtime"] == ["schemas/*.json", "schemas/examples/*.json"]
    shipped = {p.relative_to(folder.parent).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert shipped and all(p.endswith(".json") and p.count("/") <= 2 for p in shipped)
    assert not (RUNTIME.parent / "schemas").exists()  # moved, not copied
    for kind in ("birth", "death", "drift", "prediction", "status"):
        assert schema(kind)["properties"]["format_version"] == {"const": FORMAT_VERSION}
    assert schema("death")["additionalProperties"] is False
    with pytest.raises(ProtocolError, match="no JSON Schema for 'statuses'"):
        schema("statuses")


# -- the window verdict over counts ---------------------------------------------

REFERENCE = {
    "format": 1, "bins": "right-closed", "rows": {"train": 1000, "valid": 200},
    "columns": {
        "temp": {"kind": "numeric", "edges": [10.0, 20.0], "shares": [0.25, 0.5, 0.25], "missing_rate": 0.0,
                 "range": [0.0, 30.0]},
        "rpm": {"kind": "numeric", "edges": [1000.0], "shares": [0.5, 0.5], "missing_rate": 0.0,
                "range": [0.0, 2000.0]},
        "type": {"kind": "categorical", "categories": ["H", "L"], "shares": [0.5, 0.5, 0.0], "missing_rate": 0.0},
    },
    "output": {"kind": "classes", "classes": [0, 1], "shares": [0.5, 0.5], "split": "valid"},
}
SCHEMA = InputSchema((InputColumn("temp", "numeric", ("temp",)), InputColumn("rpm", "numeric", ("rpm",)),
                      InputColumn("type", "categorical", ("type",), categories=("H", "L"))))
SETTINGS = DriftSettings(window_rows=1000, rule=VerdictRule(min_rows=30))
RULE = SETTINGS.rule
T = [5.0] * 5 + [15.0] * 10 + [25.0] * 5  # temp exactly as in the reference: 5 / 10 / 5


def rows(temp, rpm, types, outputs):
    return ({"temp": np.array(temp, dtype=np.float32).reshape(-1, 1),
             "rpm": np.array(rpm, dtype=np.float32).reshape(-1, 1),
             "type": np.array(types, dtype=object).reshape(-1, 1)}, np.array(outputs))


def device_window(*batches, settings=SETTINGS) -> dict:
    monitor = DriftMonitor(REFERENCE, SCHEMA, settings, clock=lambda: 0.0)
    for feeds, outputs in batches:
        monitor.update(feeds, outputs)
    return monitor.flush()


# Three devices of 20 rows each, and the statuses and verdict of all 60 rows. Four tests per window (three
# columns and the output) at the level 0.01 / 4 = 0.0025. With 20 rows against 1,000 reference rows, a bin is
# tested on its own from about 255 pooled values: a category the reference never saw ("X") is pooled into the
# smallest other cell, so one or two of them are no evidence (PSI 0.32 for one X in 20 rows: the old rule
# called that significant).
FLEETS = {
    # The first two devices alone drift (rpm all high on one, all low on the other: p = 9.5e-06); the third's
    # one X is no evidence. Together the fleet looks like the reference.
    "offsetting": ([rows(T, [1500.0] * 20, ["H"] * 10 + ["L"] * 10, [0, 1] * 10),
                    rows(T, [500.0] * 20, ["H"] * 10 + ["L"] * 10, [0, 1] * 10),
                    rows(T, [500.0] * 10 + [1500.0] * 10, ["H"] * 10 + ["L"] * 9 + ["X"], [0] * 12 + [1] * 8)],
                   ["drift", "drift", "ok"],
                   {"temp": "ok", "rpm": "ok", "type": "ok"}, "ok", [], 0.0),
    # rpm runs high everywhere (15 of 20 on the second device: p = 0.027 alone, PSI 0.27), one device runs hot,
    # two see a new category now and then (two X in 60 rows: no evidence; the old rule said moderate).
    "drifting": ([rows(T, [1500.0] * 20, ["H"] * 10 + ["L"] * 10, [0] * 20),
                  rows(T, [1500.0] * 15 + [500.0] * 5, ["H"] * 10 + ["L"] * 9 + ["X"], [0, 1] * 10),
                  rows([25.0] * 20, [1500.0] * 20, ["H"] * 9 + ["L"] * 10 + ["X"], [1] * 20)],
                 ["drift", "ok", "drift"],
                 {"temp": "significant", "rpm": "significant", "type": "ok"}, "drift", ["temp", "rpm"],
                 0.666667),
}


@pytest.mark.parametrize("name", FLEETS)
def test_summed_device_windows_reach_the_verdict_of_one_device_on_all_rows(name):
    batches, alone, statuses, verdict, drifted, share = FLEETS[name]
    windows = [device_window(b) for b in batches]
    # 20 rows each: below min_rows, no device can judge its own window...
    assert [w["verdict"]["status"] for w in windows] == [None, None, None]
    # ...though each, judged on its own with min_rows=1, would say:
    assert [judge_window(REFERENCE, w, VerdictRule(min_rows=1))["verdict"]["status"] for w in windows] == alone
    fleet = judge_window(REFERENCE, add_counts(windows), RULE)
    assert {n: c["status"] for n, c in fleet["columns"].items()} == statuses
    assert fleet["verdict"] == {"status": verdict, "drifted_columns": drifted, "share": share, "tests": 4,
                                "level": 0.0025}
    single = device_window(*batches)  # one device that saw all 60 rows
    assert single["rows"] == add_counts(windows)["rows"] == 60
    assert fleet["verdict"] == single["verdict"]
    for n, c in fleet["columns"].items():
        assert c == {k: single["columns"][n][k] for k in ("psi", "js", "p_value", "status")}
    assert fleet["output"] == {k: single["output"][k] for k in ("psi", "js", "p_value", "status")}


def test_a_device_window_is_exactly_what_the_public_verdict_says():
    window = device_window(rows(T, [1500.0] * 20, ["H"] * 10 + ["L"] * 10, [0, 1] * 10),
                           settings=DriftSettings(rule=VerdictRule(min_rows=1)))
    judged = judge_window(REFERENCE, window, VerdictRule(min_rows=1))
    assert window["verdict"] == judged["verdict"] == {"status": "drift", "drifted_columns": ["rpm"],
                                                      "share": 0.333333, "tests": 4, "level": 0.0025}
    # rpm: 20 of 20 rows in the upper bin against 500 of 1,000: X² = 10 + 9.615 on 1 df
    assert window["columns"]["rpm"]["counts"] == [0, 20] and window["columns"]["rpm"]["status"] == "significant"
    assert window["columns"]["rpm"]["p_value"] == judged["columns"]["rpm"]["p_value"] == 9.47036e-06
    assert window["columns"]["temp"]["psi"] == 0.0 and window["columns"]["temp"]["p_value"] == 1.0
    assert window["columns"]["temp"]["status"] == "ok"


@pytest.mark.parametrize("psi,p_value,status", [
    (0.0999, 1e-9, "ok"), (0.1, 1e-9, "moderate"), (0.2499, 1e-9, "moderate"), (0.25, 1e-9, "significant"),
    (3.0, 0.001, "significant"), (3.0, 0.0010001, "ok"), (0.1, 0.5, "ok"), (None, None, None)])
def test_a_status_needs_the_test_to_reject_and_the_psi_to_reach_its_threshold_both_inclusive(psi, p_value, status):
    assert VerdictRule().status(psi, p_value, 0.001) == status


def test_counts_that_do_not_fit_the_reference_are_refused():
    window = device_window(rows(T, [1500.0] * 20, ["H"] * 20, [0] * 20))
    other = {**window, "columns": {k: v for k, v in window["columns"].items() if k != "type"}}
    with pytest.raises(ProtocolError, match=r"fit the reference: the counts lack its column\(s\) 'type'; judge"):
        judge_window(REFERENCE, other, RULE)
    bad = json.loads(json.dumps(window))
    bad["columns"]["rpm"]["counts"] = [1, 2, 3]
    with pytest.raises(ProtocolError, match="rpm: 3 counts"):
        judge_window(REFERENCE, bad, RULE)
    with pytest.raises(ProtocolError, match="cannot be added"):
        add_counts([window, bad])
    with pytest.raises(ProtocolError, match="one has none that the first lacks and lacks 'type'"):
        add_counts([window, other])
    with pytest.raises(ProtocolError, match="judge_window takes a VerdictRule, not DriftSettings"):
        judge_window(REFERENCE, window, SETTINGS)
    with pytest.raises(ProtocolError, match="no windows to add"):
        add_counts([])
    # the test needs the reference's rows: its counts are its shares × its rows
    rowless = {k: v for k, v in REFERENCE.items() if k != "rows"}
    with pytest.raises(ProtocolError, match=r"the reference states no rows for its inputs \(rows.train\) or for its "
                                            r"output's split \(rows.valid\): got rows None; .* judge against the "
                                            "manifest's reference"):
        judge_window(rowless, window, RULE)
    with pytest.raises(ProtocolError, match=r"got rows \{'train': 1000, 'valid': 0\}"):
        judge_window({**REFERENCE, "rows": {"train": 1000, "valid": 0}}, window, RULE)


def test_a_column_mismatch_names_five_columns_then_a_count():
    window = device_window(rows(T, [1500.0] * 20, ["H"] * 20, [0] * 20))
    extra = {**window, "columns": {**window["columns"], **{f"c{i}": window["columns"]["rpm"] for i in range(8)}}}
    with pytest.raises(ProtocolError, match=r"it does not monitor the counted column\(s\) 'c0', 'c1', 'c2', 'c3', "
                                            r"'c4' and 3 more; judge"):
        judge_window(REFERENCE, extra, RULE)


# -- the verdict rule --------------------------------------------------------------

def test_the_rule_round_trips_through_its_dict_and_is_checked_once():
    rule = VerdictRule(psi_moderate=0.05, psi_significant=0.2, drifted_share=0.5, min_rows=10, alpha=0.05)
    assert rule.to_dict() == {"psi_moderate": 0.05, "psi_significant": 0.2, "drifted_share": 0.5, "min_rows": 10,
                              "alpha": 0.05}
    assert VerdictRule().alpha == 0.01 and rule.level(11) == 0.00454545 and VerdictRule().level(4) == 0.0025
    assert VerdictRule.from_dict(json.loads(json.dumps(rule.to_dict()))) == rule
    Draft = pytest.importorskip("jsonschema").Draft202012Validator
    Draft(schema("birth")["$defs"]["rule"]).validate(rule.to_dict())
    # one bound check, whoever builds the rule: the device's settings, or a controller reading a birth
    with pytest.raises(SettingsError, match=r"^psi_moderate = 0.3: must satisfy 0 < psi_moderate <= psi_significant"):
        DriftSettings(rule=VerdictRule(psi_moderate=0.3))
    with pytest.raises(SettingsError, match=r"^drifted_share = 1.5: must be a share of the columns"):
        VerdictRule(drifted_share=1.5)
    with pytest.raises(SettingsError, match=r"^psi_significant = '0.25': must be a finite number"):
        VerdictRule(psi_significant="0.25")
    with pytest.raises(SettingsError, match=r"^min_rows = 2.5: must be a whole number of rows"):
        VerdictRule(min_rows=2.5)
    for alpha in (0, 1, 1.5, -0.01):
        with pytest.raises(SettingsError, match=rf"^alpha = {alpha}: must be a probability above 0 and below 1; "
                                                r"e.g. 0.01 \(the default"):
            VerdictRule(alpha=alpha)
    with pytest.raises(SettingsError, match=r"^alpha = nan: must be a finite number; e.g. 0.01"):
        VerdictRule(alpha=float("nan"))
    with pytest.raises(ProtocolError, match=r"the verdict rule .* is not valid: alpha = 0: must be a probability"):
        VerdictRule.from_dict({**rule.to_dict(), "alpha": 0})
    with pytest.raises(ProtocolError, match=r"the verdict rule .* is not valid: min_rows = -1: must be a whole"):
        VerdictRule.from_dict({**rule.to_dict(), "min_rows": -1})
    with pytest.raises(ProtocolError, match=r"exactly the keys psi_moderate, psi_significant, drifted_share, "
                                            r"min_rows, alpha; got \['min_rows', 'psi_moderate', 'rows'\]"):
        VerdictRule.from_dict({"psi_moderate": 0.1, "min_rows": 1, "rows": 3})
    with pytest.raises(ProtocolError, match="got list"):
        VerdictRule.from_dict([0.1, 0.25, 0.3, 100, 0.01])


def test_the_documented_example_birth_states_a_rule_a_controller_can_judge_with():
    birth = examples()["birth"]
    rule = VerdictRule.from_dict(birth["window"]["rule"])
    assert rule == VerdictRule() and set(birth["window"]) == set(envelopes.WINDOW_KEYS)
