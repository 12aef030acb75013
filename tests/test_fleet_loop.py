"""The whole loop end to end: drift on real devices, a retrain by the build trigger, the challenger promoted.

Everything is real and started here: a Mosquitto, one `edgeml fleet run`
controller with `[trigger] name = "build"` on drift, and three
`edgeml-runtime run` devices of the fleet ``loop`` streaming demo rows of a
world that has shifted (hotter, harder work). The champion is the demo bundle,
built on the old world and added with `edgeml registry add --fleet loop
--champion`. The source the retrain reads is a CSV of the new world's labelled
rows, where failures follow high spindle speed instead of low: the old
champion ranks them backwards, so the challenger wins.

Phase 1 (the controller): the fleet drifts, one decision is taken, one retrain
runs for it while the controller goes on storing windows, the challenger is
registered with its lineage and becomes the champion; SIGTERM then stops the
controller cleanly. Phase 2 (`edgeml fleet retrain`, same store): a source
whose older rows' labels were shuffled gives a challenger that learnt nothing,
which is registered and rejected, the champion kept.

With ``EDGEML_LOOP_EVIDENCE=PATH`` the phase 1 evidence record (the retrain
row and the challenger's `registry show --json`) is written to PATH.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from broker import require_mosquitto, wait_until
from conftest import BIN, run_env
from fleet_traffic import FAST_POLICY, SHIFT, Controller, fleet_broker

FLEET = "loop"
DEVICES = ("d1", "d2", "d3")
SOURCE_ROWS, WINDOW_ROWS, MARGIN = 1500, 300, 0.05
#: The most recent fifth of the source, by file order: what champion and challenger are compared on.
RECENT = {"recent": 300, "older": 1200, "by": "file order", "first": 1201, "last": 1500}
POLICY = FAST_POLICY
RETRAIN = f"""
[trigger]
name = "build"
on = ["drift"]
attempts = 1
timeout = "5m"

[retrain]
data = "{{data}}"
label = "failure"
estimators = ["lgbm"]
max_trials = 3
seed = 0
validation = "holdout"

