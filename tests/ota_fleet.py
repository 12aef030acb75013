"""The OTA end-to-end test's devices: real `edgeml-runtime run` processes fed rows without pause on stdin, and one
`edgeml-runtime serve` under a steady request load, each provisioned with the root public key only
(tests/test_update_e2e.py). What each was sent is counted, to compare with what its windows counted.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import threading
import time

from broker import free_port, wait_until
from conftest import BIN, run_env

FLEET = "plant-a"
RUNNERS = ("d1", "d2", "d3", "d4")
SERVER = "d5"
CUT = "d4"  # fetches through a proxy that cuts its first download mid-way
DEVICES = (*RUNNERS, SERVER)
WINDOW_ROWS = 100
ROWS_PER_SECOND = 400


def _rows(seed: int) -> list[str]:
    from edgeml.data.demo import demo_frame

    frame = demo_frame(rows=2_000, seed=seed, label=False)
    return [json.dumps(r) + "\n" for r in frame.astype(str).to_dict("records")]


class Device:
    """One device process, its update state in ``folder``; rows fed (run) or requests sent (serve) counted."""

    def __init__(self, name: str, fleet: dict):
        self.name, self.fleet = name, fleet
        self.folder = fleet["tmp"] / name
        self.folder.mkdir(exist_ok=True)
        self.sent = 0
        self.failed_requests: list[str] = []
        self.proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rows = _rows(100 + int(name[1:]))
        self.port = free_port() if name == SERVER else None

    def command(self) -> list[str]:
        f = self.fleet
        common = ["--fleet", FLEET, "--device-id", self.name, "--broker", f["broker"].url,
                  "--outbox", str(self.folder / "outbox.db"), "--window-rows", str(WINDOW_ROWS),
                  "--update-root-key", str(f["keys"] / "root.pub"),
                  "--update-server", f["proxy"].url if self.name == CUT else f["http"],
                  "--update-dir", str(self.folder / "update")]
        if self.name == SERVER:
            return [str(BIN / "edgeml-runtime"), "serve", str(f["bundle"]), "--port", str(self.port),
                    "--window-seconds", "1", *common]
        return [str(BIN / "edgeml-runtime"), "run", str(f["bundle"]), *common]

    def start(self) -> Device:
        self._stop.clear()
        self.log = open(self.folder / "device.log", "ab")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=self.log, env=run_env())
        self._thread = threading.Thread(target=self._requests if self.name == SERVER else self._feed, daemon=True)
        self._thread.start()
        return self

    def _feed(self) -> None:
        batch = ROWS_PER_SECOND // 20
        try:
            while not self._stop.is_set():
                lines = [self._rows[(self.sent + i) % len(self._rows)] for i in range(batch)]
                self.proc.stdin.write("".join(lines).encode())
                self.proc.stdin.flush()
                self.sent += batch
                time.sleep(0.05)
        except (BrokenPipeError, ValueError):
            pass  # the process was killed

    def _requests(self) -> None:
        wait_until(lambda: self._listening(), 60, what=f"{self.name} serving")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        records = [json.loads(r) for r in self._rows[:10]]
        body = json.dumps(records)
        while not self._stop.is_set():
            try:
                conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
                reply = conn.getresponse()
                data = reply.read()
            except (OSError, http.client.HTTPException) as exc:
                if self._stop.is_set() or self.proc.poll() is not None:
                    return
                self.failed_requests.append(repr(exc))
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                continue
            if reply.status == 200:
                self.sent += len(records)
            else:
                self.failed_requests.append(f"{reply.status} {data[:200]!r}")
            time.sleep(0.02)

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> int:
        """A clean stop (end of input, or SIGTERM for serve); the exit code."""
        self._stop.set()
        self._thread.join(30)
        if self.name == SERVER:
            self.proc.send_signal(signal.SIGTERM)
        else:
            self.proc.stdin.close()
        code = self.proc.wait(60)
        self.log.close()
        return code

    def kill(self) -> None:
        self._stop.set()
        self.proc.kill()
        self.proc.wait(30)
        self._thread.join(30)
        self.log.close()

    def text(self) -> str:
        return (self.folder / "device.log").read_text(errors="replace")


