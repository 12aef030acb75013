"""The update agent (edgeml_runtime.update.agent) inside a real scoring loop: releases signed by the real keys and
releases of the fleet side, fetched from the controller's real HTTP server, unpacked into slots, self-tested on the
device's engines, swapped into a running StreamScorer and judged by the health gate on its windows; restarts while
a release is on test; a release installed by hand (the harness: tests/update_helpers.py).

The MQTT leg (announcements heard on the release topics, steps sent through the outbox) is the end-to-end test's
(test_update_e2e.py). What is refused, and a download cut or a server away: test_update_refusals.py.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import time
from pathlib import Path

import pytest
import update_helpers
from broker import wait_until
from update_helpers import DEVICE, FLEET, LOG, Device, _cli, _refused

from edgeml.fleet import keys
from edgeml_runtime.bundle import read_manifest
from edgeml_runtime.errors import UpdateError
from edgeml_runtime.protocol.topics import DeviceTopics
from edgeml_runtime.protocol.updates import STEPS, release_topic
from edgeml_runtime.update.agent import UpdateAgent
from edgeml_runtime.update.options import UpdateOptions

# -- the whole way, and the health gate ---------------------------------------------------------------

def test_a_release_is_fetched_tested_swapped_in_judged_and_committed(device, world):
    d = device()
    one, two = read_manifest(world.bundles["one"]).identity, read_manifest(world.bundles["two"]).identity
    assert d.identity() == one
    d.agent.offer(release_topic(FLEET, DEVICE), world.offer(world.made["two"], rollout=7))
    assert d.wait("committed", "failed", "rolled_back") == ["offered", "verifying", "downloading", "testing",
                                                            "active", "committed"]
    assert {s["release"] for s in d.steps} == {2}
    # the rollout id is unsigned: it goes with the steps only once the release verified
    assert [s["rollout"] for s in d.steps] == [None, None, 7, 7, 7, 7]
    assert {s["bundle"] for s in d.steps} == {two}
    health = d.steps[-1]["health"]
    assert health["windows"] >= 2 and health["rows"] >= 200 and health["bad"] == 0 and 0 < health["latency_ms"] < 50
    assert d.identity() == two
    state = d.agent.slots.state
    assert state["active"]["version"] == 2 and state["pending"] is None
    assert d.agent.trust.release_version == 2
    assert not (Path(d.options.folder) / "pending-release.json").exists()
    fed = d.close()
    assert d.scorer.stats.rows == fed == d.scorer.stats.scored  # rows in = rows scored, across the swap
    assert sum(n for n, _ in d.windows) == fed  # each row in exactly one window
    assert {i for _, i in d.windows} == {one, two}
    # heard again (announcements are retained: every reconnect repeats them): passed over without a word
    before = len(d.steps)
    d.agent.attach(lambda path: None, d.scorer.sinks, d.steps.append)
    d.agent.offer(release_topic(FLEET, DEVICE), world.offer(world.made["two"], rollout=7))
    time.sleep(0.3)
    assert len(d.steps) == before
    d.agent.stop()

#: The harness's fixtures (tests/update_helpers.py), used by name below.
world, records, device = update_helpers.world, update_helpers.records, update_helpers.device


def test_a_failing_health_gate_rolls_back_and_the_release_is_never_retried(device, world, tmp_path):
    slow = world.release("two", health={"max_latency_ms": 1e-6})  # no engine scores a row in a nanosecond
    d = device()
    one = read_manifest(world.bundles["one"]).identity
    d.agent.offer(release_topic(FLEET, DEVICE), world.offer(slow))
    steps = d.wait("committed", "failed", "rolled_back")
    assert steps[-2:] == ["active", "rolled_back"], d.said()
    assert "latency" in d.steps[-1]["reason"] and d.steps[-1]["health"]["windows"] >= 1
    deadline = time.monotonic() + 10
    while d.identity() != one and time.monotonic() < deadline:
        time.sleep(0.05)
    assert d.identity() == one
    assert slow.version in d.agent.trust.failed and d.agent.trust.rollbacks == 1
    assert d.agent.slots.state["pending"] is None
    before = len(d.steps)
    d.agent.offer(release_topic(FLEET, DEVICE), world.offer(slow))
    time.sleep(0.5)
    assert len(d.steps) == before  # a release that failed is never retried
    fed = d.close()
    assert d.scorer.stats.scored == fed and sum(n for n, _ in d.windows) == fed


def test_a_bundle_whose_self_test_fails_is_not_switched_in_nor_retried(device, world):
    broken = world.release("broken")
    d = device()
    d.agent.offer(release_topic(FLEET, DEVICE), world.offer(broken))
    assert d.wait("committed", "failed", "rolled_back")[-2:] == ["testing", "failed"]
    assert "self-test" in d.steps[-1]["reason"] and d.steps[-1]["refusal"] is None
    assert d.identity() == read_manifest(world.bundles["one"]).identity
    assert d.agent.slots.state["pending"] is None and broken.version in d.agent.trust.failed
    before = len(d.steps)
    d.agent.offer(release_topic(FLEET, DEVICE), world.offer(broken))
    time.sleep(0.3)
    assert len(d.steps) == before
    d.close()


def test_past_the_rollback_cap_releases_wait_for_one_installed_by_hand(device, world):
    d = device(max_rollbacks=0)
    d.agent.offer(release_topic(FLEET, DEVICE), world.offer(world.made["two"]))
    d.wait("failed")
    assert "update_max_rollbacks" in d.steps[-1]["reason"]
    d.close()


def test_a_release_heard_while_another_is_on_test_waits_for_its_verdict(device, world):
    d = device()
    slow = world.release("two", health={"min_windows": 3})
    after = world.release("one")  # a higher release, heard while slow is on test
    d.agent.offer(release_topic(FLEET, DEVICE), world.offer(slow))
    d.wait("active")
    d.agent.offer(release_topic(FLEET, DEVICE), world.offer(after))
    wait_until(lambda: d.said()[-1] == (after.version, "committed", None), 60, what="the waiting release's turn")
    said = d.said()
    assert [v for v, step, _ in said if step == "committed"] == [slow.version, after.version]
    # judged as itself, not replaced on test: the later release was taken up only after the verdict
    assert said.index((slow.version, "committed", None)) < said.index((after.version, "offered", None))
    d.close()


def test_a_root_that_revokes_a_key_is_kept_even_when_its_release_then_fails(device, world, tmp_path):
    d = device()
    rotated = tmp_path / "keys"
    shutil.copytree(world.keys, rotated)
    keys.rotate(rotated, revoke_old=True)
    broken = world.release("broken", keys_dir=rotated)  # signed by the new key, fails its self-test
    d.agent.offer(release_topic(FLEET, DEVICE), world.offer(broken, root=keys.root_envelope(rotated)))
    assert d.wait("committed", "failed", "rolled_back")[-1] == "failed"
    assert d.agent.trust.root_version == 2  # the revocation holds from now on
    assert _refused(d, world.offer(world.release("two")))["refusal"] in ("old_root", "revoked_key")
    d.close()


def test_a_stop_during_an_install_leaves_the_release_untried_not_failed(world, records, tmp_path):
    d = Device(tmp_path / "update", world, world.bundles["one"], records)
    d.agent._halt.set()  # the process is stopping while the release is fetched and tested
    d.agent.offer(release_topic(FLEET, DEVICE), world.offer(world.made["two"]))
    wait_until(lambda: d.steps and d.steps[-1]["step"] == "downloading", 30, what="the download")
    time.sleep(0.5)
    assert 2 not in d.agent.trust.failed and d.agent.slots.state["pending"] is None
    assert d.said()[-1][1] not in ("failed", "rolled_back")
    d.close()


def test_an_exception_while_on_test_counts_a_crash(world, records, tmp_path):
    folder = tmp_path / "update"
    d = Device(folder, world, world.bundles["one"], records)
    release = world.release("two", health={"min_windows": 10_000, "min_rows": 10_000_000})
    d.agent.offer(release_topic(FLEET, DEVICE), world.offer(release))
    d.wait("active")
    d.end_loop()
    d.agent.stop(clean=False)  # what run and serve do when they end on an exception
    d.agent._lock.close()
    again = UpdateAgent(d.options, DeviceTopics(FLEET, DEVICE), log=LOG)
    started = again.startup(world.bundles["one"])
    assert read_manifest(started).identity == read_manifest(world.bundles["one"]).identity
    assert again._early[-1]["step"] == "rolled_back" and "restarted 1 time" in again._early[-1]["reason"]


# -- restarts -------------------------------------------------------------------------------------------

def test_a_restart_while_on_test_counts_a_crash_and_past_the_limit_rolls_back(world, records, tmp_path):
    folder = tmp_path / "update"
    d = Device(folder, world, world.bundles["one"], records)
    release = world.release("two", health={"min_windows": 10_000, "min_rows": 10_000_000})  # never judged here
    d.agent.offer(release_topic(FLEET, DEVICE), world.offer(release))
    d.wait("active")
    d.end_loop()
    # no agent.stop(): the process "crashed"; the next start counts it
    d.agent._lock.close()
    again = UpdateAgent(d.options, DeviceTopics(FLEET, DEVICE), log=LOG)
    started = again.startup(world.bundles["one"])
    assert read_manifest(started).identity == read_manifest(world.bundles["one"]).identity
    assert again.slots.state["pending"] is None and release.version in again.trust.failed
    assert again._early[-1]["step"] == "rolled_back" and "restarted 1 time" in again._early[-1]["reason"]


def test_a_clean_stop_while_on_test_is_no_crash(world, records, tmp_path):
    folder = tmp_path / "update"
    d = Device(folder, world, world.bundles["one"], records)
    release = world.release("two", health={"min_windows": 10_000, "min_rows": 10_000_000})
    d.agent.offer(release_topic(FLEET, DEVICE), world.offer(release))
    d.wait("active")
    d.close()  # agent.stop() marks the bundle on test as stopped cleanly
    d.agent._lock.close()
    again = UpdateAgent(d.options, DeviceTopics(FLEET, DEVICE), log=LOG)
    started = again.startup(world.bundles["one"])
    assert read_manifest(started).identity == read_manifest(world.bundles["two"]).identity  # still on test
    assert again.slots.state["pending"]["crashes"] == 0


# -- by hand --------------------------------------------------------------------------------------------

def test_edgeml_runtime_update_installs_a_copied_release_under_the_same_checks(world, tmp_path, records):
    folder = tmp_path / "update"
    usb = tmp_path / "usb"
    shutil.copytree(world.made["two"].path, usb)
    flags = ["--device-id", DEVICE, "--fleet", FLEET, "--update-root-key", world.keys / "root.pub",
             "--update-dir", folder]
    done = _cli("update", usb, *flags, "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["installed"] and out["release"] == 2
    assert [s["step"] for s in out["steps"]] == ["verifying", "testing"]
    assert Path(out["slot"]).name == "2"
    again = _cli("update", usb / "release.json", *flags)  # the same version again: not above the highest trusted
    assert again.returncode == 2 and "not installed" in again.stderr, again.stderr
    assert "Traceback" not in again.stderr
    # a copy with a damaged archive is refused with the file named
    bad = tmp_path / "bad"
    shutil.copytree(world.made["two"].path, bad)
    with (bad / "bundle.tar.gz").open("ab") as f:
        f.write(b"x")
    other = tmp_path / "other-device"
    refused = _cli("update", bad, "--device-id", DEVICE, "--fleet", FLEET, "--update-root-key",
                   world.keys / "root.pub", "--update-dir", other)
    assert refused.returncode == 2 and "bundle.tar.gz" in refused.stderr and "Traceback" not in refused.stderr
    missing = _cli("update", tmp_path / "nowhere", *flags)
    assert missing.returncode == 2 and "is not a release folder" in missing.stderr
    # the next start of the device process runs it on test and judges it
    d = Device(folder, world, world.bundles["one"], records)
    assert d.identity() == read_manifest(world.bundles["two"]).identity
    assert d.wait("committed", "rolled_back")[-1] == "committed"
    d.close()


def test_only_one_process_works_on_the_update_folder(world, tmp_path):
    folder = tmp_path / "update"
    options = UpdateOptions(root_key=str(world.keys / "root.pub"), folder=str(folder))
    running = UpdateAgent(options, DeviceTopics(FLEET, DEVICE))
    running.startup(world.bundles["one"])
    with open(folder / "lock") as held:
        with pytest.raises(OSError):
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    done = _cli("update", world.made["two"].path, "--device-id", DEVICE, "--fleet", FLEET, "--update-root-key",
                world.keys / "root.pub", "--update-dir", folder)
    assert done.returncode == 2 and "in use by another edgeml-runtime process" in done.stderr
    running._lock.close()


def test_every_step_reported_is_a_protocol_step():
    assert set(STEPS) >= {"offered", "verifying", "downloading", "testing", "active", "committed", "failed",
                          "rolled_back"}
    with pytest.raises(UpdateError):
        UpdateAgent(UpdateOptions(root_key="/nonexistent/root.pub"), DeviceTopics(FLEET, DEVICE))

