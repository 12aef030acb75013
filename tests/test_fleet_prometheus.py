"""The controller's ``/metrics`` scraped by a real Prometheus, and its label sets bounded.

End to end: a real Mosquitto, the real controller (``edgeml fleet run --http``, a SQLite store), three real
``edgeml-runtime run`` devices fed rows slowly on stdin (so they stay online and close windows), and a real
Prometheus (``/usr/bin/prometheus``, which ``make system-deps`` installs) scraping the controller every second on
a port of its own. Its HTTP API must see three devices online, the target up, windows stored; one device stopped
cleanly (end of input: it sends its death) leaves two.

Bounded labels: of a fleet of many devices, only those the judgement flags as anomalies are a ``device`` label,
on ``edgeml_fleet_anomaly`` alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import fleet_traffic
import pytest
from broker import free_port, require_mosquitto, wait_until
from conftest import BIN, run_env
from fleet_helpers import birth
from fleet_traffic import Controller, fleet_broker
from prometheus_client.parser import text_string_to_metric_families
from test_fleet_judge import BUNDLE, DEVICES, MANIFEST, POLICY, SLICE, T0, run, stream

from edgeml.fleet.judge import fleet_state
from edgeml.fleet.metrics import render
from edgeml.fleet.store import Store

FLEET = "plant-a"
NAMES = ("p1", "p2", "p3")
JOB = "edgeml-fleet"
WINDOW_ROWS = 50
ROWS_PER_SECOND = 100


def prometheus_path() -> str | None:
    return shutil.which("prometheus", path=f"{os.environ.get('PATH', '')}:/usr/bin:/usr/sbin")


def _rows(seed: int) -> list[str]:
    from edgeml.data.demo import demo_frame

    frame = demo_frame(rows=500, seed=seed, label=False)
    return [json.dumps(r) + "\n" for r in frame.astype(str).to_dict("records")]


class Device:
    """``edgeml-runtime run`` fed :data:`ROWS_PER_SECOND` rows a second on stdin until :meth:`stop` closes it."""

    def __init__(self, name: str, folder: Path, bundle: Path, broker_url: str):
        self.name, self.folder = name, folder / name
        self.folder.mkdir()
        self.command = [str(BIN / "edgeml-runtime"), "run", str(bundle), "--fleet", FLEET, "--device-id", name,
                        "--broker", broker_url, "--outbox", str(self.folder / "outbox.db"),
                        "--window-rows", str(WINDOW_ROWS)]
        self.rows = _rows(int(name[1:]))
        self._stop = threading.Event()

    def start(self) -> Device:
        self.log = open(self.folder / "device.log", "ab")
        self.proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=self.log, env=run_env())
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()
        return self

    def _feed(self) -> None:
        sent, batch = 0, ROWS_PER_SECOND // 10
        try:
            while not self._stop.is_set():
                self.proc.stdin.write("".join(self.rows[(sent + i) % len(self.rows)] for i in range(batch)).encode())
                self.proc.stdin.flush()
                sent += batch
                time.sleep(0.1)
        except (BrokenPipeError, ValueError):
            pass  # the process ended or stdin was closed

    def stop(self) -> int:
        """End of input: the device flushes, sends its death and exits; its exit code."""
        self._stop.set()
        self._thread.join(10)
        self.proc.stdin.close()
        code = self.proc.wait(30)
        self.log.close()
        return code

    def kill(self) -> None:
        self._stop.set()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._thread.join(10)
        self.log.close()

    def text(self) -> str:
        return (self.folder / "device.log").read_text(errors="replace")


class Prometheus:
    """A real Prometheus on a free port of 127.0.0.1, scraping ``target`` (host:port) every second."""

    def __init__(self, binary: str, folder: Path, target: str):
        self.folder, self.port = folder, free_port()
        folder.mkdir()
        config = folder / "prometheus.yml"
        config.write_text(f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                          f"scrape_configs:\n  - job_name: {JOB}\n    metrics_path: /metrics\n"
                          f"    static_configs:\n      - targets: ['{target}']\n")
        self.command = [binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
                        f"--web.listen-address=127.0.0.1:{self.port}"]
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> Prometheus:
        self.log = open(self.folder / "prometheus.log", "ab")
        self.proc = subprocess.Popen(self.command, stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        wait_until(self._ready, 30, what="prometheus ready", interval=0.2)
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.proc.returncode}:\n{self.text()[-3000:]}")
        try:
            return urllib.request.urlopen(self.url + "/-/ready", timeout=2).status == 200
        except OSError:
            return False

    def query(self, promql: str) -> list[dict]:
        """The instant vector of ``promql`` from ``/api/v1/query``: [{"metric": {...}, "value": [t, "v"]}]."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        reply = json.loads(urllib.request.urlopen(url, timeout=10).read())
        assert reply["status"] == "success", reply
        assert reply["data"]["resultType"] == "vector", reply
        return reply["data"]["result"]

    def value(self, promql: str) -> float | None:
        """The value of ``promql``'s one sample, or None while there is none."""
        result = self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()

    def text(self) -> str:
        return (self.folder / "prometheus.log").read_text(errors="replace")


