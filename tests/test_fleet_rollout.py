"""Staged rollouts: the wave plan and the wave verdict on fixed vectors, the stored state machine driven by update
payloads through record_update, and the `edgeml rollout` commands' wiring.

Every store is a real SQLite file of the test's own; ``announce`` is a list append (the controller publishes).
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from release_helpers import make_releases, second_bundle

from edgeml.cli import main
from edgeml.errors import FleetError
from edgeml.fleet import rollout as ro
from edgeml.fleet.rollout_verdict import judge_wave, parse_duration, parse_share, parse_waves, plan_waves
from edgeml.fleet.store import Store
from edgeml_runtime.errors import ProtocolError

T0 = 1_796_292_000.0  # 2026-12-03T10:00:00Z
DEVICES = [f"pi-{i:02}" for i in range(1, 21)]  # 20 devices: canary 1, up to 25% 4 more, then 15
FLEET = "plant-a"


# -- planning ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("n", "canary", "waves", "sizes"), [
    (20, "5%", "25%,100%", [1, 4, 15]),
    (100, "5%", "25%,100%", [5, 20, 75]),
    (10, "5%", "25%,100%", [1, 2, 7]),      # 0.5 rounds up to 1, 2.5 to 3
    (3, "5%", "25%,100%", [1, 2]),          # 25% of 3 is one device, the canary already: that wave is skipped
    (1, "5%", "25%,100%", [1]),
    (7, "0", "50%,100%", [4, 3]),           # no canary
    (7, "0.3", "1", [3, 4]),
    (4, "100%", "100%", [4]),
])
def test_plan_waves_sizes(n, canary, waves, sizes):
    devices = [f"d{i:03}" for i in reversed(range(n))]
    plan = plan_waves(devices, parse_share(canary, "canary", zero=True), parse_waves(waves))
    assert [len(w) for w in plan] == sizes
    assert [d for w in plan for d in w] == sorted(devices)  # every device once, in sorted order


@pytest.mark.parametrize(("call", "match"), [
    (lambda: parse_share("5x", "--canary"), r"--canary '5x': not a share of the fleet; give a percentage \(5%\)"),
    (lambda: parse_share("0", "--waves"), r"--waves '0': must be above 0% and at most 100%"),
    (lambda: parse_share("101%", "--canary", zero=True), r"--canary '101%': must be from 0% to 100%"),
    (lambda: parse_share(True, "--canary"), r"not a share"),
    (lambda: parse_waves("25%,", "--waves"), r"--waves '25%,': the last wave must be 100%"),
    (lambda: parse_waves("50%,50%,100%", "--waves"), r"each must be above the one before"),
    (lambda: parse_waves("", "--waves"), r"give at least one wave"),
    (lambda: parse_duration("30 minutes", "--wave-timeout"), r"--wave-timeout '30 minutes': not a duration"),
    (lambda: parse_duration(0), r"not a duration above 0"),
    (lambda: plan_waves([], 0.05, [1.0]), r"the rollout has no device"),
    (lambda: plan_waves(["a", "b", "a"], 0.05, [1.0]), r"'a' is listed 2 times"),
])
def test_planning_refuses_bad_values(call, match):
    with pytest.raises(FleetError, match=match):
        call()


# -- the verdict ---------------------------------------------------------------------------------

C, F, R, N = "committed", "failed", "rolled_back", None


@pytest.mark.parametrize(("steps", "rate", "min_executed", "outcome"), [
    ([C, C, C], 0.1, 3, "pass"),
    ([C, C, N], 0.1, 3, "inconclusive"),
    ([C, C, "testing"], 0.1, 3, "inconclusive"),
    ([C, F, C], 0.1, 3, "fail"),                   # 1/3 > 10%
    ([C, F, N, N], 0.1, 3, "inconclusive"),        # 2 executed < min 3: not judged yet
    ([F, R, "active", N], 0.1, 2, "fail"),         # 2 of 2 executed failed
    ([F], 0.1, 3, "fail"),                         # min_executed capped at the wave's size
    ([C], 0.1, 3, "pass"),
    ([C] * 9 + [F], 0.1, 3, "pass"),               # exactly 10%: within the rate
    ([C] * 8 + [F, F], 0.1, 3, "fail"),
    ([C] * 9 + [R], 0.0, 3, "fail"),               # rate 0: any failure aborts
    ([C] * 10 + [F] + [N], 0.1, 3, "inconclusive"),  # 1/11 within, one silent: never passes on silence
    ([N, N, N], 0.1, 3, "inconclusive"),
])
def test_verdict_table(steps, rate, min_executed, outcome):
    statuses = {f"d{i}": s for i, s in enumerate(steps)}
    assert judge_wave(statuses, abort_failure_rate=rate, min_executed=min_executed).outcome == outcome


@pytest.mark.parametrize(("canary", "control", "outcome"), [
    ((30, 300), (3, 300), "fail"),        # 10% against 1%: above by more than the 2% margin
    ((9, 300), (3, 300), "inconclusive"),  # 3% against 1%: by exactly 2%, not more
    ((30, 199), (3, 300), "inconclusive"),  # too few rows of the wave
    ((30, 300), (0, 150), "inconclusive"),  # too few rows of the control devices
    ((30, 300), None, "inconclusive"),
])
def test_verdict_on_error_rates(canary, control, outcome):
    v = judge_wave({"a": "testing", "b": None}, abort_failure_rate=0.1, min_executed=1, canary_error=canary,
                   control_error=control)
    assert v.outcome == outcome


def test_verdict_counts_and_reasons():
    v = judge_wave({"a": C, "b": F, "c": "downloading", "d": N, "e": C}, abort_failure_rate=0.5, min_executed=3)
    assert (v.outcome, v.devices, v.executed, v.failed, v.silent, v.committed, v.under_way) == \
        ("inconclusive", 5, 3, 1, 1, 2, 1)
    assert v.reason == "3 of 5 reported (1 failed, 1 under way, 1 silent)"
    assert judge_wave({"a": C, "b": F}, abort_failure_rate=0.5, min_executed=2).reason == \
        "2 of 2 devices executed, 1 failed (at most 50%)"


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"statuses": {"a": "done"}}, r"device 'a' reported step 'done'; the steps are offered, downloading"),
    ({"statuses": {}}, r"this one has none"),
    ({"abort_failure_rate": 1.5}, r"abort_failure_rate 1.5: must be a share from 0 to 1"),
    ({"min_executed": 0}, r"min_executed 0: must be a whole number of devices, at least 1"),
    ({"error_margin": -0.1}, r"error_margin -0.1"),
])
def test_verdict_refuses_bad_arguments(kwargs, match):
    args = {"statuses": {"a": C}, "abort_failure_rate": 0.1, "min_executed": 3, **kwargs}
    with pytest.raises(FleetError, match=match):
        judge_wave(args.pop("statuses"), **args)


# -- the stored state machine --------------------------------------------------------------------

@pytest.fixture
def store(tmp_path):
    with Store.open(f"sqlite:///{tmp_path}/fleet.db") as s:
        yield s


@pytest.fixture(scope="module")
def bundles(demo_bundle, tmp_path_factory) -> list:
    return [demo_bundle, second_bundle(demo_bundle, tmp_path_factory.mktemp("rollout"))]


@pytest.fixture
def released(store, tmp_path, bundles):
    """Releases 1 (bundle A, what the fleet ran) and 2 (bundle B, to roll out) of plant-a; their keys and folders."""
    return make_releases(store, tmp_path, FLEET, bundles, now=T0)


def started(store, released, **kw):
    settings = {"fleet": FLEET, "release": 2, "canary": "5%", "waves": "25%,100%", "abort_failure_rate": "10%",
                "min_executed": 3, "wave_timeout": "30m", "devices": DEVICES, "now": T0,
                "keys": str(released.keys), "releases_dir": str(released.folder), **kw}
    return ro.start(store, **settings)


def update(store, device, step, *, release=2, rollout=1, at=T0, reason=None):
    """A fabricated update payload (the protocol's shape), recorded as the controller would."""
    payload = {"format_version": 6, "device": device, "fleet": FLEET, "time": "2026-12-03T10:05:00.000Z",
               "release": release, "bundle": "b" * 64, "rollout": rollout, "step": step, "reason": reason,
               "refusal": None, "health": None}
    return ro.record_update(store, FLEET, device, payload, at)


class Announcer:
    """``announce`` as a list append: (device, release version, rollout)."""

    def __init__(self):
        self.said: list[tuple[str, int, int]] = []

    def __call__(self, fleet, device, record, rollout_id):
        assert fleet == FLEET
        self.said.append((device, record.version, rollout_id))

    def devices(self, version: int) -> list[str]:
        return [d for d, v, _ in self.said if v == version]


def test_a_staged_rollout_goes_wave_by_wave_to_done(store, released):
    r = started(store, released)
    assert (r.state, r.wave, r.previous_release, [len(w) for w in r.waves]) == ("running", 0, 1, [1, 4, 15])
    out = Announcer()
    said = ro.advance(store, r.id, now=T0 + 1, announce=out)
    assert out.said == [("pi-01", 2, r.id)] and said == [f"rollout {r.id} wave 1: announced release 2 to pi-01"]
    assert ro.advance(store, r.id, now=T0 + 2, announce=out) == []  # nobody announced twice, nothing reported
    for step in ("offered", "downloading", "verifying", "testing", "active"):
        assert update(store, "pi-01", step)
    assert ro.advance(store, r.id, now=T0 + 3, announce=out) == []  # active is not final
    assert update(store, "pi-01", "committed")
    said = ro.advance(store, r.id, now=T0 + 4, announce=out)
    assert said[0] == f"rollout {r.id} moves on: wave 1 of 3 passed: 1 of 1 devices executed, 0 failed (at most 10%)"
    assert out.devices(2) == DEVICES[:5] and ro.get(store, r.id).wave == 1
    for device in DEVICES[1:5]:
        update(store, device, "committed")
    ro.advance(store, r.id, now=T0 + 5, announce=out)
    assert out.devices(2) == DEVICES and ro.get(store, r.id).wave == 2
    for device in DEVICES[5:]:
        update(store, device, "committed")
    said = ro.advance(store, r.id, now=T0 + 6, announce=out)
    assert said == [f"rollout {r.id} done: wave 3 of 3 passed: 15 of 15 devices executed, 0 failed (at most 10%)"]
    done = ro.status(store, r.id)
    assert (done["state"], done["wave"], done["rollback_release"]) == ("done", 2, None)
    assert [(e["from"], e["to"], e["wave"]) for e in done["transitions"]] == [
        (None, "running", 0), ("running", "running", 1), ("running", "running", 2), ("running", "done", 2)]
    assert [w["executed"] for w in done["plan"]] == [1, 4, 15]
    assert ro.advance(store, r.id, now=T0 + 7, announce=out) == [] and len(out.said) == 20
    assert _count(store, "update_events") == 25


def test_a_failing_canary_aborts_and_rolls_back_with_a_higher_release(store, released):
    r = started(store, released, canary="10%", waves="50%,100%")
    out = Announcer()
    ro.advance(store, r.id, now=T0 + 1, announce=out)
    assert out.devices(2) == ["pi-01", "pi-02"]
    update(store, "pi-01", "rolled_back", reason="health: error rate 0.2 above 0.05")
    assert ro.advance(store, r.id, now=T0 + 2, announce=out) == []  # 1 executed < min(3, wave of 2): not judged
    update(store, "pi-02", "committed")
    said = ro.advance(store, r.id, now=T0 + 3, announce=out)
    after = ro.get(store, r.id)
    rollback = after.plan["rollback_release"]
    assert after.state == "aborted" and rollback > 2
    assert out.devices(rollback) == ["pi-01", "pi-02"]  # every device announced, and no other
    assert all(rid == r.id for _, _, rid in out.said)
    from edgeml.fleet import releases

    assert _identity(releases.get(store, FLEET, rollback)) == _identity(releases.get(store, FLEET, 1))
    assert after.reason == (f"wave 1 failed: 1 of 2 executed devices failed (50%), above the abort rate 10%; rolled "
                            f"back to the bundle of release 1 as release {rollback}, announced to 2 devices")
    assert said[-1] == f"rollout {r.id} aborted: {after.reason}"
    assert ro.advance(store, r.id, now=T0 + 4, announce=out) == []  # aborted: nothing more said
    assert len(out.said) == 4


def test_a_failed_wave_without_keys_aborts_and_says_why_nothing_rolled_back(store, released):
    r = started(store, released, keys=None, releases_dir=None)
    out = Announcer()
    ro.advance(store, r.id, now=T0 + 1, announce=out)
    update(store, "pi-01", "failed", reason="refused: bad_archive")
    ro.advance(store, r.id, now=T0 + 2, announce=out)
    after = ro.get(store, r.id)
    assert after.state == "aborted" and "not rolled back: the rollout was started without --keys" in after.reason
    assert out.said == [("pi-01", 2, r.id)]


def test_a_worse_error_rate_than_the_control_devices_fails_the_canary(store, released):
    r = started(store, released, canary="25%", waves="100%", min_executed=5)
    out = Announcer()
    ro.advance(store, r.id, now=T0 + 1, announce=out)
    canary, control = DEVICES[:5], DEVICES[5:]
    rows = {tuple(canary): (40, 400), tuple(control): (15, 1500)}  # 10% against 1%
    said = ro.advance(store, r.id, now=T0 + 2, announce=out, rows_of=lambda f, d, since, b: rows[tuple(d)])
    assert ro.get(store, r.id).state == "aborted"
    assert "the wave's error rate 10.0% on 400 rows is above the control devices' 1.0% on 1,500 rows" in said[-1]


def test_an_inconclusive_wave_pauses_at_its_timeout_and_resume_restarts_its_clock(store, released):
    r = started(store, released, canary="25%", waves="100%")
    out = Announcer()
    ro.advance(store, r.id, now=T0, announce=out)
    update(store, "pi-01", "committed")
    update(store, "pi-02", "committed")
    update(store, "pi-03", "downloading")
    assert ro.advance(store, r.id, now=T0 + 1799, announce=out) == []
    said = ro.advance(store, r.id, now=T0 + 1800, announce=out)
    after = ro.get(store, r.id)
    assert (after.state, after.reason) == ("paused", "wave 1 inconclusive after 30m: 2 of 5 reported")
    assert said == [f"rollout {r.id} paused: wave 1 inconclusive after 30m: 2 of 5 reported"]
    assert ro.advance(store, r.id, now=T0 + 9999, announce=out) == []  # paused: nothing announced, never passed
    ro.resume(store, r.id, now=T0 + 10_000)
    assert ro.advance(store, r.id, now=T0 + 10_000 + 1799, announce=out) == []
    assert ro.get(store, r.id).state == "running"
    for device in DEVICES[2:5]:
        update(store, device, "committed")
    ro.advance(store, r.id, now=T0 + 10_000 + 1800, announce=out)
    assert ro.get(store, r.id).wave == 1 and len(out.said) == 20


def test_pause_resume_abort_and_their_refusals(store, released):
    r = started(store, released)
    with pytest.raises(FleetError, match=r"rollout 1 is running: only a paused rollout can resume"):
        ro.resume(store, r.id)
    paused = ro.pause(store, r.id, "field check", now=T0 + 5)
    assert (paused.state, paused.reason, paused.updated) == ("paused", "field check", T0 + 5)
    out = Announcer()
    assert ro.advance(store, r.id, now=T0 + 6, announce=out) == [] and out.said == []
    with pytest.raises(FleetError, match=r"fleet 'plant-a' has rollout 1 paused already: .*edgeml rollout abort 1"):
        started(store, released)
    assert ro.resume(store, r.id, now=T0 + 7).state == "running"
    aborted = ro.abort(store, r.id, "operator", now=T0 + 8)
    assert (aborted.state, aborted.reason) == ("aborted", "operator")
    with pytest.raises(FleetError, match=r"rollout 1 is aborted: only a running or paused rollout can abort; start"):
        ro.abort(store, r.id)
    assert [e["to"] for e in aborted.plan["transitions"]] == ["running", "paused", "running", "aborted"]
    assert started(store, released).id == 2  # the fleet is free again
    with pytest.raises(FleetError, match=r"there is no rollout 9"):
        ro.pause(store, 9)


def test_start_refuses_a_missing_release_and_a_fleet_without_devices(store, released):
    with pytest.raises(FleetError, match=r"release 7|no release 7|7"):
        started(store, released, release=7)
    with pytest.raises(FleetError, match=r"fleet 'plant-a' has no known device"):
        started(store, released, devices=None)
    with pytest.raises(FleetError, match=r"min_executed 0"):
        started(store, released, min_executed=0)
    assert _count(store, "rollouts") == 0


def test_the_bundle_to_roll_back_to_is_the_last_one_rolled_out_not_the_newest_made(store, released, bundles):
    from edgeml.fleet import releases
    from edgeml.fleet import schema as t

    first = started(store, released, release=1)
    with store._write() as conn:  # release 1 went out to the whole fleet; release 2 was made, never rolled out
        conn.execute(sa.update(t.rollouts).where(t.rollouts.c.id == first.id).values(state="done"))
    three = releases.make_release(store, bundles[0], fleet=FLEET, keys_dir=released.keys,
                                  releases_dir=released.folder, now=T0)
    assert started(store, released, release=three.version).previous_release == 1


def test_start_takes_the_fleets_known_devices(store, released):
    import fleet_helpers

    for device in ("pi-09", "pi-03"):
        store.record_birth(*fleet_helpers.birth(device, 1))
    r = started(store, released, devices=None)
    assert r.waves == [["pi-03"], ["pi-09"]]


def test_record_update_keeps_every_event_and_the_last_step_of_the_rollouts_release(store, released):
    r = started(store, released)
    assert update(store, "pi-01", "committed")
    assert not update(store, "pi-01", "testing")           # a late earlier step does not undo a final one
    assert not update(store, "pi-01", "offered", release=1)  # another release: kept as an event only
    assert not update(store, "pi-01", "offered", rollout=None)
    assert not update(store, "pi-99", "offered")            # not a device of the rollout
    assert _count(store, "update_events") == 5
    device = next(d for d in ro.status(store, r.id)["devices"] if d["device"] == "pi-01")
    assert device["step"] == "committed"
    with pytest.raises(ProtocolError, match=r"update of pi-01 \(fleet plant-a\): release 'x' is not a release"):
        ro.record_update(store, FLEET, "pi-01", {"time": "2026-12-03T10:00:00Z", "release": "x",
                                                 "step": "offered"}, T0)
    with pytest.raises(ProtocolError, match=r"time None is not a UTC time"):
        ro.record_update(store, FLEET, "pi-01", {"release": 2, "step": "offered"}, T0)


def test_status_of_a_fleet_and_the_fleet_status_report(store, released):
    from edgeml.fleet.policy import Policy
    from edgeml.fleet.status import fleet_status, render

    with pytest.raises(FleetError, match=r"fleet 'plant-a' has no rollout; start one"):
        ro.status(store, fleet=FLEET)
    r = started(store, released)
    assert ro.status(store, fleet=FLEET)["id"] == r.id
    with pytest.raises(FleetError, match=r"rollout 1 is of fleet 'plant-a', not 'plant-b'"):
        ro.status(store, r.id, fleet="plant-b")
    report = fleet_status(store, Policy(), now=T0)
    assert [(x["id"], x["state"], x["release"]) for x in report["rollouts"]] == [(1, "running", 2)]
    assert "rollout #1 of release 2: running at wave 1 of 3 (20 devices)" in render(report)


# -- the commands --------------------------------------------------------------------------------

def test_the_rollout_commands(store, released, tmp_path):
    url = store.url
    run = CliRunner().invoke
    done = run(main, ["rollout", "start", "2", "--fleet", FLEET, "--canary", "5x", "--store", url])
    assert done.exit_code == 2 and "Invalid value for '--canary': '5x': not a share of the fleet" in done.output
    done = run(main, ["rollout", "start", "2", "--fleet", FLEET, "--waves", "25%,50%", "--store", url])
    assert done.exit_code == 2 and "'--waves': '25%,50%': the last wave must be 100%" in done.output
    done = run(main, ["rollout", "start", "2", "--fleet", FLEET, "--wave-timeout", "soon", "--store", url])
    assert done.exit_code == 2 and "'--wave-timeout': 'soon': not a duration" in done.output
    done = run(main, ["rollout", "start", "2", "--fleet", FLEET, "--releases", "r", "--store", url])
    assert done.exit_code == 2 and "--releases needs --keys" in done.output
    done = run(main, ["rollout", "start", "2", "--fleet", FLEET, "--store", url])
    assert done.exit_code == 2 and "fleet 'plant-a' has no known device" in done.output and "Traceback" not in \
        done.output
    import fleet_helpers

    for device in DEVICES[:4]:
        store.record_birth(*fleet_helpers.birth(device, 1))
    done = run(main, ["rollout", "start", "2", "--fleet", FLEET, "--canary", "25%", "--waves", "100%", "--keys",
                      str(released.keys), "--json", "--store", url],
               env={"EDGEML_FLEET_RELEASES": str(released.folder)})
    assert done.exit_code == 0, done.output
    assert ro.get(store, 1).plan["releases"] == str(released.folder)  # --releases from the controller's setting
    shown = json.loads(done.stdout)
    assert (shown["state"], shown["settings"]["canary"], shown["settings"]["wave_timeout"]) == ("running", 0.25,
                                                                                                 1800.0)
    assert [w["devices"] for w in shown["plan"]] == [1, 3]
    done = run(main, ["rollout", "pause", "1", "--reason", "lunch", "--store", url])
    assert done.exit_code == 0 and "rollout #1 of release 2: paused at wave 1 of 2 (4 devices): lunch" in done.output
    done = run(main, ["rollout", "pause", "1", "--store", url])
    assert done.exit_code == 2 and "rollout 1 is paused: only a running rollout can pause" in done.output
    assert run(main, ["rollout", "resume", "1", "--store", url]).exit_code == 0
    done = run(main, ["rollout", "status", "--fleet", FLEET, "--store", url])
    assert done.exit_code == 0 and "pi-01" in done.output and "paused -> running (wave 1): resumed by hand" in \
        done.output
    assert run(main, ["rollout", "abort", "1", "--store", url]).exit_code == 0
    assert ro.get(store, 1).state == "aborted"
    done = run(main, ["rollout", "status", "7", "--store", url])
    assert done.exit_code == 2 and "there is no rollout 7" in done.output
    assert "cumulative" in run(main, ["rollout", "start", "--help"]).output


def _count(store, table: str) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar()


def _identity(record) -> str:
    return record.document["signed"]["bundle"]["identity"]

