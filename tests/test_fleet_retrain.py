"""Retrain requests and runs on SQLite and the real PostgreSQL: one per fleet, retried exactly by policy, a timeout
that kills the child and its program, a run left by a killed controller, two runners never at once; ``edgeml fleet
retrain``; and a drift decision that fires the command trigger through a real controller and a real Mosquitto."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from broker import wait_until
from click.testing import CliRunner
from fleet_helpers import BUNDLE, REFERENCE, url  # noqa: F401 - url: the SQLite and PostgreSQL fixture
from fleet_helpers import window as drift_window
from fleet_traffic import Controller, Publisher

from edgeml.fleet import retrain
from edgeml.fleet.command import retrain as retrain_command
from edgeml.fleet.records import Decision
from edgeml.fleet.settings import TriggerSettings
from edgeml.fleet.store import Store


def program(tmp_path: Path, body: str, name: str = "retrain.py") -> list[str]:
    """A user's retrain program: Python reading the evidence from stdin."""
    path = tmp_path / name
    path.write_text("import json, os, sys, time\n" + body)
    return [sys.executable, str(path)]


def settings(argv, **kw) -> TriggerSettings:
    return TriggerSettings(**{"name": "command", "options": {"command": argv}, "timeout": 60.0, "attempts": 2,
                              "retry_after": 0.0, **kw})


def drain(runner: retrain.Runner, fleet: str = "plant-a") -> list:
    """Run the fleet's due retrains until none is due."""
    done = []
    while (row := runner.run_next(fleet)) is not None:
        done.append(row)
    return done


def test_one_retrain_pending_per_fleet_and_later_decisions_noted_on_it(url, tmp_path):  # noqa: F811
    t0 = time.time()
    with Store.open(url) as store:
        drift = Decision(11, "plant-a", BUNDLE, "drift", t0, {"summary": "fleet drift"}, True)
        first = retrain.request(store, "plant-a", "", "drift", drift, trigger="command", now=t0)
        again = retrain.request(store, "plant-a", "", "performance",
                                Decision(12, "plant-a", BUNDLE, "performance", t0, {}, True), trigger="command",
                                now=t0 + 1)
        other = retrain.request(store, "plant-b", "", "manual", trigger="command", now=t0 + 2)
        assert (first.status, first.reason, first.decision_id, first.attempt) == ("pending", "drift", 11, 1)
        assert again.id == first.id and other.id != first.id
        assert [d["id"] for d in again.evidence["decisions"]] == [11, 12]
        assert again.evidence["requests"] == [{"reason": "performance", "time": t0 + 1, "decision": 12}]
        assert retrain.request(store, "plant-a", "", "schedule", trigger="command", every=60.0, now=t0 + 3) is None
        assert [r.fleet for r in retrain.retrains(store)] == ["plant-a", "plant-b"]
        # the schedule: nothing requested within `every`, none pending, then one is
        runner = retrain.Runner(store, url, settings(program(tmp_path, "sys.exit(0)\n")), holder="r1")
        assert [r.status for r in drain(runner)] == ["done"]
        assert retrain.request(store, "plant-a", "", "schedule", trigger="command", every=60.0, now=t0 + 59) is None
        made = retrain.request(store, "plant-a", "", "schedule", trigger="command", every=60.0, now=t0 + 61)
        assert made is not None and made.reason == "schedule" and made.status == "pending"


def test_a_failing_command_is_recorded_and_retried_exactly_by_policy(url, tmp_path):  # noqa: F811
    argv = program(tmp_path, "print('reading rows', file=sys.stderr)\nprint('no labelled rows since 12:00', "
                             "file=sys.stderr)\nsys.exit(3)\n")
    with Store.open(url) as store:
        runner = retrain.Runner(store, url, settings(argv, attempts=3), holder="r1")
        first = retrain.request(store, "plant-a", "", "manual", trigger="command")
        done = drain(runner)
        rows = retrain.retrains(store, "plant-a")
        assert [(r.attempt, r.status) for r in rows] == [(1, "failed"), (2, "failed"), (3, "failed")]
        assert [r.id for r in done] == [r.id for r in rows]  # the retries ran, and no fourth
        for r in rows:
            assert r.error == f"{argv[0]} exited with 3: no labelled rows since 12:00"
            assert r.result["exit_code"] == 3 and r.result["stderr"].endswith("no labelled rows since 12:00\n")
            assert r.request_id == first.id and r.holder == "r1" and r.started <= r.finished
        assert rows[1].evidence["retry_of"] == rows[0].id and rows[2].evidence["retry_of"] == rows[1].id

        # retry_after: the retry is due that long after the failure, not before
        runner = retrain.Runner(store, url, settings(argv, attempts=2, retry_after=3600.0), holder="r1")
        retrain.request(store, "plant-b", "", "manual", trigger="command")
        assert [r.status for r in drain(runner, "plant-b")] == ["failed"]
        failed, waiting = retrain.retrains(store, "plant-b")
        assert (waiting.status, waiting.attempt) == ("pending", 2)
        assert waiting.requested == pytest.approx(failed.finished + 3600.0, abs=1.0)
        assert runner.due() == [] and runner.run_next("plant-b") is None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat")
    return not (state.exists() and state.read_text().split(") ")[1].startswith("Z"))  # a zombie is dead


