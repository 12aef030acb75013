"""How many drift windows per second the fleet controller stores, acknowledged after commit, with none lost or twice.

The controller runs as in production: ``edgeml fleet run`` (a subprocess)
against a Mosquitto configured with docs/mosquitto's queue limits, a
persistent MQTT 5 session, QoS 1, manual acknowledgement after each batch's
commit. Devices are simulated by ``--devices`` identities (each its own
topics, session and sequence numbers, 10-column windows of 10 bins in the
runtime's envelopes, ~2.5 KB of JSON) published by real paho clients in
``--publishers`` processes (``--connections`` MQTT connections each; a
device's windows always go over one connection, in order). Measured:

* **live**: publishers offer ``--rate`` windows/s for ``--seconds``; the rate
  stored while they run (the controller shares the machine's cores with them
  and the broker);
* **draining**: the controller is down while the broker queues
  ``--backlog`` windows for its session; then it starts, and the rate is
  windows stored from its first commit to its last;
* the same with ``--batch-size 1`` (a commit and an acknowledgement per
  message) for a short run;
* Mosquitto's own rate between its C clients (``mosquitto_pub -l`` to
  ``mosquitto_sub``, QoS 1, 1 KB messages), if they are installed.

After each run the store's rows are checked against the keys sent: lost
(sent, never stored) and duplicated (a key twice: the unique index makes it
impossible, checked anyway) must both be 0; ``resent`` counts messages the
broker delivered again that the store found already there (harmless).
``--profile`` runs the draining controller under cProfile and lists where
its main thread's time goes. Writes bench/results/ingest.md.

    .venv/bin/python bench/bench_ingest.py [--devices 1000] [--seconds 20] [--store sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, publish

sys.path.insert(0, str(ROOT / "tests"))
OUT = ROOT / "bench" / "out" / "ingest"


def _publisher(url: str, fleet: str, devices: list[int], connections: int, rate: float, seconds: float | None,
               rounds: int, ready, go, done) -> None:
    """One process: ``connections`` paho clients publishing the windows of ``devices`` at ``rate`` windows/s,
    for ``seconds`` (or ``rounds`` windows a device), once ``go`` is set."""
    import paho.mqtt.client as mqtt
    from fleet_traffic import window

    clients = []
    host, port = url.split("://")[1].rsplit(":", 1)
    for i in range(connections):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{fleet}-{os.getpid()}-{i}",
                        protocol=mqtt.MQTTv5)
        c.max_inflight_messages_set(200)
        c.max_queued_messages_set(0)
        c.connect(host, int(port), 60)
        c.loop_start()
        clients.append(c)
    # Each device's window serialized once, around its sequence number: a device's own CPU makes its JSON, so
    # the publishers (sharing this machine's cores with the controller) only splice in the number.
    bodies = {d: json.dumps(window(fleet, f"d{d:04d}", session=1, seq=-7)).split('"seq": -7') for d in devices}
    ready.put(os.getpid())
    go.wait()
    start, sent, infos, seq = time.monotonic(), 0, [], 0
    while seconds is not None and time.monotonic() - start < seconds or seconds is None and seq < rounds:
        for n, d in enumerate(devices):
            while rate and sent >= rate * (time.monotonic() - start) + 50:
                time.sleep(0.005)
            head, tail = bodies[d]
            infos.append(clients[n % connections].publish(f"edgeml/{fleet}/d{d:04d}/drift",
                                                          f'{head}"seq": {seq}{tail}', qos=1))
            sent += 1
        seq += 1
    for info in infos:
        info.wait_for_publish(300)
    done.put(sent)
    for c in clients:
        c.disconnect()
        try:
            c.loop_stop()
        except AttributeError:  # paho 2.2: the network thread may have ended on the DISCONNECT and cleared itself
            pass


class Publishers:
    """The publisher processes, connected and waiting: :meth:`go` starts them, :meth:`join` waits (windows sent)."""

    def __init__(self, url, fleet, devices, *, publishers, connections, rate=0.0, seconds=None, rounds=1):
        ctx = multiprocessing.get_context("spawn")
        self.ready, self.done, self.event = ctx.Queue(), ctx.Queue(), ctx.Event()
        self.procs = [ctx.Process(target=_publisher, args=(url, fleet, list(range(devices))[p::publishers],
                                                           connections, rate / publishers, seconds, rounds,
                                                           self.ready, self.event, self.done))
                      for p in range(publishers)]
        for p in self.procs:
            p.start()
        for _ in self.procs:
            self.ready.get(timeout=300)

    def go(self) -> Publishers:
        self.event.set()
        return self

    def join(self) -> int:
        sent = sum(self.done.get(timeout=900) for _ in self.procs)
        for p in self.procs:
            p.join()
        return sent


def count(url: str) -> tuple[int, int]:
    """(rows, distinct keys) of the windows table."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return tuple(conn.execute(sa.text(
                "SELECT count(*), count(DISTINCT fleet || '/' || device || '/' || session || '/' || seq) "
                "FROM windows")).one())
    except sa.exc.DBAPIError:  # no windows table yet: the controller has not opened the store
        return (0, 0)
    finally:
        engine.dispose()


