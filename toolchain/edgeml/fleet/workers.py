"""Where the controller's batches are decoded, checked and committed: in its own process, or in ``--workers N``.

One Python process tops out near one core, and the controller's work per
message splits in two: paho's reading of each PUBLISH and writing of each
PUBACK (on the MQTT connection, which must stay one: one session, one
queue on the broker), and decoding, checking and committing it (which any
process holding a store connection can do). :class:`Workers` runs the
second part in ``N`` processes of their own, each with its own connection to
the store, so the MQTT client and the commits use separate cores:

* :meth:`Workers.submit` sends a batch of ``(topic, payload)`` pairs to an
  idle process (a pipe; a batch of 500 windows is ~1.5 MB) and returns its
  ticket; :meth:`Workers.results` returns ``(ticket, outcomes, error)`` for
  every batch finished since: ``outcomes`` as
  :meth:`~.store.Store.record_messages` gives them (plus ``undecodable``),
  or ``error``, the store's failure, with nothing committed;
* a process that dies (killed, out of memory) is started again, and its
  batch is reported failed, so it is sent again: stored once all the same
  (windows are de-duplicated on their key; a birth or death is kept once);
* the processes ignore SIGINT and SIGTERM and end when their pipe closes:
  the controller stops them after committing what it holds (and if it is
  killed, they end with it).

:class:`InProcess` is the same interface on the controller's own thread
(``--workers 1``, the default). Either way :class:`~.ingest.Ingest`
acknowledges a batch only once its outcomes are back, and batches in the
order they were received, as MQTT requires.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import signal
import time
from collections import deque
from multiprocessing.connection import Connection, wait

import orjson

from edgeml.errors import FleetError

#: Batches in flight per process: one committing, one waiting its turn in the controller (never in the pipe).
DEPTH = 2
#: Seconds before a process that died is started again (doubling, up to the second figure).
RESTART = (0.5, 30.0)

Items = list[tuple[str, bytes]]


def store_batch(store, items: Items) -> list[str]:
    """Decode and commit ``items`` in one transaction; the outcome of each (``undecodable`` for one kept as rejected).

    FleetError (nothing committed) if the store fails.
    """
    from edgeml_runtime.errors import ProtocolError
    from edgeml_runtime.protocol import decode

    from .ingest import loads, reject

    decoded, undecodable, outcomes = [], [], []
    for topic, payload in items:
        try:
            decoded.append(decode(topic, payload, loads=loads))
            outcomes.append(None)
        except ProtocolError as exc:
            undecodable.append((topic, payload, str(exc)))
            outcomes.append("undecodable")
    if undecodable:
        reject(store, undecodable)
    stored = iter(store.record_messages(decoded).outcomes if decoded else ())
    return [o or next(stored) for o in outcomes]


def quiet_gc() -> None:
    """Keep the garbage collector off what exists now, and run it less often.

    Thousands of messages a second make and drop millions of small objects,
    none in reference cycles; with the default thresholds, the collector's
    full passes over every object the process holds (SQLAlchemy's, paho's,
    the modules') took 3 to 13 % of the controller's time.
    """
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)


class InProcess:
    """Commit each batch on the caller's thread, at once (``--workers 1``)."""

    depth = 1

    def __init__(self, store):
        self.store = store
        self._done: list[tuple[int, list[str] | None, str | None]] = []
        self._tickets = 0

    def submit(self, items: Items) -> int:
        self._tickets += 1
        try:
            self._done.append((self._tickets, store_batch(self.store, items), None))
        except FleetError as exc:
            self._done.append((self._tickets, None, str(exc)))
        return self._tickets

    def results(self, timeout: float = 0.0) -> list[tuple[int, list[str] | None, str | None]]:
        done, self._done = self._done, []
        return done

    def close(self) -> None:
        pass


class Workers:
    """``n`` processes, each committing batches to the store at ``url`` (see the module docstring)."""

    def __init__(self, url: str, n: int, *, log: logging.Logger | None = None):
        self.url, self.n = url, n
        self.log = log or logging.getLogger("edgeml.fleet.workers")
        self.depth = n * DEPTH
        self._context = multiprocessing.get_context("spawn")  # no fork: the parent has threads and a store open
        self._slots: list[_Slot] = []
        self._tickets = 0
        self._waiting: deque[tuple[int, Items]] = deque()
        self._done: list[tuple[int, list[str] | None, str | None]] = []

    def start(self) -> Workers:
        self._slots = [_Slot(i + 1) for i in range(self.n)]
        for slot in self._slots:
            self._spawn(slot)
        return self

    def _spawn(self, slot: _Slot) -> None:
        parent, child = self._context.Pipe()
        slot.process = self._context.Process(target=_serve, args=(self.url, child), name=f"edgeml-store-{slot.index}",
                                             daemon=True)
        slot.process.start()
        child.close()
        slot.pipe, slot.started = parent, time.monotonic()

    def submit(self, items: Items) -> int:
        """Queue ``items`` for the next idle process; its ticket."""
        self._tickets += 1
        self._waiting.append((self._tickets, items))
        self._dispatch()
        return self._tickets

    def _dispatch(self) -> None:
        """Send waiting batches to idle processes (one each: a second would block the pipe until the first is done)."""
        for slot in self._slots:
            if not self._waiting:
                return
            if slot.pipe is None or slot.held:
                continue
            ticket, items = self._waiting.popleft()
            try:
                slot.pipe.send_bytes(pack(ticket, items))
                slot.held.append(ticket)
            except (OSError, EOFError):
                self._waiting.appendleft((ticket, items))
                self._lost(slot)

    def results(self, timeout: float = 0.0) -> list[tuple[int, list[str] | None, str | None]]:
        """The batches finished (or failed) since the last call, waiting up to ``timeout`` s for the first."""
        self._restart_due()
        running = [s for s in self._slots if s.pipe is not None]
        ready = set(wait([s.pipe for s in running if s.held] + [s.process.sentinel for s in running],
                         0 if self._done else timeout))
        for slot in running:
            if slot.held and (slot.pipe in ready or slot.pipe.poll()):
                self._read(slot)
            if slot.pipe is not None and slot.process.sentinel in ready:
                self._lost(slot)  # it ended: what it answered before was read just above
        self._dispatch()
        if not any(s.pipe is not None or s.restart_at is not None for s in self._slots):
            self._done += [(t, None, "no store process is running") for t, _ in self._waiting]
            self._waiting.clear()
        done, self._done = self._done, []
        return done

    def _read(self, slot: _Slot) -> None:
        try:
            while slot.pipe.poll():
                ticket, outcomes, error = slot.pipe.recv()
                slot.held.remove(ticket)
                self._done.append((ticket, outcomes, error))
        except (OSError, EOFError):
            self._lost(slot)

    def _lost(self, slot: _Slot) -> None:
        """A process ended unasked: its batches failed (nothing acknowledged); start it again after a pause."""
        slot.process.join(1.0)
        code, ran = slot.process.exitcode, time.monotonic() - slot.started
        slot.delay = RESTART[0] if ran > 60 else min(slot.delay * 2, RESTART[1]) if slot.delay else RESTART[0]
        self.log.error("store process %d (pid %s) ended (exit code %s) with %d batch(es) in hand, committed again "
                       "by another; starting it again in %.1f s", slot.index, slot.process.pid, code, len(slot.held),
                       slot.delay)
        self._done += [(t, None, f"store process {slot.index} ended") for t in slot.held]
        slot.pipe.close()
        slot.held, slot.pipe = [], None
        slot.restart_at = time.monotonic() + slot.delay

    def _restart_due(self) -> None:
        for slot in self._slots:
            if slot.pipe is None and slot.restart_at is not None and time.monotonic() >= slot.restart_at:
                slot.restart_at = None
                self._spawn(slot)
                self.log.warning("store process %d started again (pid %s)", slot.index, slot.process.pid)

    def close(self) -> None:
        """End every process once its batches are answered (the caller collects those first)."""
        for slot in self._slots:
            if slot.pipe is not None:
                slot.pipe.close()
                slot.pipe = None
        for slot in self._slots:
            if slot.process is not None:
                slot.process.join(30)
                if slot.process.is_alive():
                    slot.process.kill()
                    slot.process.join()


def pack(ticket: int, items: Items) -> bytes:
    """A batch as one byte string for a pipe: a JSON header (ticket, topics, payload sizes), then the payloads.

    Pickling the list showed as ~30 µs a message in the controller's profile; this is one join.

    >>> unpack(pack(7, [("edgeml/f/d/drift", b"{}"), ("edgeml/f/d/death", b"[1]")]))
    (7, [('edgeml/f/d/drift', b'{}'), ('edgeml/f/d/death', b'[1]')])
    """
    header = orjson.dumps([ticket, [t for t, _ in items], [len(p) for _, p in items]])
    return b"".join([len(header).to_bytes(4, "big"), header, *(p for _, p in items)])


def unpack(data: bytes) -> tuple[int, Items]:
    size = int.from_bytes(data[:4], "big")
    ticket, topics, sizes = orjson.loads(data[4:4 + size])
    view, at, items = memoryview(data), 4 + size, []
    for topic, n in zip(topics, sizes, strict=True):
        items.append((topic, bytes(view[at:at + n])))
        at += n
    return ticket, items


class _Slot:
    """One store process, its pipe and the tickets it holds."""

    def __init__(self, index: int):
        self.index = index
        self.process = None
        self.pipe: Connection | None = None
        self.held: list[int] = []
        self.started = 0.0
        self.delay = 0.0
        self.restart_at: float | None = None


def _serve(url: str, pipe: Connection) -> None:
    """A store process: commit each batch received on ``pipe`` and send back its outcomes, until the pipe closes."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # the controller ends us once it has committed what it holds
    import sys

    from .store import Store

    try:
        store = Store.open(url)
    except FleetError as exc:
        sys.stderr.write(f"store process: {exc}\n")
        sys.exit(1)
    quiet_gc()
    try:
        while True:
            try:
                ticket, items = unpack(pipe.recv_bytes())
            except (EOFError, OSError):
                return
            try:
                pipe.send((ticket, store_batch(store, items), None))
            except FleetError as exc:
                pipe.send((ticket, None, str(exc)))
    finally:
        store.close()