def test_a_timeout_kills_the_child_and_its_program_and_is_recorded(tmp_path):
    argv = program(tmp_path, "open(sys.argv[1], 'w').write(str(os.getpid()))\ntime.sleep(120)\n")
    pid_file = tmp_path / "pid"
    db = f"sqlite:///{tmp_path}/fleet.db"
    with Store.open(db) as store:
        runner = retrain.Runner(store, db, settings([*argv, str(pid_file)], timeout=4.0, attempts=1), holder="r1")
        retrain.request(store, "plant-a", "", "manual", trigger="command")
        began = time.monotonic()
        (row,) = drain(runner)
        took = time.monotonic() - began
    assert row.status == "timeout" and 4.0 <= took < 15, took
    assert row.error == "the command trigger ran past [trigger] timeout (4 s) and was killed"
    assert pid_file.exists(), "the program never started: the timeout says nothing"
    pid = int(pid_file.read_text())
    wait_until(lambda: not alive(pid), timeout=5, what=f"the program (pid {pid}) killed with its group")


def test_abort_kills_the_running_retrain_and_records_it_as_stopped(tmp_path):
    """What a second SIGTERM does to the controller's runner: the child is killed now, failed, retried by policy."""
    argv = program(tmp_path, "print('working', flush=True)\ntime.sleep(60)\n")
    db = f"sqlite:///{tmp_path}/fleet.db"
    with Store.open(db) as store:
        runner = retrain.Runner(store, db, settings(argv, retry_after=3600.0), holder="r1")
        retrain.request(store, "plant-a", "", "manual", trigger="webhook")  # run by the trigger configured now
        threading.Timer(2.5, runner.abort.set).start()
        began = time.monotonic()
        row = runner.run_next("plant-a")
        assert time.monotonic() - began < 10
        stopped, retry = retrain.retrains(store, "plant-a")
    assert (row.status, row.error, row.trigger) == ("failed", "controller stopped: killed by a second SIGTERM",
                                                    "command")
    assert (retry.status, retry.attempt) == ("pending", 2) and stopped.id == row.id


def test_a_retrain_left_running_by_a_killed_controller_is_failed_and_retried(url, tmp_path):  # noqa: F811
    argv = program(tmp_path, "print(json.dumps({'bundle': 'dist/demo-2'}))\n")
    with Store.open(url) as store:
        left = retrain.request(store, "plant-a", "", "drift", trigger="command")
        with store.engine.begin() as conn:  # what a controller killed mid-run leaves: running, its lease expired
            conn.execute(sa.update(sa.table("retrains", sa.column("id"), sa.column("status"), sa.column("holder"),
                                            sa.column("started")))
                         .where(sa.column("id") == left.id).values(status="running", holder="ghost",
                                                                     started=time.time() - 100))
        assert store.acquire_lease("retrain:plant-a", "ghost", 0.5, now=time.time() - 100)  # long expired
        runner = retrain.Runner(store, url, settings(argv), holder="r2")
        assert runner.due() == ["plant-a"]
        (ran,) = drain(runner)
        stopped, retried = retrain.retrains(store, "plant-a")
    assert (stopped.status, stopped.error) == ("failed", "controller stopped (ghost held it)")
    assert (retried.id, retried.status, retried.attempt, retried.holder) == (ran.id, "done", 2, "r2")
    assert retried.result["bundle"] == "dist/demo-2" and retried.request_id == left.id