[promotion]
recent_share = 0.2
margin = {MARGIN}
"""
FINISHED = ("promoted", "rejected", "done", "failed", "timeout")


def edgeml(*args, timeout: float = 120, env: dict | None = None) -> str:
    done = subprocess.run([str(BIN / "edgeml"), *map(str, args)], capture_output=True, text=True,
                          env={**run_env(), **(env or {})}, timeout=timeout)
    assert done.returncode == 0, f"edgeml {' '.join(map(str, args))} exited {done.returncode}:\n{done.stderr}"
    return done.stdout


def changed_world(seed: int, rows: int = SOURCE_ROWS) -> pd.DataFrame:
    """Labelled demo readings whose failures now follow high spindle speed (the old world's fail at low speed)."""
    from edgeml.data.demo import demo_frame

    frame = demo_frame(rows=rows, seed=seed)
    rng = np.random.default_rng(seed)
    risk = 1 / (1 + np.exp(-(frame["rpm"].to_numpy() - 1650) / 40))
    return frame.assign(failure=(rng.random(rows) < risk).astype(np.int64))


def shuffled_older(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """``frame`` with the labels of all but its last fifth (its recent rows) shuffled: nothing left to learn."""
    out = frame.copy()
    older = out.index[: len(out) - len(out) // 5]
    out.loc[older, "failure"] = np.random.default_rng(seed).permutation(out.loc[older, "failure"].to_numpy())
    return out


def shifted_rows(seed: int, rows: int) -> list[str]:
    """Unlabelled demo readings of the shifted world, as the JSON lines a device reads on stdin."""
    from edgeml.data.demo import demo_frame

    frame = demo_frame(rows=rows, seed=seed, label=False)
    for column, delta in SHIFT.items():
        frame[column] = frame[column] + delta
    return [json.dumps(r) + "\n" for r in frame.astype(str).to_dict("records")]


class Device:
    """`edgeml-runtime run` fed shifted rows on stdin, a window's worth at a time, until told to stop."""

    def __init__(self, bundle: Path, broker_url: str, device: str, folder: Path, seed: int):
        cmd = [str(BIN / "edgeml-runtime"), "run", str(bundle), "--fleet", FLEET, "--device-id", device,
               "--broker", broker_url, "--outbox", str(folder / f"{device}.db"), "--window-rows", str(WINDOW_ROWS)]
        self.device = device
        self.err = open(folder / f"{device}.log", "w+")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self.err,
                                     text=True, env=run_env())
        self.rows = shifted_rows(seed, 3000)
        self.stop = threading.Event()
        self.sent = 0
        self.feeder = threading.Thread(target=self._feed, daemon=True)
        self.feeder.start()

    def _feed(self, pace: float = 0.4, most: int = 400) -> None:
        """Two windows at once, then one every ``pace`` s until stopped (at most ``most`` windows in all)."""
        try:
            for n in range(most):
                if n >= 2 and self.stop.wait(pace):
                    break
                start = (n * WINDOW_ROWS) % len(self.rows)
                self.proc.stdin.write("".join(self.rows[start:start + WINDOW_ROWS]))
                self.proc.stdin.flush()
                self.sent += WINDOW_ROWS
        finally:
            self.proc.stdin.close()

    def finish(self) -> None:
        """Stop feeding; the device scores what it read, publishes its last window and exits 0."""
        self.stop.set()
        self.feeder.join(30)
        code = self.proc.wait(60)
        self.err.seek(0)
        said = self.err.read()
        self.err.close()
        assert code == 0, said


def retrain_rows(store_url: str) -> list:
    from edgeml.fleet import retrain
    from edgeml.fleet.store import Store

    with Store.open(store_url) as store:
        return retrain.retrains(store, FLEET)


def stored_rows(store_url: str) -> dict:
    """Per device, the rows of its stored windows."""
    from edgeml.fleet.store import Store

    with Store.open(store_url) as store:
        windows = store.windows(FLEET, None)
    return {d: sum(w.rows for w in windows if w.device == d) for d in DEVICES}


def registry(store_url: str) -> dict:
    return json.loads(edgeml("registry", "list", "--fleet", FLEET, "--json", "--store", store_url))


def show(store_url: str, version: int) -> dict:
    return json.loads(edgeml("registry", "show", version, "--json", "--store", store_url))


@pytest.fixture(scope="module")
def loop(tmp_path_factory, demo_bundle):
    """Phase 1, run whole: drift, the retrain it fires, the challenger promoted, the controller stopped."""
    require_mosquitto()
    tmp = tmp_path_factory.mktemp("fleet-loop")
    broker = fleet_broker(tmp / "mosquitto").start()
    try:
        yield _phase1(tmp, broker, demo_bundle)
    finally:
        broker.stop()


def _phase1(tmp: Path, broker, demo_bundle: Path) -> dict:
    store = f"sqlite:///{tmp / 'fleet.db'}"
    edgeml("registry", "add", demo_bundle, "--fleet", FLEET, "--champion", "--store", store)
    source = tmp / "new-world.csv"
    changed_world(seed=2).to_csv(source, index=False)
    config = tmp / "fleet.toml"
    config.write_text(f'[broker]\nurl = "{broker.url}"\n\n[store]\nurl = "{store}"\n\n[controller]\n'
                      f'fleets = ["{FLEET}"]\n{POLICY}{RETRAIN.format(data=source.name)}')
    # Started here, not by Controller.start: those are killed after each test, and this one serves the module.
    # TMPDIR: the retrain's work folder (kept, with the challenger's bundle) is made under this module's own.
    work = tmp / "work"
    work.mkdir()
    controller = Controller(tmp, "--config", str(config), "--client-id", "loop-1", env={"TMPDIR": str(work)})
    with open(controller.log_path, "ab") as log:
        controller.proc = subprocess.Popen(controller.args, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                           env=controller.env)
    devices: list[Device] = []
    code = None
    try:
        controller.wait_log("subscribed to", timeout=60)
        assert "retraining with the build trigger on drift" in controller.log(), controller.log()
        devices = [Device(demo_bundle, broker.url, d, tmp, seed=300 + i) for i, d in enumerate(DEVICES)]
        # The fleet drifts, the controller requests a retrain and runs it; the devices stream on meanwhile.
        wait_until(lambda: any(r.status in FINISHED for r in retrain_rows(store)), 150,
                   what="the retrain the drift decision fired, finished", interval=0.5)
        for d in devices:
            d.finish()
        sent = {d.device: d.sent for d in devices}
        # Each device exited after its broker acknowledged every window; the controller stores what it was sent.
        wait_until(lambda: stored_rows(store) == sent, 60, what=f"every row the devices scored ({sent}) stored",
                   interval=0.5)
        code = controller.stop(timeout=60)
    finally:
        for d in devices:
            if d.proc.poll() is None:
                d.proc.kill()
        if controller.proc.poll() is None:
            controller.kill()
        log = controller.log()
    return {"store": store, "broker": broker, "tmp": tmp, "config": config, "source": source, "code": code,
            "log": log, "sent": sent, "bundle": demo_bundle}


@pytest.fixture(scope="module")
def phase1(loop):
    """What the store and the CLIs say after phase 1."""
    from edgeml.fleet.store import Store

    store = loop["store"]
    (row,) = retrain_rows(store)  # exactly one retrain: the drift decision's
    listed = registry(store)["versions"]
    challenger = show(store, row.result["challenger"]["version"])
    with Store.open(store) as s:
        taken = s.decisions(FLEET)
    return {"row": row, "versions": listed, "challenger": challenger, "taken": taken,
            "decisions": json.loads(edgeml("fleet", "decisions", "--json", "--store", store))}


def test_the_drift_decision_was_taken_once(loop, phase1):
    decisions = phase1["decisions"]
    assert [(d["fleet"], d["kind"], d["device"]) for d in decisions] == [(FLEET, "drift", None)], decisions
    (drift,) = decisions
    assert drift["summary"].startswith("fleet drift: ") and drift["published"] is True
    assert "published decision" in loop["log"]


def test_exactly_one_retrain_ran_for_it_and_promoted_the_challenger(loop, phase1):
    row, (drift,) = phase1["row"], phase1["decisions"]
    assert (row.status, row.reason, row.decision_id, row.attempt, row.trigger, row.holder) == (
        "promoted", "drift", drift["id"], 1, "build", "loop-1"), row
    assert row.error is None
    assert row.requested <= row.started < row.finished
    reason = row.result["reason"]
    assert reason.startswith("better by 0.") and "against the champion's (version 1)" in reason, reason
    workdir = Path(row.result["workdir"])
    assert workdir.parent == loop["tmp"] / "work" and (workdir / "demo-2" / "manifest.json").is_file()
    assert f"retrain #{row.id} of fleet {FLEET} started (drift, attempt 1, trigger build)" in loop["log"]
    assert f"retrain #{row.id} of fleet {FLEET}: promoted" in loop["log"]


def test_the_challenger_is_a_new_version_with_its_lineage_and_the_champion(loop, phase1):
    row, challenger, (drift,) = phase1["row"], phase1["challenger"], phase1["decisions"]
    champion, = [v for v in phase1["versions"] if v["action"] == "added"]
    assert (champion["version"], champion["status"], champion["lineage"]["trigger"]) == (1, "retired", "manual")
    assert champion["aliases"] == [] and show(loop["store"], 1)["status"] == "retired"
    assert [v["version"] for v in phase1["versions"]] == [champion["version"], challenger["version"]]
    assert challenger["version"] > champion["version"]  # numbers only grow
    assert (challenger["action"], challenger["status"], challenger["aliases"]) == ("trained", "champion",
                                                                                  ["champion"])
    assert (challenger["name"], challenger["bundle_version"]) == ("demo", "2")
    assert challenger["bundle_sha256"] != champion["bundle_sha256"]
    assert challenger["parent"] == champion["bundle_sha256"]
    from edgeml_runtime import Model

    assert champion["bundle_sha256"] == Model.load(loop["bundle"]).manifest.identity  # what devices report
    lineage = challenger["lineage"]
    assert lineage["trigger"] == {"name": "build", "reason": "drift", "retrain": row.id, "attempt": 1}
    assert lineage["decision"]["id"] == drift["id"]
    (evidence,) = lineage["decision"]["evidence"]
    (taken,) = phase1["taken"]
    assert (evidence["id"], evidence["kind"], evidence["bundle"]) == (drift["id"], "drift", champion["bundle_sha256"])
    assert evidence["evidence"] == taken.evidence and evidence["evidence"]["summary"] == drift["summary"]
    data = lineage["data"]
    assert data["source"] == str(loop["source"])
    assert data["sha256"] == hashlib.sha256(loop["source"].read_bytes()).hexdigest()
    assert (data["rows"], data["labelled"], data["recent"]) == (SOURCE_ROWS, SOURCE_ROWS, RECENT)
    assert lineage["parent"] == {"version": champion["version"], "bundle_sha256": champion["bundle_sha256"]}
    mine, theirs = lineage["scores"]["challenger"]["score"], lineage["scores"]["champion"]["score"]
    assert mine > theirs + MARGIN and theirs < 0.5, (mine, theirs)  # the old champion ranks the new failures backwards
    assert (lineage["metric"], lineage["margin"]) == ("roc_auc", MARGIN)
    assert lineage["gain"] == pytest.approx(mine - theirs)
    assert lineage["previous_champion"] == champion["version"]
    assert row.result["challenger"]["version"] == challenger["version"]
    assert row.result["rows"] == RECENT


def test_the_controller_stored_windows_while_the_retrain_ran_and_stopped_cleanly(loop, phase1):
    from edgeml.fleet.store import Store

    row = phase1["row"]
    with Store.open(loop["store"]) as store:
        windows = store.windows(FLEET, None)
        rejected = store.rejected()
    during = [w for w in windows if row.started < w.received < row.finished]
    assert len({w.device for w in during}) == len(DEVICES), (row.started, row.finished, len(windows))
    assert rejected == []
    assert stored_rows(loop["store"]) == loop["sent"]  # every row each device scored in a stored window, once
    keys = [(w.device, w.session, w.seq) for w in windows]
    assert len(keys) == len(set(keys)) == sum(loop["sent"].values()) // WINDOW_ROWS
    assert loop["code"] == 0, loop["log"]
    assert "Traceback" not in loop["log"]


def test_the_evidence_record_of_phase_1(phase1):
    record = {"retrain": phase1["row"].to_dict(), "challenger": phase1["challenger"],
              "decision": phase1["decisions"][0]}
    json.dumps(record)  # all of it JSON
    path = os.environ.get("EDGEML_LOOP_EVIDENCE")
    if path:
        Path(path).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


# -- phase 2: a challenger that cannot be better, by `edgeml fleet retrain` --------------------------------------


@pytest.fixture(scope="module")
def phase2(loop, phase1):
    tmp = loop["tmp"] / "phase2"
    tmp.mkdir()
    source = tmp / "shuffled.csv"
    shuffled_older(changed_world(seed=3), seed=5).to_csv(source, index=False)
    config = tmp / "fleet.toml"
    config.write_text(f'[store]\nurl = "{loop["store"]}"\n{RETRAIN.format(data=source.name)}')
    record = json.loads(edgeml("fleet", "retrain", "--fleet", FLEET, "--config", config, "--json", timeout=300,
                               env={"TMPDIR": str(tmp)}))
    return {"record": record, "source": source, "versions": registry(loop["store"])["versions"],
            "rejected": show(loop["store"], record["result"]["challenger"]["version"])}


def test_a_challenger_that_cannot_be_better_is_rejected_and_the_champion_kept(loop, phase1, phase2):
    record, lost, before = phase2["record"], phase2["rejected"], phase1["challenger"]
    assert (record["status"], record["reason"], record["attempt"], record["decision_id"]) == (
        "rejected", "manual", 1, None)
    assert record["id"] > phase1["row"].id
    assert [v["version"] for v in phase2["versions"]] == [1, before["version"], lost["version"]]
    assert lost["version"] > before["version"]
    (champion,) = [v for v in phase2["versions"] if "champion" in v["aliases"]]
    assert (champion["version"], champion["status"]) == (before["version"], "champion")
    assert (lost["action"], lost["status"], lost["aliases"]) == ("trained", "rejected", [])
    assert lost["parent"] == before["bundle_sha256"]
    lineage = lost["lineage"]
    assert lineage["trigger"] == {"name": "build", "reason": "manual", "retrain": record["id"], "attempt": 1}
    assert lineage["data"]["sha256"] == hashlib.sha256(phase2["source"].read_bytes()).hexdigest()
    assert lineage["data"]["recent"] == RECENT
    mine, theirs = lineage["scores"]["challenger"]["score"], lineage["scores"]["champion"]["score"]
    assert theirs > 0.8 > mine + 0.1, (mine, theirs)  # the champion knows the new world; the challenger learnt nothing
    assert lineage["rejected"]["scores"]["champion"]["score"] == theirs
    assert lineage["rejected"]["scores"]["challenger"]["score"] == mine
    assert lineage["rejected"]["rows"] == RECENT
    assert lineage["rejected"]["reason"].startswith(f"not better by more than the margin {MARGIN:g} (by -")
