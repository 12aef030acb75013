"""The update agent (edgeml_runtime.update.agent) inside a real scoring loop: releases signed by the real keys and
releases of the fleet side, fetched from the controller's real HTTP server, unpacked into slots, self-tested on the
device's engines, swapped into a running StreamScorer and judged by the health gate on its windows.

The MQTT leg (announcements heard on the release topics, steps sent through the outbox) is the end-to-end test's
(test_update_e2e.py); here an announcement is handed to :meth:`UpdateAgent.offer` as the MQTT thread would.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import logging
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from broker import wait_until
from conftest import run_env
from release_helpers import second_bundle

from edgeml.fleet import keys, releases
from edgeml.fleet.files import FileServer
from edgeml.fleet.store import Store
from edgeml_runtime.bundle import read_manifest
from edgeml_runtime.drift import DriftSettings
from edgeml_runtime.errors import UpdateError
from edgeml_runtime.model import Model
from edgeml_runtime.payloads import utc_now
from edgeml_runtime.protocol.topics import DeviceTopics
from edgeml_runtime.protocol.updates import STEPS, announcement, release_topic
from edgeml_runtime.run import StreamScorer
from edgeml_runtime.stream import END, Item
from edgeml_runtime.update import signing
from edgeml_runtime.update.agent import UpdateAgent
from edgeml_runtime.update.options import UpdateOptions

FLEET, DEVICE = "plant-a", "pi-01"
LOG = logging.getLogger("test.update")


class World:
    """Keys, a store, releases and the controller's file server, shared by the module's tests."""

    def __init__(self, base: Path, bundles: dict[str, Path]):
        self.base, self.bundles = base, bundles
        self.keys = keys.init(base / "keys")
        self.store = Store.open(f"sqlite:///{base}/fleet.db")
        self.releases_dir = base / "releases"
        self.server = FileServer(self.releases_dir).start()
        self.made: dict[str, object] = {}

    def release(self, name: str, *, keys_dir: Path | None = None, **kwargs):
        made = releases.make_release(self.store, self.bundles[name], fleet=FLEET, keys_dir=keys_dir or self.keys,
                                     releases_dir=self.releases_dir, **kwargs)
        self.made.setdefault(name, made)  # the first release of each bundle keeps its name
        return made

    def offer(self, record, *, root: dict | None = None, document: dict | None = None, archive: str | None = None,
              rollout: int | None = None) -> bytes:
        folder = Path(record.path)
        message = announcement(FLEET, release=document or record.document,
                               root=root or json.loads((folder / "root.json").read_text()),
                               archive=archive or f"/releases/{FLEET}/{record.version}/bundle.tar.gz",
                               time=utc_now(), device=DEVICE, rollout=rollout)
        return json.dumps(message).encode()

    def close(self):
        self.server.stop()
        self.store.close()


def _broken_bundle(bundle: Path, folder: Path) -> Path:
    """A copy whose stored sample outputs its own model does not reproduce, re-hashed so that it loads: a bundle
    only the self-test catches."""
    copy = folder / "broken"
    shutil.copytree(bundle, copy)
    doc = json.loads((copy / "samples.json").read_text())
    for outputs in doc["expected"].values():
        outputs["labels"] = [outputs["labels"][-1]] + outputs["labels"][:-1]  # every label moved one row down
        outputs["probabilities"] = outputs["probabilities"][::-1]
    (copy / "samples.json").write_text(json.dumps(doc))
    manifest = json.loads((copy / "manifest.json").read_text())
    data = (copy / "samples.json").read_bytes()
    manifest["samples"].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    manifest["version"] = "99"
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return copy


@pytest.fixture(scope="module")
def world(demo_bundle, tmp_path_factory):
    base = tmp_path_factory.mktemp("ota")
    w = World(base, {"one": demo_bundle, "two": second_bundle(demo_bundle, base),
                     "broken": _broken_bundle(demo_bundle, base)})
    w.release("one")
    w.release("two")
    yield w
    w.close()


@pytest.fixture(scope="module")
def records(demo_rows) -> list[dict]:
    with open(demo_rows, newline="") as f:
        return list(csv.DictReader(f))


class CuttingProxy:
    """A TCP proxy in front of the file server that cuts its first answer after ``cut`` bytes; the requests'
    first lines and Range headers it saw are kept."""

    def __init__(self, target: str, cut: int):
        self.target = target.removeprefix("http://").rsplit(":", 1)
        self.cut, self.requests, self.cuts = cut, [], 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(client,), daemon=True).start()

    def _one(self, client):
        with client, socket.create_connection((self.target[0], int(self.target[1]))) as upstream:
            request = client.recv(65536)
            head = request.decode("latin-1").split("\r\n")
            self.requests.append((head[0], next((h for h in head if h.lower().startswith("range:")), None)))
            upstream.sendall(request)
            limit = self.cut if self.cuts == 0 and "bundle.tar.gz" in head[0] else None
            if limit is not None:
                self.cuts += 1
            sent = 0
            while True:
                data = upstream.recv(65536)
                if not data:
                    return
                if limit is not None and sent + len(data) >= limit:
                    client.sendall(data[:limit - sent])
                    return  # cut: the connection closes mid-body
                client.sendall(data)
                sent += len(data)

    def close(self):
        self.sock.close()


class Device:
    """A device's scoring loop (StreamScorer on a thread, fed rows without end) with its update agent."""

    def __init__(self, folder: Path, world: World, bundle: Path, records: list[dict], *, server: str | None = None,
                 retry_delays=(0.2, 0.2), **options):
        self.options = UpdateOptions(root_key=str(world.keys / "root.pub"), folder=str(folder),
                                     server=server or world.server.url, **options)
        self.agent = UpdateAgent(self.options, DeviceTopics(FLEET, DEVICE), log=LOG, retry_delays=retry_delays)
        self.steps: list[dict] = []
        self.windows: list[tuple[int, str]] = []
        start = self.agent.startup(bundle)
        self.scorer = StreamScorer(self.load(start), None, log=LOG)
        self.scorer.sinks.listeners.append(lambda w, identity: self.windows.append((w["rows"] + w["bad_rows"],
                                                                                   identity)))
        self.items: queue.Queue = queue.Queue(maxsize=64)
        self.fed = 0
        self._stop = threading.Event()
        self._records = records
        self._loop = threading.Thread(target=self.scorer.run, args=(self.items, threading.Event()))
        self._feeder = threading.Thread(target=self._feed)
        self._loop.start()
        self._feeder.start()
        self.agent.attach(lambda path: self.scorer.swap(self.load(path), timeout=30), self.scorer.sinks,
                          self.steps.append)

    @staticmethod
    def load(path) -> Model:
        model = Model.load(path)
        model.monitor = model.drift_monitor(DriftSettings(window_rows=100, window_seconds=3600))
        return model

    def _feed(self):
        while not self._stop.is_set():
            try:
                self.items.put(Item(self.fed + 1, self._records[self.fed % len(self._records)]), timeout=0.1)
                self.fed += 1
            except queue.Full:
                continue
            time.sleep(0.0005)

    def identity(self) -> str:
        return self.scorer.model.manifest.identity

    def wait(self, *steps: str, timeout: float = 60, after: int = 0) -> list[str]:
        """The steps so far, once the last is one of ``steps`` (and more than ``after`` were reported)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.steps) > after and self.steps[-1]["step"] in steps:
                return [s["step"] for s in self.steps]
            time.sleep(0.05)
        raise AssertionError(f"no step {steps} within {timeout} s; steps so far: {self.said()}")

    def said(self) -> list[tuple]:
        return [(s["release"], s["step"], s["refusal"]) for s in self.steps]

    def close(self) -> int:
        """Stop feeding, end the loop; rows fed."""
        self._stop.set()
        self._feeder.join(10)
        self.items.put(END)
        self._loop.join(60)
        assert not self._loop.is_alive()
        self.agent.stop()
        return self.fed


@pytest.fixture
def device(tmp_path, world, records):
    made = []

    def make(bundle=None, folder=None, **options):
        d = Device(folder or tmp_path / "update", world, bundle or world.bundles["one"], records, **options)
        made.append(d)
        return d

    yield make
    for d in made:
        if d._loop.is_alive():
            d.close()


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


# -- a download cut, a server away -----------------------------------------------------------------------

def test_a_download_cut_mid_way_resumes_with_the_rest_only(device, world):
    size = Path(world.made["two"].path, "bundle.tar.gz").stat().st_size
    proxy = CuttingProxy(world.server.url, cut=size // 2)  # the headers and less than half the archive
    try:
        d = device(server=proxy.url)
        d.agent.offer(release_topic(FLEET, DEVICE), world.offer(world.made["two"]))
        assert d.wait("committed", "failed", "rolled_back")[-1] == "committed", d.said()
        gets = [r for r in proxy.requests if "bundle.tar.gz" in r[0]]
        assert proxy.cuts == 1 and len(gets) == 2, proxy.requests
        assert gets[0][1] is None and gets[1][1] is not None  # the second asked for the rest only
        have = int(gets[1][1].split("=")[1].rstrip("-"))
        assert 0 < have < size // 2
        d.close()
    finally:
        proxy.close()


def test_a_server_out_of_reach_keeps_the_release_downloading_not_failed(device, world):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there once closed
    d = device(server=dead)
    d.agent.offer(release_topic(FLEET, DEVICE), world.offer(world.made["two"]))
    wait_until(lambda: d.steps and d.steps[-1]["reason"], 30, what="the download's reason to wait")
    assert [s["step"] for s in d.steps] == ["offered", "verifying", "downloading", "downloading"]
    assert "3 attempt(s)" in d.steps[-1]["reason"] and d.steps[-1]["refusal"] is None  # not final: a wave waits
    assert 2 not in d.agent.trust.failed  # not the release's fault
    # the server back (the device's setting fixed), the release heard again: installed
    d.agent.options = UpdateOptions(root_key=d.options.root_key, folder=d.options.folder, server=world.server.url)
    before = len(d.steps)
    d.agent.offer(release_topic(FLEET, DEVICE), world.offer(world.made["two"]))
    assert d.wait("committed", "failed", "rolled_back", after=before)[-1] == "committed", d.said()
    d.close()


def test_a_bad_copy_on_the_server_waits_and_the_unsigned_archive_path_is_not_believed(device, world):
    d = device()
    fresh = world.release("two")  # a release of its own: its served copy is damaged here
    served = Path(fresh.path) / "bundle.tar.gz"
    good = served.read_bytes()
    served.write_bytes(good + b"\0" * 512)  # re-hashed by nobody: the signed size and SHA-256 no longer hold
    d.agent.offer(release_topic(FLEET, DEVICE), world.offer(fresh))
    wait_until(lambda: d.steps and d.steps[-1]["reason"], 30, what="the download's reason to wait")
    assert d.steps[-1]["step"] == "downloading" and "changed after the release was signed" in d.steps[-1]["reason"]
    assert fresh.version not in d.agent.trust.failed
    served.write_bytes(good)  # the server's copy mended; an announcement pointing elsewhere is not followed
    before = len(d.steps)
    d.agent.offer(release_topic(FLEET, DEVICE), world.offer(fresh, archive=f"/releases/{FLEET}/999/bundle.tar.gz"))
    assert d.wait("committed", "failed", "rolled_back", after=before)[-1] == "committed", d.said()
    d.close()


# -- what is refused, and why -------------------------------------------------------------------------

def _refused(d, payload) -> dict:
    before = len(d.steps)
    d.agent.offer(release_topic(FLEET, DEVICE), payload)
    d.wait("failed", "committed", "rolled_back", after=before)
    return d.steps[-1]


def test_tampered_forged_older_and_foreign_releases_are_refused_with_their_reason(device, world):
    d = device()
    two = world.made["two"]
    # a tampered release: the bundle's hash changed after signing
    doc = json.loads(json.dumps(two.document))
    doc["signed"]["bundle"]["sha256"] = "0" * 64
    assert _refused(d, world.offer(two, document=doc))["refusal"] == "bad_signature"
    # a release signed by a key the root does not list (a forger's own)
    forger, _ = signing.generate()
    forged = signing.sign(dict(two.document["signed"], version=50), forger)
    assert _refused(d, world.offer(two, document=forged))["refusal"] == "unknown_key"
    # a release for another fleet
    other = releases.make_release(world.store, world.bundles["two"], fleet="plant-b", keys_dir=world.keys,
                                  releases_dir=world.releases_dir)
    assert _refused(d, world.offer(other))["refusal"] == "other_fleet"
    d.close()


def test_an_older_version_is_refused_once_a_higher_one_is_trusted(device, world):
    d = device()
    three = world.release("two")  # a new, higher release of the same bundle
    d.agent.offer(release_topic(FLEET, DEVICE), world.offer(three))
    assert d.wait("committed", "failed", "rolled_back")[-1] == "committed", d.said()
    assert d.agent.trust.release_version == three.version
    assert _refused(d, world.offer(world.made["one"]))["refusal"] == "old_version"  # on the device's own topic
    # the fleet's topic keeps its last release retained for devices that missed it: old news here, not a refusal
    before = len(d.steps)
    d.agent.offer(release_topic(FLEET), world.offer(world.made["one"]))
    time.sleep(0.3)
    assert len(d.steps) == before
    d.close()


def test_a_rotated_release_key_is_trusted_and_a_revoked_one_refused(device, world, tmp_path):
    d = device()
    old_key_release = world.made["two"]
    rotated = tmp_path / "keys"
    shutil.copytree(world.keys, rotated)
    keys.rotate(rotated, revoke_old=True)
    root_v2 = keys.root_envelope(rotated)
    # the old key's release checked against the new root: revoked
    assert _refused(d, world.offer(old_key_release, root=root_v2))["refusal"] == "revoked_key"
    # a release signed by the new key installs, with no change on the device (it holds the root key only)
    new = world.release("two", keys_dir=rotated)
    before = len(d.steps)
    d.agent.offer(release_topic(FLEET, DEVICE), world.offer(new, root=root_v2))
    assert d.wait("committed", "failed", "rolled_back", after=before)[-1] == "committed", d.said()
    assert d.agent.trust.root_version == 2
    # the old root (version 1, still listing the revoked key) is no longer taken
    assert _refused(d, world.offer(world.release("two")))["refusal"] in ("old_root", "revoked_key")
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
    d._stop.set()
    d._feeder.join(10)
    d.items.put(END)
    d._loop.join(30)
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
    d._stop.set()
    d._feeder.join(10)
    d.items.put(END)
    d._loop.join(30)
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

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "edgeml_runtime.cli", *map(str, args)], capture_output=True,
                          text=True, env=run_env(), timeout=120)


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
