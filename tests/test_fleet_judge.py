"""Fleet judging on seeded streams, river-style: exact expected decisions, from windows counted by a real
DriftMonitor and stored in a real SQLite store (and one scenario on the real PostgreSQL)."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import numpy as np
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from edgeml.fleet.assessment import WindowCache
from edgeml.fleet.fastjudge import Layout, device_verdicts
from edgeml.fleet.judge import LEASE, decide, fleet_state, outgoing
from edgeml.fleet.policy import Policy
from edgeml.fleet.store import Store
from edgeml_runtime.drift import DriftMonitor, DriftSettings
from edgeml_runtime.errors import ProtocolError
from edgeml_runtime.protocol import (
    VerdictRule,
    add_counts,
    decode,
    envelopes,
    examples,
    judge_window,
    schema,
    status_topic,
)
from edgeml_runtime.protocol.topics import DeviceTopics
from edgeml_runtime.schema import InputColumn, InputSchema

COLUMNS = [f"x{i}" for i in range(4)]
REFERENCE = {
    "format": 1, "bins": "right-closed", "rows": {"train": 8000, "valid": 2000},
    "columns": {c: {"kind": "numeric", "edges": [10.0, 20.0], "shares": [0.25, 0.5, 0.25], "missing_rate": 0.0,
                    "range": [0.0, 30.0]} for c in COLUMNS},
    "output": {"kind": "classes", "classes": [0, 1], "shares": [0.5, 0.5], "split": "valid"},
}
SCHEMA = InputSchema(tuple(InputColumn(c, "numeric", (c,)) for c in COLUMNS))
BUNDLE, UNKNOWN = "ab" * 32, "cd" * 32
MANIFEST = {"name": "demo", "version": "1", "reference": REFERENCE}
SLICE = 60.0
T0 = 1_796_000_000.0  # a multiple of 60: slice k is [T0 + 60k, T0 + 60(k + 1))
DEVICES = [f"pi-{i}" for i in range(5)]
STATUS = Draft202012Validator(schema("status"), format_checker=FormatChecker())


def rows_of(rng, n: int, shift: float) -> np.ndarray:
    """``n`` values drawn from the reference's bins (a quarter, a half, a quarter), shifted by ``shift``."""
    bins = rng.choice(3, size=n, p=[0.25, 0.5, 0.25])
    return (bins * 10.0 + rng.uniform(0.5, 9.5, size=n) + shift).astype(np.float32)


