"""The durable outbox: order, acks, the byte bound and its drop count, reopening, and kill -9."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading

import pytest
from broker import wait_until

from edgeml_runtime.errors import OutboxError, SettingsError
from edgeml_runtime.outbox import MIN_MAX_BYTES, Outbox

TOPIC = "edgeml/plant-a/pi-07/drift"


@pytest.fixture
def path(tmp_path):
    return tmp_path / "outbox.db"


#: How many 1000-byte payloads fit in the smallest bound.
FITS = MIN_MAX_BYTES // (1000 + len(TOPIC))


def payload(i: int, size: int = 1000) -> bytes:
    body = f'{{"seq":{i},"pad":"'.encode()
    return body + b"x" * (size - len(body) - 2) + b'"}'


def test_pending_is_oldest_first_and_ack_removes(path):
    with Outbox(path) as box:
        ids = [box.put(TOPIC, payload(i)) for i in range(5)]
        assert ids == sorted(ids) and len(set(ids)) == 5
        assert [m.payload for m in box.pending()] == [payload(i) for i in range(5)]
        assert [m.id for m in box.pending(limit=2)] == ids[:2]
        assert [m.id for m in box.pending(after=ids[2])] == ids[3:]
        assert all(m.topic == TOPIC and m.enqueued > 0 for m in box.pending())

        assert box.ack(ids[1]) is True
        assert box.ack(ids[1]) is False  # already gone
        assert [m.id for m in box.pending()] == [ids[0], *ids[2:]]
        assert len(box) == 4 and box.bytes == 4 * (1000 + len(TOPIC))


def test_ids_are_never_reused_even_when_the_outbox_empties(path):
    with Outbox(path) as box:
        first = box.put(TOPIC, b"{}")
        box.ack(first)
        assert len(box) == 0 and box.last_id == first
    with Outbox(path) as box:
        assert box.put(TOPIC, b"{}") == first + 1


def test_bound_drops_the_oldest_and_counts_them(path):
    with Outbox(path, max_bytes=MIN_MAX_BYTES) as box:
        for i in range(FITS + 10):
            box.put(TOPIC, payload(i))
        assert box.bytes <= MIN_MAX_BYTES and len(box) == FITS
        assert [m.payload for m in box.pending(limit=1)] == [payload(10)]
        assert box.pending(limit=1000)[-1].payload == payload(FITS + 9)
        assert box.dropped == 10 and box.dropped_total == 10

        # The next message reports the 10 drops: they leave the unreported count with it.
        box.put(TOPIC, payload(99), reports_dropped=box.dropped)
        assert box.dropped == 1 and box.dropped_total == 11  # its put dropped one more

        # If that message is dropped in turn, the 10 it reported are unreported again.
        for i in range(FITS):
            box.put(TOPIC, payload(200 + i))
        assert box.dropped == 1 + FITS + 10 and box.dropped_total == 11 + FITS


def test_everything_survives_reopening(path):
    with Outbox(path, max_bytes=MIN_MAX_BYTES) as box:
        for i in range(80):
            box.put(TOPIC, payload(i))
        box.ack(box.pending(limit=1)[0].id)
        assert box.next_session() == 1 and box.next_session() == 2
        before = (box.pending(limit=1000), box.bytes, len(box), box.dropped, box.dropped_total, box.last_id)
    with Outbox(path, max_bytes=MIN_MAX_BYTES) as box:
        assert (box.pending(limit=1000), box.bytes, len(box), box.dropped, box.dropped_total, box.last_id) == before
        assert box.next_session() == 3


def test_one_owner_at_a_time(path):
    box = Outbox(path)
    with pytest.raises(OutboxError, match=f"in use by another process \\(pid {os.getpid()}\\)"):
        Outbox(path)
    box.close()
    Outbox(path).close()


def test_refuses_what_it_cannot_keep(path, tmp_path):
    with pytest.raises(SettingsError, match="max_bytes = 1000: is too small for an outbox; give at least 65536"):
        Outbox(path, max_bytes=1000)
    with pytest.raises(OutboxError, match="synchronous"):
        Outbox(path, synchronous="OFF")
    with Outbox(path, max_bytes=MIN_MAX_BYTES) as box:
        with pytest.raises(OutboxError, match="does not fit in the outbox bound.*raise outbox_max_bytes"):
            box.put(TOPIC, b"x" * MIN_MAX_BYTES)
        assert len(box) == 0

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE readings (x)")
    with pytest.raises(OutboxError, match="not an outbox.*readings"):
        Outbox(other)
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all, " * 100)
    with pytest.raises(OutboxError, match="cannot open the outbox"):
        Outbox(text)


def test_concurrent_puts_and_acks(path):
    with Outbox(path) as box:
        done = threading.Event()
        acked = []

        def acker():
            while not done.is_set() or len(box):
                for m in box.pending(limit=10):
                    assert box.ack(m.id)
                    acked.append(m.id)

        t = threading.Thread(target=acker)
        t.start()
        ids = [box.put(TOPIC, payload(i, 200)) for i in range(300)]
        done.set()
        t.join(30)
        assert acked == ids and len(box) == 0 and box.bytes == 0


CHILD = r"""
import hashlib, sys
from edgeml_runtime.outbox import Outbox
box = Outbox(sys.argv[1])
print("open", flush=True)
i = 0
while True:
    body = f"window {i} ".encode() * 40
    msg_id = box.put("edgeml/plant-a/pi-07/drift", body + hashlib.sha256(body).hexdigest().encode())
    print("put", msg_id, flush=True)
    if msg_id % 3 == 1:
        box.ack(msg_id)
        print("ack", msg_id, flush=True)
    i += 1
