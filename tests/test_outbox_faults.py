"""The outbox when things go wrong: a damaged file, a poison row, a full disk, a lost file and its session numbers.

Before: a corrupted outbox refused to start; a full disk made `run` exit and then the outbox could not be opened;
a new outbox restarted bdSeq at 1 (consumers then discarded real windows as duplicates); a row that could not be
decoded blocked delivery; the drops a put caused itself were reported by nobody until the next put.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest

from edgeml_runtime.errors import OutboxError
from edgeml_runtime.outbox import MIN_MAX_BYTES, Outbox

TOPIC = "edgeml/plant-a/pi-07/drift"


def window(i: int, size: int = 1000):
    """A drift message builder: the outbox gives it the drop count it reports."""
    def build(dropped: int) -> bytes:
        body = json.dumps({"seq": i, "outbox_dropped": dropped, "pad": ""}).encode()
        return body[:-3] + b'"' + b"x" * (size - len(body)) + b'"}'
    return build


def reported(box: Outbox) -> list[tuple[int, int]]:
    return [(json.loads(m.payload)["seq"], json.loads(m.payload)["outbox_dropped"]) for m in box.pending(10_000)]


def test_every_drop_is_reported_by_the_put_that_causes_it(tmp_path):
    with Outbox(tmp_path / "o.db", max_bytes=MIN_MAX_BYTES) as box:
        for i in range(200):
            box.put(TOPIC, window(i))
        waiting = reported(box)
        assert box.dropped == 0  # nothing left unreported, not even the last put's own drops
        assert len(waiting) + sum(d for _, d in waiting) == 200
        assert [s for s, _ in waiting] == list(range(200 - len(waiting), 200))


def test_a_garbage_outbox_is_moved_aside_and_a_new_one_started(tmp_path, caplog):
    path = tmp_path / "o.db"
    with Outbox(path) as box:
        box.put(TOPIC, b'{"seq":0}')
        assert [box.next_session() for _ in range(3)] == [1, 2, 3]
    path.write_bytes(os.urandom(8192))  # the real file, overwritten
    with pytest.raises(OutboxError, match="point the outbox setting at another file"):
        Outbox(path)  # without recover, a clear refusal (what `edgeml-runtime outbox` tools want)
    with caplog.at_level(logging.ERROR, "edgeml_runtime.outbox"), Outbox(path, recover=True) as box:
        assert len(box) == 0 and box.durable
        assert box.next_session() == 4  # the session file survived the outbox
        box.put(TOPIC, b'{"seq":1}')
    (aside,) = tmp_path.glob("o.db.corrupt-*")
    assert aside.read_bytes()[:16] != b"SQLite format 3\x00"
    assert "damaged" in caplog.text and str(aside) in caplog.text


def test_a_damaged_page_inside_a_real_outbox_is_caught_at_open(tmp_path):
    path = tmp_path / "o.db"
    with Outbox(path) as box:
        for i in range(300):
            box.put(TOPIC, json.dumps({"seq": i, "pad": "x" * 900}).encode())
    with open(path, "r+b") as f:  # a page of the table's b-tree, garbled, as a bad sector would
        f.seek(8 * 4096)
        f.write(os.urandom(4096))
    with Outbox(path, recover=True) as box:
        assert len(box) == 0
        box.put(TOPIC, b'{"seq":0}')
        assert len(box.pending()) == 1
    assert len(list(tmp_path.glob("o.db.corrupt-*"))) == 1


def test_sessions_never_restart_when_the_outbox_is_lost(tmp_path):
    path = tmp_path / "o.db"
    with Outbox(path) as box:
        assert [box.next_session() for _ in range(5)] == [1, 2, 3, 4, 5]
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with Outbox(path) as box:
        assert box.next_session() == 6
    (tmp_path / "o.db.session").unlink()  # the other way round: the outbox still knows
    with Outbox(path) as box:
        assert box.next_session() == 7
    assert (tmp_path / "o.db.session").read_text() == "7\n"


def test_a_poison_row_is_quarantined_and_counted_not_blocking(tmp_path):
    path = tmp_path / "o.db"
    with Outbox(path) as box:
        box.put(TOPIC, window(0))
    db = sqlite3.connect(path)  # a row no runtime wrote: a text payload and a number for a topic
    db.execute("INSERT INTO messages (topic, payload, size, reports_dropped, enqueued) VALUES (42, 'garbage', 7, 3, 0)")
    db.commit()
    db.close()
    with Outbox(path) as box:
        box.put(TOPIC, window(2))
        first = box.pending()
        assert [json.loads(m.payload)["seq"] for m in first] == [0]  # stops before the poison row
        box.ack(first[0].id)
        assert [json.loads(m.payload)["seq"] for m in box.pending()] == [2]  # the poison row is gone
        assert (box.quarantined, box.dropped_total, box.dropped) == (1, 1, 4)  # itself + the 3 it carried
        box.put(TOPIC, window(3))
        assert reported(box)[-1] == (3, 4) and box.dropped == 0
        assert box.quarantine(10**6, "no such message") is False
    db = sqlite3.connect(path)
    (reason,), = db.execute("SELECT reason FROM quarantine").fetchall()
    assert "cannot be decoded" in reason


# -- a full disk: a real, small file system ------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB tmpfs mounted for the test (needs root, as CI has); skipped where mounting is not permitted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], check=True,
                       capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a small tmpfs here ({exc}); the full-disk tests need root and mount(8)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True, timeout=10)


def fill(folder: Path) -> Path:
    """Fill the file system holding ``folder`` to the last byte; returns the filler file."""
    filler = folder / f"filler-{uuid.uuid4().hex}"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for chunk in (65536, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_degrades_to_counting_and_a_restart_still_opens(small_disk, tmp_path):
    from edgeml_runtime.mqtt import MqttSettings
    from edgeml_runtime.protocol import DeviceTopics, VerdictRule, describe_window, examples
    from edgeml_runtime.protocol.envelopes import ENVELOPE_KEYS
    from edgeml_runtime.telemetry import Telemetry

    birth = {"model": examples()["drift"]["model"], "window": describe_window(1000, 300.0, VerdictRule())}
    example = {k: v for k, v in examples()["drift"].items() if k not in ENVELOPE_KEYS}
    path = small_disk / "o.db"
    box = Outbox(path, max_bytes=MIN_MAX_BYTES, recover=True)
    t = Telemetry(MqttSettings("mqtt://127.0.0.1:9"), DeviceTopics("plant-a", "pi-07"), birth=birth, outbox=box)
    t.send_drift(example)
    filler = fill(small_disk)
    for _ in range(30):
        t.send_drift(example)  # never raises: scoring goes on
    unkept = t.stats["unkept"]
    assert unkept > 0 and t.stats["seq"] == 31
    filler.unlink()
    t.send_drift(example)
    last = json.loads(box.pending(10_000)[-1].payload)
    assert last["seq"] == 31 and last["outbox_dropped"] == unkept + box.dropped_total  # what was not kept is told
    box.close()

    filler = fill(small_disk)  # a restart on a disk that is still full
    with Outbox(path, max_bytes=MIN_MAX_BYTES, recover=True) as again:
        again.put(TOPIC, b'{"seq":0}')
        assert again.next_session() >= 1
    with Outbox(small_disk / "new.db", recover=True) as fresh:  # nothing can be created: memory, and said so
        assert not fresh.durable
        fresh.put(TOPIC, b'{"seq":0}')
        assert len(fresh) == 1
    filler.unlink()


def test_run_keeps_scoring_when_the_outbox_disk_is_full(small_disk, demo_bundle, demo_rows, tmp_path):
    from edgeml_runtime.agent import Agent
    from edgeml_runtime.settings import resolve_settings

    fill(small_disk)
    s = resolve_settings({"device_id": "pi-07", "fleet": "plant-a", "broker": "mqtt://127.0.0.1:9",
                          "outbox": str(small_disk / "outbox.db"), "input": str(demo_rows), "format": "csv",
                          "window_rows": 10, "min_rows": 5}, environ={})
    stats = Agent(demo_bundle, s).run()
    assert stats.scored == 50 and stats.windows == 5