def test_two_runners_never_retrain_a_fleet_at_once(url, tmp_path):  # noqa: F811
    """Two runners, each with its own store connection, race for every request; the intervals the program itself
    measured never overlap, and the rows' started/finished neither."""
    log = tmp_path / "ran.log"
    argv = program(tmp_path, f"start = time.time()\ntime.sleep(0.4)\nwith open({str(log)!r}, 'a') as f:\n"
                             "    f.write(f'{start} {time.time()} {os.environ[\"EDGEML_RETRAIN_ID\"]}\\n')\n")
    stop, wanted = threading.Event(), 3
    errors = []

    def run(holder):
        try:
            with Store.open(url) as store:
                runner = retrain.Runner(store, url, settings(argv), holder=holder, lease_seconds=5)
                while not stop.is_set():
                    for fleet in runner.due():
                        runner.run_next(fleet)
                    time.sleep(0.02)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(h,)) for h in ("controller-1", "controller-2")]
    for th in threads:
        th.start()
    with Store.open(url) as store:
        try:
            while len([r for r in retrain.retrains(store) if r.status == "done"]) < wanted:
                retrain.request(store, "plant-a", "", "manual", trigger="command")
                time.sleep(0.05)
                assert not errors, errors
                assert len(retrain.retrains(store)) < 20, "requests were not absorbed by the pending one"
        finally:
            stop.set()
            for th in threads:
                th.join(60)
        rows = [r for r in retrain.retrains(store) if r.status != "pending"]
    assert not errors, errors
    assert all(r.status == "done" for r in rows) and len(rows) >= wanted
    for intervals in ([(r.started, r.finished) for r in rows],
                      [tuple(map(float, line.split()[:2])) for line in log.read_text().splitlines()]):
        intervals.sort()
        assert len(intervals) == len(rows)
        overlaps = [(a, b) for a, b in zip(intervals, intervals[1:], strict=False) if b[0] < a[1]]
        assert overlaps == [], overlaps


# -- edgeml fleet retrain ---------------------------------------------------------------------------------------


def fleet_toml(tmp_path, argv, extra: str = "") -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(f'[store]\nurl = "sqlite:///{tmp_path}/fleet.db"\n[trigger]\nname = "command"\n'
                    f"command = {json.dumps(argv)}\nattempts = 1\n{extra}")
    path.chmod(0o600)
    return path


def test_the_retrain_command_runs_one_now_and_is_refused_while_one_runs(tmp_path):
    argv = program(tmp_path, "doc = json.load(sys.stdin)\nprint('fitting', doc['retrain']['reason'])\n")
    config = fleet_toml(tmp_path, argv)
    runner = CliRunner()
    done = runner.invoke(retrain_command, ["--fleet", "plant-a", "--config", str(config), "--json"])
    assert done.exit_code == 0, done.output
    record = json.loads(done.stdout)
    assert (record["status"], record["reason"], record["attempt"], record["fleet"]) == ("done", "manual", 1, "plant-a")
    assert record["result"]["stdout"] == "fitting manual\n"
    assert "retrain #1 of fleet plant-a: done in" in done.stderr
    with Store.open(f"sqlite:///{tmp_path}/fleet.db") as store:
        assert store.lease_holder("retrain:plant-a") is None  # released
        assert store.acquire_lease("retrain:plant-a", "controller-9", 60)
        refused = runner.invoke(retrain_command, ["--fleet", "plant-a", "--config", str(config)])
        assert refused.exit_code != 0 and "Traceback" not in refused.output
        assert "a retrain of fleet 'plant-a' is running, held by controller-9" in refused.stderr
        assert [r.status for r in retrain.retrains(store)] == ["done"]  # nothing recorded by the refused one
    failing = fleet_toml(tmp_path, program(tmp_path, "sys.exit('no rows')\n", "fail.py"))
    failed = runner.invoke(retrain_command, ["--fleet", "plant-b", "--config", str(failing)])
    assert failed.exit_code == 1 and "retrain #2 of fleet plant-b: failed" in failed.stderr
    assert "exited with 1: no rows" in failed.stderr


# -- a decision fires the trigger through a real controller -----------------------------------------------------


POLICY = """
[policy]
judge_every = 0.5
slice = "2s"
slices = 30
drifted_slices = 1
min_devices = 3
device_share = 0.5
min_rows = 30
cooldown = "1h"
"""


