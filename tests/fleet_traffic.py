"""Fleet traffic for the controller's tests and benchmark: windows in the runtime's envelopes, real publishers,
a broker configured as docs/mosquitto says, and ``edgeml fleet run`` as a subprocess.

>>> w = window("plant-a", "pi-07", session=3, seq=5, columns=10, bins=10)
>>> w["fleet"], w["device"], w["seq"], len(w["columns"]), len(w["columns"]["c0"]["counts"])
('plant-a', 'pi-07', 5, 10, 10)
"""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from broker import Broker

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
#: The broker settings docs/mosquitto/mosquitto.conf raises for the fleet, applied to the test brokers too.
#: The world changed: hotter and harder work (three of the eight inputs; the device verdict needs 30 %).
SHIFT = {"air_temp_c": 5.0, "process_temp_c": 5.0, "torque_nm": 20.0}
#: A policy that decides within seconds: 2 s slices, one drifted slice, three devices reporting 300 rows.
FAST_POLICY = """
[policy]
judge_every = 0.5
slice = "2s"
slices = 60
drifted_slices = 1
recover_slices = 0
min_devices = 3
device_share = 0.5
min_rows = 300
cooldown = "1h"
"""
FLEET_LIMITS = ("max_queued_messages", "max_queued_bytes", "max_inflight_messages", "persistent_client_expiration")


def edgeml(*args, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    """The ``edgeml`` command, its output captured; with ``check``, a non-zero exit fails with its stderr."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    r = subprocess.run([str(BIN / "edgeml"), *map(str, args)], capture_output=True, text=True, env=env,
                       timeout=timeout)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def fleet_limits() -> list[str]:
    """The lines of docs/mosquitto/mosquitto.conf that set :data:`FLEET_LIMITS` (the tests run with them)."""
    lines = (REPO / "docs" / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    found = [ln.strip() for ln in lines if ln.split(" ", 1)[0] in FLEET_LIMITS]
    assert len(found) == len(FLEET_LIMITS), f"docs/mosquitto/mosquitto.conf sets {found}, not all of {FLEET_LIMITS}"
    return found


def fleet_broker(folder: Path) -> Broker:
    """A persistent anonymous Mosquitto on 127.0.0.1 with the fleet's queue limits (not started)."""
    b = Broker(folder, persistence=True)
    port = b.port
    config = "\n".join([f"listener {port} 127.0.0.1", "allow_anonymous true", "log_dest stderr",
                        "log_type error", "log_type warning", "log_type notice", "connection_messages true",
                        "persistence true", f"persistence_location {Path(folder)}/", "autosave_interval 0",
                        *fleet_limits()])
    return Broker(folder, port=port, config=config)


def window(fleet: str, device: str, *, session: int, seq: int, columns: int = 10, bins: int = 10,
           rng: random.Random | None = None) -> dict:
    """A drift window of ``columns`` numeric columns of ``bins`` bins, in the runtime's own envelope."""
    from edgeml_runtime.protocol import envelopes
    from edgeml_runtime.protocol.topics import DeviceTopics

    rng = rng or random.Random(seq)
    base = _examples()["drift"]
    body = {k: v for k, v in base.items() if k not in envelopes.ENVELOPE_KEYS}
    template = base["columns"]["Air temperature [K]"]
    body["columns"] = {f"c{i}": {**template, "counts": [rng.randint(0, 200) for _ in range(bins)]}
                       for i in range(columns)}
    body["rows"] = sum(body["columns"]["c0"]["counts"])
    return envelopes.drift(DeviceTopics(fleet, device), session=session, seq=seq, model=base["model"],
                           outbox_dropped=0, window=body)


@functools.cache
def _examples() -> dict:
    from edgeml_runtime.protocol import examples

    return examples()


def birth(fleet: str, device: str, bd_seq: int = 1) -> dict:
    return {**_examples()["birth"], "fleet": fleet, "device": device, "bdSeq": bd_seq}


def traffic(fleet: str, devices: int, windows: int, *, session: int = 1, columns: int = 10) -> list:
    """(topic, payload) for ``windows`` windows of each of ``devices`` devices, interleaved, births first."""
    out = [(f"edgeml/{fleet}/d{d:04d}/birth", json.dumps(birth(fleet, f"d{d:04d}")).encode()) for d in range(devices)]
    rng = random.Random(0)
    for seq in range(windows):
        for d in range(devices):
            w = window(fleet, f"d{d:04d}", session=session, seq=seq, columns=columns, rng=rng)
            out.append((f"edgeml/{fleet}/d{d:04d}/drift", json.dumps(w).encode()))
    return out


def expected_keys(fleet: str, devices: int, windows: int, session: int = 1) -> set:
    return {(fleet, f"d{d:04d}", session, s) for d in range(devices) for s in range(windows)}


class Publisher:
    """A real paho client (MQTT 5) publishing messages at QoS 1 and waiting for every PUBACK."""

    def __init__(self, url: str, client_id: str, inflight: int = 100):
        import paho.mqtt.client as mqtt

        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(inflight)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.2, 1)
        host, port = url.split("://")[1].rsplit(":", 1)
        self.client.connect(host, int(port), 30)
        self.client.loop_start()

    def send(self, messages, *, pace: float = 0.0, stop: threading.Event | None = None) -> int:
        """Publish each (topic, payload) at QoS 1 (``pace`` seconds apart); wait until all are acknowledged."""
        infos = []
        for topic, payload in messages:
            if stop is not None and stop.is_set():
                break
            infos.append(self.client.publish(topic, payload, qos=1))
            if pace:
                time.sleep(pace)
        deadline = time.monotonic() + 120
        for info in infos:
            while not info.is_published():
                if time.monotonic() > deadline:
                    raise AssertionError(f"{len([i for i in infos if not i.is_published()])} messages unacknowledged")
                time.sleep(0.01)
        return len(infos)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def stored_keys(url: str) -> list:
    """Every stored window's (fleet, device, session, seq), one per row (a duplicate row would show twice)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text("SELECT fleet, device, session, seq FROM windows"))]
    finally:
        engine.dispose()


#: Every controller started, so that one a failing test left running is killed after it (:func:`kill_leftovers`).
STARTED: list = []


def kill_leftovers() -> None:
    """Kill the controllers still running (a test that failed before stopping its own)."""
    while STARTED:
        c = STARTED.pop()
        if c.proc.poll() is None:
            c.kill()


class Controller:
    """``edgeml fleet run`` as a subprocess, its log in a file."""

    def __init__(self, folder: Path, *args: str, name: str = "controller", env: dict | None = None):
        self.log_path = Path(folder) / f"{name}.log"
        self.args = [str(BIN / "edgeml"), "fleet", "run", *args]
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> Controller:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=self.env)
        log.close()
        STARTED.append(self)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, text: str, timeout: float = 30.0, after: int = 0) -> None:
        from broker import wait_until

        def seen():
            if self.proc.poll() is not None and text not in self.log()[after:]:
                raise AssertionError(f"the controller exited with {self.proc.returncode}:\n{self.log()}")
            return text in self.log()[after:]

        wait_until(seen, timeout=timeout, what=f"{text!r} in the controller's log")

    def stop(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def counters(self) -> dict:
        """The outcomes of its final log line (``outcomes: stored=N duplicate=M``)."""
        line = [ln for ln in self.log().splitlines() if "outcomes:" in ln][-1]
        return {k: int(v) for k, v in (p.split("=") for p in line.split("outcomes:")[1].split())}
