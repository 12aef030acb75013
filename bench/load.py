"""Load tooling of the serving benchmarks: servers in their own processes, wrk runs, and what they cost.

wrk (a load generator in C) drives the server; the server process's own CPU
time per request (from /proc) is what a request costs the device whatever
the neighbours on a busy machine do, and the hypervisor's steal share says
how busy it was. Importing this module runs nothing.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

#: wrk's script: the request, and one machine-readable line at the end (latencies in microseconds).
LUA = """\
wrk.method = "{method}"
{body}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("EDGEML %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 10.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def wait_answer(port: int, method: str, path: str, body: bytes | None, proc: subprocess.Popen,
                deadline: float = 60.0) -> float:
    """Poll until ``path`` answers 200; the time of the answer (perf_counter)."""
    end = time.perf_counter() + deadline
    while time.perf_counter() < end:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with status {proc.returncode} before answering {path}")
        try:
            status, text = request(port, method, path, body, timeout=5)
        except OSError:
            time.sleep(0.002)
            continue
        if status != 200:
            raise SystemExit(f"{method} {path} answered {status}: {text[:300]!r}")
        return time.perf_counter()
    raise SystemExit(f"no answer from {path} within {deadline:g} s")


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Wrk:
    """Runs wrk against one server, a script per request kind."""

    def __init__(self, work: Path, seconds: float):
        self.work, self.seconds, self.n = work, seconds, 0

    def __call__(self, port: int, method: str, path: str, body: bytes | None, connections: int) -> dict:
        self.n += 1
        script = self.work / f"wrk-{self.n}.lua"
        lines = ""
        if body is not None:
            assert b"]==]" not in body
            lines = (f'wrk.body = [==[{body.decode()}]==]\n'
                     'wrk.headers["Content-Type"] = "application/json"')
        script.write_text(LUA.format(method=method, body=lines))
        cmd = ["wrk", "-t1", f"-c{connections}", f"-d{self.seconds:g}s", "--timeout", "10s", "-s", str(script),
               f"http://127.0.0.1:{port}{path}"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        line = next((x for x in out.splitlines() if x.startswith("EDGEML ")), None)
        if line is None:
            raise SystemExit(f"wrk printed no summary:\n{out}")
        n, duration, p50, p99, non2xx, socket_errors = map(int, line.split()[1:])
        return {"requests": n, "rate": n / (duration / 1e6), "p50_ms": p50 / 1000, "p99_ms": p99 / 1000,
                "non2xx": non2xx, "socket_errors": socket_errors}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far: what a request costs the device, whatever the neighbours do."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def steal_share(before: list[int], after: list[int]) -> float:
    """The share of this machine's CPU time the hypervisor took between two reads of /proc/stat."""
    delta = [b - a for a, b in zip(before, after, strict=True)]
    return delta[7] / max(1, sum(delta[:8]))


def cpu_times() -> list[int]:
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


def in_rounds(jobs: list, rounds: int, run) -> dict:
    """``run(job)`` for every job, ``rounds`` times over, the jobs taking turns (a busy spell slows them alike);
    per job the run of median request rate."""
    seen: dict = {}
    for _ in range(rounds):
        for job in jobs:
            seen.setdefault(job, []).append(run(job))
    return {job: sorted(runs, key=lambda r: r["rate"])[len(runs) // 2] for job, runs in seen.items()}