def message(device: str, seq: int, ended: float, values: dict, bundle: str = BUNDLE, fleet: str = "plant-a"):
    """A drift message counted by a real DriftMonitor, as it crosses the wire (JSON, the protocol's decode)."""
    now = [ended - 30.0]
    monitor = DriftMonitor(REFERENCE, SCHEMA, DriftSettings(window_rows=100_000, rule=VerdictRule(min_rows=1)),
                           clock=lambda: now[0])
    n = len(next(iter(values.values())))
    monitor.update({c: v.reshape(-1, 1) for c, v in values.items()}, np.array([0, 1] * (n // 2)))
    now[0] = ended
    topics = DeviceTopics(fleet, device)
    model = {"name": "demo", "version": "1", "bundle_sha256": bundle, "artifact": "model.onnx", "sha256": "0" * 64}
    sent = envelopes.drift(topics, session=1, seq=seq, model=model, outbox_dropped=0, window=monitor.flush())
    return decode(topics.drift, json.dumps({**sent, "historical": False}).encode())


def stream(store, slices: range, shifts, *, rows: int = 200, seed: int = 0, devices=DEVICES, t0: float = T0,
           **kw) -> None:
    """One window per device per slice, ended mid-slice; ``shifts(device, slice)`` says by how much it is off."""
    rng = np.random.default_rng(seed)
    batch = []
    for k in slices:
        for d in devices:
            shift = shifts(d, k)
            values = {c: rows_of(rng, rows, shift) for c in COLUMNS}
            batch.append(message(d, k, t0 + SLICE * k + 30.0, values, **kw))
    store.record_messages(batch)


def run(store, policy: Policy, slices: range, holder: str = "c1", cache=None) -> list[tuple[int, str, str | None]]:
    """Decide at the end of each slice: (slice, kind, device) of every decision stored."""
    out = []
    for k in slices:
        for d in decide(store, policy, holder=holder, lease_seconds=30, now=T0 + SLICE * (k + 1) + 1.0,
                        cache=cache):
            out.append((k, d.kind, d.evidence["device"]))
    return out


POLICY = Policy(slice=SLICE, slices=5, drifted_slices=3, recover_slices=1, min_devices=3, device_share=0.3,
                cooldown=0)


@pytest.fixture
def store(tmp_path):
    with Store.open(f"sqlite:///{tmp_path}/fleet.db") as s:
        s.add_bundle(BUNDLE, MANIFEST, "test")
        yield s


def test_no_drift_over_many_slices_decides_nothing(store):
    stream(store, range(30), lambda d, k: 0.0)
    assert run(store, POLICY, range(30)) == []
    assert store.decisions() == []


def test_a_shift_in_three_of_five_devices_drifts_after_k_slices_and_recovers_with_hysteresis(store):
    shifted = {"pi-0", "pi-2", "pi-4"}
    stream(store, range(30), lambda d, k: 10.0 if d in shifted and 10 <= k < 20 else 0.0)
    # 3 of the last 5 slices drifted at the end of slice 12; at most 1 of 5 (slice 19) at the end of slice 23. At the
    # end of slice 22 only 2 of 5 drifted (18, 19): no longer a drift, but not yet recovered (hysteresis).
    assert run(store, POLICY, range(30)) == [(12, "drift", None), (23, "recovered", None)]
    drift = store.decisions(kind="drift")[0].evidence
    assert drift["drifted_devices"] == sorted(shifted) and drift["reporting"] == 5 and drift["anomalies"] == {}
    assert [s["status"] for s in drift["slices"]] == ["ok", "ok", "drift", "drift", "drift"]
    assert drift["devices"]["pi-1"] == {"windows": 5, "rows": 1000, "sessions": {"1": [8, 12]}, "status": "ok"}
    assert drift["policy"] == POLICY.to_dict() and drift["columns"]["x0"]["latest"]["status"] == "significant"


def test_a_window_cache_kept_between_judgements_changes_nothing_but_what_is_read(tmp_path):
    shifted = {"pi-0", "pi-2", "pi-4"}
    cache = WindowCache()
    with Store.open(f"sqlite:///{tmp_path}/fleet.db") as store:
        store.add_bundle(BUNDLE, MANIFEST, "test")
        for k in range(30):  # windows arrive slice by slice, as they would live
            stream(store, range(k, k + 1), lambda d, k: 10.0 if d in shifted and 10 <= k < 20 else 0.0, seed=k)
            assert run(store, POLICY, range(k, k + 1), cache=cache) == \
                {12: [(12, "drift", None)], 23: [(23, "recovered", None)]}.get(k, [])
        assert list(cache) == [("plant-a", BUNDLE)] and len(cache["plant-a", BUNDLE]) == 25  # the horizon's only


def test_cooldown_holds_a_second_drift_back(store):
    shifted = {"pi-0", "pi-2", "pi-4"}
    stream(store, range(40), lambda d, k: 10.0 if d in shifted and (10 <= k < 20 or 25 <= k < 40) else 0.0)
    assert run(store, POLICY, range(40)) == [(12, "drift", None), (23, "recovered", None), (27, "drift", None)]
    cool = Policy(**{**POLICY.to_dict(), "cooldown": 20 * SLICE})
    store.engine.dispose()
    with Store.open(store.url.replace("fleet.db", "fleet2.db")) as other:
        other.add_bundle(BUNDLE, MANIFEST, "test")
        stream(other, range(40), lambda d, k: 10.0 if d in shifted and (10 <= k < 20 or 25 <= k < 40) else 0.0)
        # The second drift waits until 20 slices after the first (decided at the end of slice 12, + 1 s).
        assert run(other, cool, range(40)) == [(12, "drift", None), (23, "recovered", None), (32, "drift", None)]


def test_one_broken_device_is_an_anomaly_and_no_fleet_drift(store):
    # pi-3 is busier than the others (1,000 rows a window, not 200): counted in, it would tip the fleet's slices.
    stream(store, range(25), lambda d, k: 0.0, devices=[d for d in DEVICES if d != "pi-3"])
    stream(store, range(25), lambda d, k: 10.0 if 5 <= k < 15 else 0.0, devices=["pi-3"], rows=1000, seed=1)
    # Its own horizon drifts once 3 of its 5 slices are off, and is back once 2 or fewer are.
    assert run(store, POLICY, range(25)) == [(7, "anomaly", "pi-3"), (17, "anomaly_cleared", "pi-3")]
    evidence = store.decisions(kind="anomaly")[0].evidence
    assert evidence["excluded"] == ["pi-3"] and evidence["drifted_devices"] == ["pi-3"]
    assert set(evidence["anomalies"]["pi-3"]["columns"]) == set(COLUMNS)
    assert all(s["devices"] == 4 for s in evidence["slices"])  # the broken device's windows are left out
    # Counted with it, the fleet's latest slice would have drifted.
    with_it = [w.counts for w in store.windows("plant-a", BUNDLE) if T0 + 420 <= w.ended < T0 + 480]  # slice 7
    assert judge_window(REFERENCE, add_counts(with_it), POLICY.rule())["verdict"]["status"] == "drift"
    assert evidence["slices"][-1]["status"] == "ok"


def test_no_anomaly_before_min_devices_report(store):
    # Two devices report first, one of them shifted: while fewer than min_devices report, a drifted device cannot
    # be told from a changed world, so it is no anomaly; when two more come (one shifted), the world has changed.
    stream(store, range(0, 10), lambda d, k: 10.0 if d == "pi-0" else 0.0, devices=["pi-0", "pi-1"])
    stream(store, range(5, 10), lambda d, k: 10.0 if d == "pi-2" else 0.0, devices=["pi-2", "pi-3"], seed=1)
    assert run(store, POLICY, range(10)) == [(5, "drift", None)]


def test_too_few_devices_or_rows_decide_nothing(store):
    stream(store, range(15), lambda d, k: 10.0, devices=["pi-0", "pi-1"])
    assert run(store, POLICY, range(15)) == []  # two devices, min_devices 3; alike, so no anomaly either
    stream(store, range(15), lambda d, k: 10.0, devices=["pi-2", "pi-3", "pi-4"], rows=20)
    few_rows = Policy(**{**POLICY.to_dict(), "min_rows": 2000})  # 5 devices × 200 rows a slice: too few
    assert run(store, few_rows, range(15)) == []
    assert store.decisions() == []


def test_a_second_holder_decides_nothing_while_the_first_holds_the_lease(store):
    shifted = {"pi-0", "pi-2", "pi-4"}
    stream(store, range(13), lambda d, k: 10.0 if d in shifted and k >= 10 else 0.0)
    now = T0 + SLICE * 13 + 1.0
    assert store.acquire_lease(LEASE, "c2", 30, now=now - 5)
    assert decide(store, POLICY, holder="c1", lease_seconds=30, now=now) == []  # c2 holds it for 25 s more
    taken = decide(store, POLICY, holder="c1", lease_seconds=30, now=now + 30)
    assert [d.kind for d in taken] == ["drift"] and store.lease_holder(LEASE, now=now + 31) == "c1"
    assert decide(store, POLICY, holder="c2", lease_seconds=30, now=now + 31) == []
    assert len(store.decisions()) == 1


def test_unknown_bundles_are_reported_once_and_status_payloads_validate(store):
    stream(store, range(3), lambda d, k: 0.0, bundle=UNKNOWN)
    stream(store, range(13), lambda d, k: 10.0 if d in {"pi-0", "pi-2", "pi-4"} and k >= 10 else 0.0)
    assert run(store, POLICY, range(13)) == [(0, "unknown_bundle", None), (12, "drift", None)]
    sent = outgoing(store)
    assert [(i, topic) for i, topic, _ in sent] == [(1, status_topic("plant-a")), (2, status_topic("plant-a"))]
    payloads = [json.loads(p) for _, _, p in sent]
    for p in payloads:
        STATUS.validate(p)
    assert payloads[-1]["bundles"] == {
        UNKNOWN: {"name": None, "version": None, "state": "unknown", "performance": "ok", "anomalies": []},
        BUNDLE: {"name": "demo", "version": "1", "state": "drift", "performance": "ok", "anomalies": []}}
    assert payloads[-1]["decision"]["kind"] == "drift" and payloads[-1]["decision"]["id"] == 2
    store.mark_published([1, 2])
    assert outgoing(store) == []
    assert fleet_state(store.decisions("plant-a"))[BUNDLE]["state"] == "drift"


def test_the_status_example_validates_and_no_device_takes_the_controller_level():
    STATUS.validate(examples()["status"])
    doc = (Path(__file__).parent.parent / "docs" / "fleet.md").read_text()
    blocks = re.findall(r"<!-- schema: status -->\n```json\n(.*?)```", doc, re.S)
    assert len(blocks) == 1
    STATUS.validate(json.loads(blocks[0]))
    with pytest.raises(Exception, match="reserved for the fleet's own topics"):
        DeviceTopics("plant-a", "_controller")
    with pytest.raises(ProtocolError, match="fleet 'a/b' cannot contain"):
        status_topic("a/b")


# -- exact: the fleet's verdict from summed counts, the fast device verdicts ----------------------------

def test_the_fleet_verdict_is_judge_window_over_summed_counts_and_one_device_on_all_the_rows(store):
    rng = np.random.default_rng(3)
    values = [{c: rows_of(rng, 150, 1.5 * (i % 2)) for c in COLUMNS} for i in range(4)]
    store.record_messages([message(f"pi-{i}", 0, T0 + 30.0, v) for i, v in enumerate(values)])
    a_policy = Policy(slice=SLICE, slices=1, drifted_slices=1, recover_slices=0, min_devices=1, cooldown=0)
    from edgeml.fleet.assessment import assess

    a = assess(store, a_policy, "plant-a", BUNDLE, REFERENCE, T0 + SLICE + 1)
    summed = judge_window(REFERENCE, add_counts([w.counts for w in store.windows("plant-a", BUNDLE)]),
                          a_policy.rule())
    alone = {c: np.concatenate([v[c] for v in values]) for c in COLUMNS}
    one = message("pi-9", 0, T0 + 30.0, alone)[1]
    assert a.columns["x0"]["horizon"] == summed["columns"]["x0"] and a.horizon == summed["verdict"]
    assert {c: {k: one["columns"][c][k] for k in ("psi", "js", "p_value", "status")} for c in COLUMNS} == \
        {c: a.columns[c]["horizon"] for c in COLUMNS}
    assert one["verdict"]["status"] == a.horizon["status"]


def test_fast_device_verdicts_equal_judge_window_on_seeded_counts():
    rng = np.random.default_rng(7)
    layout = Layout(REFERENCE)
    windows = []
    for _ in range(400):
        n = int(rng.integers(50, 3000))
        shift = rng.uniform(0, 0.5)
        shares = np.array([0.25 - shift / 2, 0.5, 0.25 + shift / 2])
        cols = {c: {"kind": "numeric", "counts": rng.multinomial(n, shares).tolist(), "missing": 0}
                for c in COLUMNS}
        windows.append({"rows": n, "bad_rows": 0, "columns": cols,
                        "output": {"kind": "classes", "counts": [n // 2, n - n // 2]}})
    rule = VerdictRule(min_rows=100, drifted_share=0.5)
    fast = device_verdicts(layout, layout.matrix(windows), rule, np.array([w["rows"] for w in windows]))
    slow = [judge_window(REFERENCE, w, rule)["verdict"]["status"] for w in windows]
    assert fast == slow and {"drift", "ok", None} == set(slow) and 50 < slow.count("drift") < 350


def test_a_scenario_on_postgresql(postgres):
    name = f"t{uuid.uuid4().hex[:12]}"
    url = postgres.create_database(name)
    try:
        with Store.open(url) as store:
            store.add_bundle(BUNDLE, MANIFEST, "test")
            stream(store, range(25), lambda d, k: 10.0 if d in {"pi-0", "pi-2", "pi-4"} and 10 <= k < 20 else 0.0)
            assert run(store, POLICY, range(25)) == [(12, "drift", None), (23, "recovered", None)]
            assert [json.loads(p)["decision"]["kind"] for _, _, p in outgoing(store)] == ["drift", "recovered"]
    finally:
        postgres.drop_database(name)


def test_vectorised_p_values_equal_the_protocols_homogeneity_test_with_sparse_bins():
    from edgeml.fleet.fastjudge import p_values
    from edgeml_runtime.protocol.stats import homogeneity_test

    rng = np.random.default_rng(11)
    shares = np.array([0.0, 0.001, 0.004, 0.2, 0.3, 0.3, 0.195, 0.0])  # bins the reference never or rarely saw
    for m in (50, 1000, 100_000):
        counts = np.array([rng.multinomial(int(rng.integers(0, 400)), rng.dirichlet(np.ones(8))) for _ in range(300)])
        fast = p_values(counts, shares, m)
        slow = [homogeneity_test(c.tolist(), shares.tolist(), m)[2] for c in counts]
        np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-300)


def test_windows_that_do_not_fit_the_reference_are_reported_not_judged(store):
    stream(store, range(5), lambda d, k: 0.0)
    topic, bad = message("pi-7", 4, T0 + SLICE * 4 + 30.0, {c: rows_of(np.random.default_rng(1), 200, 0.0)
                                                             for c in COLUMNS})
    bad["columns"]["x0"]["counts"] = bad["columns"]["x0"]["counts"][:2]  # two bins: another bundle's
    assert store.record_messages([(topic, bad)]).outcomes == ("stored",)
    from edgeml.fleet.assessment import assess

    a = assess(store, POLICY, "plant-a", BUNDLE, REFERENCE, T0 + SLICE * 5 + 1)
    assert a.unfit == {"pi-7": {"windows": 1, "reason": "x0: 2 counts do not fit the reference's 3 bins"}}
    assert sorted(a.devices) == DEVICES and a.windows == 25
    assert decide(store, POLICY, holder="c1", lease_seconds=30, now=T0 + SLICE * 5 + 1) == []
