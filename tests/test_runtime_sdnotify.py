"""systemd's notifications from ``edgeml-runtime run``: READY=1 once it scores, WATCHDOG=1 fed by the loop while
the input is quiet, STOPPING=1 on shutdown, all on the ``$NOTIFY_SOCKET`` the test listens on as systemd would."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import time

import pytest
from conftest import BIN, run_env

from edgeml_runtime.sdnotify import Notifier


def _listen(path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(20)
    return sock


def _received(sock, until: float) -> list[bytes]:
    got = []
    sock.settimeout(0.05)
    while time.monotonic() < until:
        try:
            got.append(sock.recv(4096))
        except TimeoutError:
            continue
    return got


def _json_rows(demo_rows, n: int) -> str:
    with open(demo_rows, newline="") as f:
        rows = [r for _, r in zip(range(n), csv.DictReader(f), strict=False)]
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture
def device(demo_bundle, tmp_path):
    """A real ``edgeml-runtime run`` on a pipe, windows to a file (no broker), systemd's environment set."""
    listener = _listen(tmp_path / "notify")
    env = run_env() | {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "200000",
                       "WATCHDOG_PID": ""}  # unset below: systemd sets it only where it knows the pid
    env.pop("WATCHDOG_PID")
    proc = subprocess.Popen([str(BIN / "edgeml-runtime"), "run", str(demo_bundle), "--device-id", "pi-07",
                             "--fleet", "plant-a", "--drift-output", str(tmp_path / "windows.jsonl"),
                             "--window-rows", "10"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    yield proc, listener
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        pipe.close()
    listener.close()


def test_ready_then_the_watchdog_while_quiet_then_stopping(device, demo_rows):
    proc, listener = device
    first = listener.recv(4096)  # READY=1 comes before any row: the bundle is loaded and the input is read
    assert first.startswith(b"READY=1\nSTATUS=scoring - with demo 1 as plant-a/pi-07"), first
    proc.stdin.write(_json_rows(demo_rows, 25))
    proc.stdin.flush()
    quiet = _received(listener, time.monotonic() + 1.5)  # then nothing arrives on the input for 1.5 s
    pings = [m for m in quiet if m == b"WATCHDOG=1"]
    # half the 200 ms interval: about 15 pings in 1.5 s, never a gap systemd would kill for
    assert 8 <= len(pings) <= 20, quiet
    proc.stdin.close()  # the input ends: the loop finishes its window and says it is stopping
    rest = _received(listener, time.monotonic() + 5)
    assert proc.wait(timeout=20) == 0
    stopping = [m for m in rest if m.startswith(b"STOPPING=1")]
    assert stopping == [b"STOPPING=1\nSTATUS=25 rows, 25 scored, 0 bad, 2 drift windows"], rest


def test_sigterm_sends_stopping(device):
    proc, listener = device
    assert listener.recv(4096).startswith(b"READY=1")
    proc.send_signal(signal.SIGTERM)  # stdin still open: the input thread is blocked reading it
    rest = _received(listener, time.monotonic() + 3)
    assert proc.wait(timeout=20) == 0  # a clean exit, not the interpreter's abort at shutdown (134)
    assert any(m.startswith(b"STOPPING=1\nSTATUS=0 rows") for m in rest), rest


def test_the_abstract_namespace_and_another_watched_pid(tmp_path):
    name = f"edgeml-test-{os.getpid()}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind("\0" + name)
    listener.settimeout(5)
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "1"})
    notifier.ready()
    notifier.alive()  # 1 µs: half of it has passed by now
    assert [listener.recv(64), listener.recv(64)] == [b"READY=1", b"WATCHDOG=1"]
    other = Notifier.from_environ({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "100",
                                   "WATCHDOG_PID": str(os.getpid() + 1)})
    other.alive()  # the watched process is another one: no ping
    listener.settimeout(0.2)
    with pytest.raises(TimeoutError):
        listener.recv(64)
    listener.close()


def test_without_systemd_nothing_is_sent_and_a_dead_socket_is_not_fatal(tmp_path):
    silent = Notifier.from_environ({})
    silent.ready("x"), silent.alive(), silent.stopping()
    assert (silent.enabled, silent.sent) == (False, 0)
    gone = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "no-such-socket")})
    gone.ready("x")
    assert (gone.sent, gone.failed) == (0, 1)  # counted, never raised: scoring goes on