@pytest.fixture
def prometheus_binary() -> str:
    path = prometheus_path()
    if path is None:
        pytest.skip("prometheus not found (not on PATH, not /usr/bin/prometheus); make system-deps installs it")
    return path


def test_a_real_prometheus_scrapes_devices_online_and_windows(tmp_path, demo_bundle, prometheus_binary):
    require_mosquitto()
    broker = fleet_broker(tmp_path / "mosquitto").start()
    port = free_port()
    controller = Controller(tmp_path, "--broker", broker.url, "--store", f"sqlite:///{tmp_path / 'fleet.db'}",
                            "--fleet", FLEET, "--releases", str(tmp_path / "releases"), "--client-id", "prom-1",
                            "--http", f"127.0.0.1:{port}").start()
    devices: list[Device] = []
    prometheus = None
    try:
        controller.wait_log("subscribed to", 60)
        devices = [Device(name, tmp_path, demo_bundle, broker.url).start() for name in NAMES]
        prometheus = Prometheus(prometheus_binary, tmp_path / "prometheus", f"127.0.0.1:{port}").start()
        online = f'edgeml_fleet_devices_online{{job="{JOB}",fleet="{FLEET}"}}'
        wait_until(lambda: prometheus.value(online) == 3, 30, what="prometheus to see 3 devices online",
                   interval=0.5)
        assert prometheus.value(f'up{{job="{JOB}"}}') == 1
        windows = f'edgeml_fleet_windows_stored_total{{job="{JOB}",fleet="{FLEET}"}}'
        wait_until(lambda: (prometheus.value(windows) or 0) > 0, 30, what="prometheus to see windows stored",
                   interval=0.5)
        assert prometheus.value(f'edgeml_fleet_devices{{job="{JOB}",fleet="{FLEET}"}}') == 3
        # the series Prometheus holds carry the labels /metrics wrote, and no device among them
        series = prometheus.query(f'{{job="{JOB}",__name__=~"edgeml_fleet_.+"}}')
        assert series and all("device" not in s["metric"] for s in series), series
        gone = devices[0]
        assert gone.stop() == 0, gone.text()[-3000:]
        wait_until(lambda: prometheus.value(online) == 2, 30, what="prometheus to see 2 devices online",
                   interval=0.5)
        assert prometheus.value(f'edgeml_fleet_devices{{job="{JOB}",fleet="{FLEET}"}}') == 3  # known, not online
    finally:
        for d in devices:
            if d.proc.poll() is None:
                d.kill()
        if prometheus is not None:
            prometheus.stop()
        fleet_traffic.STARTED.remove(controller)
        code = controller.stop()
        broker.stop()
    assert code == 0, controller.log()[-3000:]


def test_only_anomalies_carry_a_device_label(tmp_path):
    """Forty devices, one broken (its windows off from slice 5): one ``device`` label, on the anomaly alone."""
    devices = [*DEVICES, *(f"pi-{i}" for i in range(len(DEVICES), 40))]
    with Store.open(f"sqlite:///{tmp_path}/fleet.db") as store:
        store.add_bundle(BUNDLE, MANIFEST, "test")
        for bd_seq, device in enumerate(devices, 1):
            store.record_birth(*birth(device, bd_seq, BUNDLE))
        stream(store, range(10), lambda d, k: 0.0, devices=[d for d in devices if d != "pi-3"])
        stream(store, range(10), lambda d, k: 10.0 if k >= 5 else 0.0, devices=["pi-3"], rows=1000, seed=1)
        assert run(store, POLICY, range(10)) == [(7, "anomaly", "pi-3")]
        text = render(store, POLICY, now=T0 + SLICE * 10 + 1.0)
        anomalies = sorted(fleet_state(store.decisions(FLEET))[BUNDLE]["anomalies"])
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    labelled = [(s.name, s.labels["device"]) for s in samples if "device" in s.labels]
    assert labelled == [("edgeml_fleet_anomaly", "pi-3")] and anomalies == ["pi-3"]
    by_name = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples}
    assert by_name[("edgeml_fleet_devices", (("fleet", FLEET),))] == 40
    assert by_name[("edgeml_fleet_devices_online", (("fleet", FLEET),))] == 40
    assert by_name[("edgeml_fleet_windows_stored_total", (("fleet", FLEET),))] == 400
    assert len(samples) < 40, f"{len(samples)} samples for 40 devices: a series per device somewhere"


def test_the_metric_table_of_docs_monitoring_lists_every_metric_with_its_type():
    from edgeml.fleet.metrics import METRICS

    lines = (Path(__file__).resolve().parents[1] / "docs" / "monitoring.md").read_text().splitlines()
    rows = [[cell.strip() for cell in ln.strip("|").split("|")] for ln in lines if ln.startswith("| `edgeml_")]
    assert [(name.strip("`"), kind) for name, kind, *_ in rows] == [(name, kind) for name, kind, _ in METRICS]