def test_a_drift_decision_fires_the_command_through_a_running_controller(mqtt_broker, tmp_path):
    """Three devices' shifted windows over a real Mosquitto: the controller decides drift, requests a retrain and
    runs the command with the decision's evidence on stdin; SIGTERM while it runs lets it finish, recorded."""
    seen = tmp_path / "evidence.json"
    argv = program(tmp_path, f"doc = json.load(sys.stdin)\nopen({str(seen)!r}, 'w').write(json.dumps(doc))\n"
                             "print('started', flush=True)\ntime.sleep(2)\n")
    store = f"sqlite:///{tmp_path}/fleet.db"
    config = tmp_path / "fleet.toml"
    config.write_text(f'[broker]\nurl = "{mqtt_broker.url}"\n[store]\nurl = "{store}"\n[controller]\n'
                      f'fleets = ["loop"]\n{POLICY}\n[trigger]\nname = "command"\ncommand = {json.dumps(argv)}\n'
                      'on = ["drift"]\ntimeout = "1m"\n')
    with Store.open(store) as s:
        s.add_bundle(BUNDLE, {"name": "demo", "version": "1", "reference": REFERENCE}, "test")
    c = Controller(tmp_path, "--config", str(config), "--client-id", "loop-1", name="loop-1").start()
    c.wait_log("subscribed to")
    assert "retraining with the command trigger on drift" in c.log()
    now = time.time()
    pub = Publisher(mqtt_broker.url, "pub-loop")
    pub.send([(f"edgeml/loop/d{i}/drift", json.dumps(drift_window(f"d{i}", 1, 0, ended=now - 6, shift=15.0,
                                                                   rows=200, fleet="loop")[1]).encode())
              for i in range(3)])
    pub.close()
    c.wait_log("retrain #1 of fleet loop started (drift, attempt 1, trigger command)", timeout=60)
    wait_until(seen.exists, timeout=30, what="the command reading the evidence")
    assert c.stop(timeout=60) == 0  # SIGTERM mid-retrain: it waits for the command, then exits
    log = c.log()
    assert "stopping: waiting for retrain #1 of fleet loop" in log, log
    assert "retrain #1 of fleet loop: done" in log and "Traceback" not in log
    evidence = json.loads(seen.read_text())
    (decision,) = evidence["decisions"]
    assert decision["kind"] == "drift" and decision["bundle"] == BUNDLE
    assert "fleet drift" in decision["evidence"]["summary"]
    with Store.open(store) as s:
        (row,) = retrain.retrains(s, "loop")
        (drift,) = s.decisions("loop", kind="drift")
    assert (row.status, row.reason, row.decision_id, row.holder) == ("done", "drift", drift.id, "loop-1")
    assert evidence["retrain"]["id"] == row.id and row.result["stdout"] == "started\n"


def test_a_controller_killed_mid_retrain_leaves_it_to_the_next_one(mqtt_broker, tmp_path):
    """SIGKILL a controller while its (scheduled) retrain runs: the program dies with it; the next controller finds
    the row running with its lease expired, records it failed (controller stopped) and retries it by policy."""
    pid_file = tmp_path / "pid"
    argv = program(tmp_path, "doc = json.load(sys.stdin)\nif doc['retrain']['attempt'] == 1:\n"
                             f"    open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n    time.sleep(60)\n")
    store = f"sqlite:///{tmp_path}/fleet.db"
    config = tmp_path / "fleet.toml"
    config.write_text(f'[broker]\nurl = "{mqtt_broker.url}"\n[store]\nurl = "{store}"\n[controller]\n'
                      f'fleets = ["loop"]\nlease_seconds = 2\n[trigger]\nname = "command"\n'
                      f'command = {json.dumps(argv)}\nevery = "1h"\nretry_after = 0\n')
    first = Controller(tmp_path, "--config", str(config), "--client-id", "loop-a", "--judge-every", "0",
                       name="loop-a").start()
    first.wait_log("retrain #1 of fleet loop started (schedule, attempt 1, trigger command)", timeout=60)
    wait_until(pid_file.exists, timeout=30, what="the program started")
    first.kill()
    pid = int(pid_file.read_text())
    wait_until(lambda: not alive(pid), timeout=10, what=f"the program (pid {pid}) killed with its controller")
    second = Controller(tmp_path, "--config", str(config), "--client-id", "loop-b", "--judge-every", "0",
                        name="loop-b").start()
    second.wait_log("retrain #2 of fleet loop: done", timeout=60)
    assert second.stop() == 0
    assert "retrain #1 of fleet loop was left running by loop-a: controller stopped" in second.log()
    with Store.open(store) as s:
        stopped, retried = retrain.retrains(s, "loop")
    assert (stopped.status, stopped.error, stopped.holder) == ("failed", "controller stopped (loop-a held it)",
                                                               "loop-a")
    assert (retried.status, retried.attempt, retried.holder, retried.reason) == ("done", 2, "loop-b", "schedule")
