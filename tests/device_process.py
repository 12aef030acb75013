"""A device in its own process, for the tests that kill one with SIGKILL mid-stream."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from broker import wait_until

from edgeml_runtime.outbox import Outbox

REPO = Path(__file__).resolve().parents[1]


class DeviceProcess:
    """Runs this file as a device process (telemetry from test_telemetry.py): ``count`` windows ``pace`` s apart,
    then waits to be killed.

    With ``drain=True`` it sends what waits in the outbox, stops cleanly and exits.
    """

    def __init__(self, url: str, outbox: Path, *, count: int = 0, pace: float = 0.0, drain: bool = False):
        config = dict(url=url, outbox=str(outbox), count=count, pace=pace, drain=drain)
        self.proc = subprocess.Popen([sys.executable, __file__, json.dumps(config)], stdout=subprocess.PIPE,
                                     text=True, cwd=REPO)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.endswith("\n"):  # a kill may cut the last line short
                self.lines.append(line.strip())

    def wait_line(self, text: str, timeout: float = 15) -> None:
        wait_until(lambda: text in self.lines or self.proc.poll() is not None, timeout, what=f"'{text}'")
        assert text in self.lines, f"the device process exited with {self.proc.returncode} before '{text}'"

    def written(self) -> list[int]:
        return [int(line.split()[1]) for line in list(self.lines) if line.startswith("put")]

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(10)

    def wait_exit(self, timeout: float = 20) -> None:
        assert self.proc.wait(timeout) == 0, f"the device process failed: {self.lines}"


def _device_main(config: dict) -> None:
    from test_telemetry import connected, telemetry, window

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    box = Outbox(config["outbox"])
    t = telemetry(config["url"], box)
    t.start()
    if not config["drain"] and config["count"] == 0:
        wait_until(lambda: connected(t), what="the connection")
        print("connected", flush=True)
    for i in range(config["count"]):
        t.send_drift(window(i))
        print("put", i, flush=True)
        time.sleep(config["pace"])
    print("done", flush=True)
    if config["drain"]:
        wait_until(lambda: t.stats["pending"] == 0, timeout=15, what="the outbox to drain")
        t.stop()
        box.close()
        return
    threading.Event().wait()  # until killed


if __name__ == "__main__":
    _device_main(json.loads(sys.argv[1]))