def wait_count(url, target, timeout=900.0, poll=0.25, pid=None, before=0):
    """Wait until ``target`` rows are stored; (monotonic time of the first new row seen, of the last, rows stored
    from then on, the CPU seconds of ``pid`` and its children meanwhile)."""
    first, deadline, cpu0, n0 = None, time.monotonic() + timeout, None, 0
    while True:
        n = count(url)[0]
        if n > before and first is None:
            first, n0 = time.monotonic(), n
            cpu0 = tree_cpu(pid) if pid else None
        if n >= target:
            return first, time.monotonic(), n - n0, used(cpu0, tree_cpu(pid)) if pid else 0.0
        if time.monotonic() > deadline:
            raise SystemExit(f"only {n} of {target} windows stored after {timeout} s")
        time.sleep(poll)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> dict[int, float]:
    """CPU seconds so far of ``pid`` and of each of its live child processes (its store processes), by pid."""
    out = {pid: cpu_seconds(pid)}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out[int(entry.name)] = cpu_seconds(int(entry.name))
            except (OSError, ValueError):
                continue
    return out


def used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds between two :func:`tree_cpu` readings (a process started in between counts from zero)."""
    return sum(v - before.get(k, 0.0) for k, v in after.items())


def run_case(broker, store, args, *, mode, batch_size, work, workers=1, profile=False, receive_maximum=None,
             backlog=None) -> dict:
    from fleet_traffic import Controller

    from edgeml.fleet.settings import default_receive_maximum

    receive_maximum = receive_maximum or args.receive_maximum or default_receive_maximum(batch_size, workers)
    backlog = backlog or args.backlog
    fleet = f"{mode}-{batch_size}-{receive_maximum}-{workers}{'-profiled' if profile else ''}"
    flags = ["--broker", broker.url, "--store", store, "--judge-every", "0", "--client-id", f"ctl-{fleet}",
             "--fleet", fleet, "--batch-size", str(batch_size), "--receive-maximum", str(receive_maximum),
             "--workers", str(workers)]
    ctl = Controller(work, *flags, name=f"{fleet}-{store.split(':')[0]}")
    if profile:
        ctl.args = [sys.executable, "-m", "cProfile", "-o", str(work / f"{fleet}.prof"), *ctl.args]
    before = count(store)[0]
    ctl.start()
    ctl.wait_log("subscribed to", timeout=60)
    if mode == "drain":
        ctl.stop()  # the session exists: the broker queues for it from now on
        sent = Publishers(broker.url, fleet, args.devices, publishers=args.publishers, connections=args.connections,
                          rounds=max(1, backlog // args.devices)).go().join()
        ctl = Controller(work, *flags, name=f"{fleet}-{store.split(':')[0]}-b")
        if profile:
            ctl.args = [sys.executable, "-m", "cProfile", "-o", str(work / f"{fleet}.prof"), *ctl.args]
        ctl.start()
        first, last, stored, cpu = wait_count(store, before + sent, pid=ctl.proc.pid, before=before)
        rate = stored / (last - first) if last > first else float("nan")  # from the first commit seen to the last
        cores = {"controller": cpu / (last - first)} if last > first else {}
    else:
        seconds = args.seconds if batch_size > 1 else min(args.seconds, 10)
        pubs = Publishers(broker.url, fleet, args.devices, publishers=args.publishers, connections=args.connections,
                          rate=args.rate if batch_size > 1 else 200, seconds=seconds).go()
        warmup = min(3.0, seconds / 4)
        time.sleep(warmup)
        others = {"publishers": [p.pid for p in pubs.procs], "broker": [broker.proc.pid]}
        n0, t_a, cpu0 = count(store)[0], time.monotonic(), tree_cpu(ctl.proc.pid)
        others0 = {k: [cpu_seconds(p) for p in v] for k, v in others.items()}
        time.sleep(seconds - warmup - 0.5)
        n1, t_b, cpu = count(store)[0], time.monotonic(), used(cpu0, tree_cpu(ctl.proc.pid))
        cores = {"controller": cpu / (t_b - t_a)}
        cores.update({k: sum(cpu_seconds(p) - c for p, c in zip(v, others0[k], strict=True)) / (t_b - t_a)
                      for k, v in others.items()})
        sent = pubs.join()
        rate, stored = (n1 - n0) / (t_b - t_a), n1 - n0
        wait_count(store, before + sent)
    assert ctl.stop(timeout=120) == 0, ctl.log()
    rows, distinct = count(store)
    outcomes = ctl.counters()
    return {"mode": mode, "batch": batch_size, "receive_maximum": receive_maximum, "sent": sent, "rate": rate,
            "workers": workers, "cores": cores,
            "lost": before + sent - distinct,
            "duplicated": rows - distinct, "resent": outcomes.get("duplicate", 0),
            "cpu_us": cpu / max(stored, 1) * 1e6,
            "profile": work / f"{fleet}.prof" if profile else None}


def mosquitto_c_rate(broker, messages: int = 20000) -> float | None:
    """Messages/s from mosquitto_pub to mosquitto_sub, QoS 1, 1 KB each (None if the clients are missing)."""
    pub, sub = shutil.which("mosquitto_pub"), shutil.which("mosquitto_sub")
    if not (pub and sub):
        return None
    lines = "\n".join("x" * 1023 for _ in range(messages)) + "\n"
    s = subprocess.Popen([sub, "-h", "127.0.0.1", "-p", str(broker.port), "-t", "cbench/#", "-q", "1", "-C",
                          str(messages)], stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    t0 = time.monotonic()
    subprocess.run([pub, "-h", "127.0.0.1", "-p", str(broker.port), "-t", "cbench/x", "-q", "1", "-l"],
                   input=lines.encode(), check=True)
    s.wait(timeout=300)
    return messages / (time.monotonic() - t0)


def top_functions(path: Path, n: int = 12) -> list[str]:
    import pstats

    stats = pstats.Stats(str(path))
    total = stats.total_tt
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:n]
    out = []
    for (file, line, name), (_cc, calls, tt, ct, _callers) in rows:
        where = file.split("site-packages/")[-1].split("toolchain/")[-1].split("runtime/")[-1].split("lib/")[-1]
        out.append(f"| `{where}:{line}` {name} | {calls:,} | {tt:.2f} | {100 * tt / total:.0f} % | {ct:.2f} |")
    return [f"cProfile of the main thread (decode, store, acknowledge; not paho's network thread), {total:.1f} s "
            "in all, by own time:", "",
            "| function | calls | own s | share | cumulative s |", "|---|---:|---:|---:|---:|", *out]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the live publishers run")
    parser.add_argument("--rate", type=float, default=3000.0, help="windows/s the live publishers offer")
    parser.add_argument("--backlog", type=int, default=20000, help="windows queued while the controller is down")
    parser.add_argument("--store", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--publishers", type=int, default=4, help="publisher processes")
    parser.add_argument("--connections", type=int, default=25, help="MQTT connections per publisher process")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--receive-maximum", type=int, default=None,
                        help="[default: the controller's, 4 batches per worker]")
    parser.add_argument("--workers", default="1,2", help="store processes to compare, comma-separated")
    parser.add_argument("--profile", action="store_true", help="profile the draining controller (cProfile)")
    parser.add_argument("--out", default=None, help="results folder [default: bench/results]")
    args = parser.parse_args(argv)

    from fleet_traffic import fleet_broker

    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=OUT))
    load0 = os.getloadavg()[0]
    broker = fleet_broker(work / "mosquitto").start()
    stores, pg = [], None
    try:
        if args.store in ("sqlite", "both"):
            stores.append(("SQLite (WAL, synchronous=FULL)", f"sqlite:///{work}/fleet.db"))
        if args.store in ("postgres", "both"):
            from pg import Postgres, missing

            if missing():
                print(f"PostgreSQL skipped: {missing()}", file=sys.stderr)
            else:
                pg = Postgres(fsync=True).start()
                stores.append(("PostgreSQL 15 (fsync=on)", pg.create_database("ingest")))
        rows, profiles = [], []
        workers = [int(w) for w in args.workers.split(",")]
        for label, url in stores:
            cases = [(m, args.batch_size, w) for w in workers for m in ("live", "drain")] + [("live", 1, 1)]
            for mode, batch, n in cases:
                r = run_case(broker, url, args, mode=mode, batch_size=batch, work=work, workers=n)
                print(label, r, file=sys.stderr)
                rows.append((label, r))
            if args.profile and not profiles:  # a run of its own (cProfile slows it down), on the first store
                r = run_case(broker, url, args, mode="drain", batch_size=args.batch_size, work=work, profile=True)
                profiles.append((label, top_functions(r["profile"])))
        c_rate = mosquitto_c_rate(broker)
    finally:
        broker.stop()
        if pg:
            pg.stop()
    text = report(args, rows, profiles, c_rate, (load0, os.getloadavg()[0]))
    if args.out:
        publish("ingest", text, Path(args.out))
    else:
        publish("ingest", text)


def report(args, rows, profiles, c_rate, loads) -> str:
    import paho.mqtt

    mode = {"live": "live (publishers running)", "drain": "draining a backlog"}
    lines = ["# Controller ingest benchmark", "",
             f"`edgeml fleet run` as in production (MQTT 5 persistent session, QoS 1, acknowledged after commit) "
             f"against Mosquitto ({_mosquitto_version()}) with docs/mosquitto's queue limits; {args.devices} "
             f"simulated devices (10-column windows of 10 bins in the runtime's envelopes, ~2.5 KB) published by "
             f"real paho {paho.mqtt.__version__} clients in {args.publishers} processes x {args.connections} "
             f"connections; live: {args.rate:,.0f} windows/s offered for {args.seconds:g} s (200/s for 10 s with "
             f"a batch of 1); draining: {args.backlog:,} windows queued while the controller was down; receive "
             f"maximum as in the table. Machine: {platform.machine()}, {os.cpu_count()} cores shared with "
             f"the publishers and the broker, Python {platform.python_version()}; load average (1 min) "
             f"{loads[0]:.1f} at the start, {loads[1]:.1f} at the end. Produced by "
             f"`.venv/bin/python bench/bench_ingest.py --devices {args.devices} --seconds {args.seconds:g} "
             f"--rate {args.rate:g} --backlog {args.backlog} --store {args.store} --workers {args.workers}"
             f"{' --profile' if args.profile else ''}`.", "",
             "`cpu µs/window` is the CPU time of the controller's process (both threads: paho's network thread "
             "and the batches) and of its store processes, over the windows stored while it was measured (live: "
             "between two counts while the publishers run; draining: from the first window stored to the last), "
             "read from /proc: less sensitive to the load than the wall clock. The Mosquitto row is its own C "
             "clients' rate, for scale.", "",
             "| store | case | workers | batch | receive maximum | windows sent | windows/s stored | cpu µs/window | "
             "cores used: controller / publishers / broker | lost | duplicated | resent (no-op) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for label, r in rows:
        lines.append(f"| {label} | {mode[r['mode']]} | {r['workers']} | {r['batch']} | {r['receive_maximum']} | "
                     f"{r['sent']:,} | "
                     f"{r['rate']:,.0f} | "
                     f"{r['cpu_us']:,.0f} | {' / '.join(f'{v:.2f}' for v in r['cores'].values())} | {r['lost']} | "
                     f"{r['duplicated']} | {r['resent']} |")
    lines.append(f"| Mosquitto alone | mosquitto_pub -> mosquitto_sub, QoS 1, 1 KB | - | - | - | 20,000 | "
                 f"{c_rate:,.0f} | | | | | |" if c_rate else
                 "| Mosquitto alone | mosquitto_pub/mosquitto_sub not installed | | | | | | | | | | |")
    for label, prof in profiles:
        lines += ["", f"## Where the draining controller's time goes ({label})", "", *prof]
    return "\n".join(lines) + "\n"


def _mosquitto_version() -> str:
    from broker import mosquitto_path

    exe = mosquitto_path()
    if not exe:
        return "not installed"
    done = subprocess.run([exe, "-h"], capture_output=True, text=True)
    return (done.stdout or done.stderr).splitlines()[0].strip()


if __name__ == "__main__":
    main()