"""


def test_kill_9_loses_nothing_reported_as_written(path):
    lines: list[str] = []
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        wait_until(lambda: sum(line.startswith("put") for line in list(lines)) >= 300, timeout=60,
                   what="the child to write 300 windows")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join(10)
    whole = [line for line in lines if line.endswith("\n")]  # the kill may cut the last line short
    written = {int(line.split()[1]) for line in whole if line.startswith("put")}
    acked = {int(line.split()[1]) for line in whole if line.startswith("ack")}
    never_acked = {i for i in written if (i - 1) % 3}  # ids are 1, 2, 3, … and the child acks ids 1, 4, 7, …

    with Outbox(path) as box:  # opens: the dead child's lock went with it
        kept = {m.id: m.payload for m in box.pending(limit=100_000)}
    assert never_acked <= kept.keys()
    assert not acked & kept.keys()  # (an ack the kill kept the child from reporting may have gone either way)
    for body in kept.values():  # every kept window is whole
        text, digest = body[:-64], body[-64:]
        assert hashlib.sha256(text).hexdigest().encode() == digest


def test_kept_messages_are_never_dropped_by_the_bound(path):
    update = "edgeml/plant-a/pi-07/update"
    with Outbox(path, max_bytes=MIN_MAX_BYTES) as box:
        kept = [box.put(update, payload(1000 + i), keep=True) for i in range(3)]
        for i in range(FITS + 10):
            box.put(TOPIC, payload(i))
        waiting = box.pending(limit=10_000)
        assert [m.id for m in waiting[:3]] == kept  # the oldest, yet still there
        assert box.bytes <= MIN_MAX_BYTES and len(box) == FITS
        assert box.dropped_total == 13  # the windows dropped in their place: 3 more than without them
        assert all(m.topic == TOPIC for m in waiting[3:])


def test_a_layout_1_outbox_is_upgraded_with_its_messages(path):
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL,
                               size INTEGER NOT NULL, reports_dropped INTEGER NOT NULL DEFAULT 0,
                               enqueued REAL NOT NULL);
        CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        CREATE TABLE quarantine (id INTEGER PRIMARY KEY, topic BLOB, payload BLOB, reason TEXT NOT NULL,
                                 moved REAL NOT NULL);
        INSERT INTO counters VALUES ('session', 4), ('dropped', 0), ('dropped_total', 0), ('quarantined', 0);
        PRAGMA user_version = 1;
    """)
    db.execute("INSERT INTO messages (topic, payload, size, enqueued) VALUES (?, ?, ?, 1)",
               (TOPIC, b'{"seq":0}', 9 + len(TOPIC)))
    db.commit()
    db.close()
    with Outbox(path) as box:
        assert [m.payload for m in box.pending()] == [b'{"seq":0}']
        assert box.next_session() == 5
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 2
