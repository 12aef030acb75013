"""The update agent's test harness: keys, a store, releases and the controller's file server (:class:`World`),
a device's scoring loop with its agent (:class:`Device`), and a proxy that cuts a download (:class:`CuttingProxy`).

Everything real: the fleet side's keys and releases, a real HTTP server, a real StreamScorer fed rows without end;
an announcement is handed to :meth:`UpdateAgent.offer` as the MQTT thread would.
"""

from __future__ import annotations

import csv
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
from conftest import run_env
from release_helpers import second_bundle

from edgeml.fleet import keys, releases
from edgeml.fleet.files import FileServer
from edgeml.fleet.store import Store
from edgeml_runtime.drift import DriftSettings
from edgeml_runtime.model import Model
from edgeml_runtime.payloads import utc_now
from edgeml_runtime.protocol.topics import DeviceTopics
from edgeml_runtime.protocol.updates import announcement, release_topic
from edgeml_runtime.run import StreamScorer
from edgeml_runtime.stream import END, Item
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

    def end_loop(self) -> None:
        """Stop feeding and end the scoring loop; the agent is left as it is (as a process that dies leaves it)."""
        self._stop.set()
        self._feeder.join(10)
        self.items.put(END)
        self._loop.join(60)
        assert not self._loop.is_alive()

    def close(self) -> int:
        """Stop feeding, end the loop, stop the agent cleanly; rows fed."""
        self.end_loop()
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


def _refused(d, payload) -> dict:
    before = len(d.steps)
    d.agent.offer(release_topic(FLEET, DEVICE), payload)
    d.wait("failed", "committed", "rolled_back", after=before)
    return d.steps[-1]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "edgeml_runtime.cli", *map(str, args)], capture_output=True,
                          text=True, env=run_env(), timeout=120)


