"""What the fleet store's tests share: a small reference, real drift, birth and death messages, one store per test.

The messages are built by the runtime's own DriftMonitor and protocol builders
and read back by ``decode``, as the controller receives them.
"""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import UTC, datetime

import numpy as np
import pytest
import sqlalchemy as sa

from edgeml.fleet.store import Store
from edgeml_runtime.drift import DriftMonitor, DriftSettings
from edgeml_runtime.protocol import VerdictRule, decode, describe_window, envelopes
from edgeml_runtime.protocol.topics import DeviceTopics
from edgeml_runtime.schema import InputColumn, InputSchema

REFERENCE = {
    "format": 1, "bins": "right-closed", "rows": {"train": 4000, "valid": 1000},
    "columns": {f"x{i}": {"kind": "numeric", "edges": [10.0, 20.0], "shares": [0.25, 0.5, 0.25],
                          "missing_rate": 0.0, "range": [0.0, 30.0]} for i in range(3)},
    "output": {"kind": "classes", "classes": [0, 1], "shares": [0.5, 0.5], "split": "valid"},
}
SCHEMA = InputSchema(tuple(InputColumn(f"x{i}", "numeric", (f"x{i}",)) for i in range(3)))
RULE = VerdictRule(min_rows=1)
BUNDLE = "ab" * 32
OTHER = "cd" * 32
DRIFT = "edgeml/plant-a/pi-07/drift"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC).timestamp()


def model(bundle: str = BUNDLE) -> dict:
    return {"name": "demo", "version": "1", "bundle_sha256": bundle, "artifact": "model.onnx", "sha256": "0" * 64}


def decoded(topic: str, message: dict) -> tuple:
    """``message`` as it crosses the wire: JSON bytes, read back by the protocol's decode."""
    return decode(topic, json.dumps(message).encode())


def window(device: str, session: int, seq: int, *, ended: float = T0, bundle: str = BUNDLE, shift: float = 0.0,
           rows: int = 40, fleet: str = "plant-a") -> tuple:
    """A drift message of ``rows`` rows counted by a real DriftMonitor, closed at ``ended``."""
    now = [ended - 60.0]
    monitor = DriftMonitor(REFERENCE, SCHEMA, DriftSettings(window_rows=10_000, rule=RULE), clock=lambda: now[0])
    values = np.linspace(1.0, 29.0, rows, dtype=np.float32).reshape(-1, 1) + shift
    monitor.update({f"x{i}": values for i in range(3)}, np.array([0, 1] * (rows // 2)))
    now[0] = ended
    topics = DeviceTopics(fleet, device)
    message = envelopes.drift(topics, session=session, seq=seq, model=model(bundle), outbox_dropped=0,
                              window=monitor.flush())
    return decoded(topics.drift, {**message, "historical": False})


def birth(device: str, bd_seq: int, bundle: str = BUNDLE) -> tuple:
    topics = DeviceTopics("plant-a", device)
    message = envelopes.birth(topics, bd_seq=bd_seq, time="2026-12-01T12:00:00.000Z",
                              runtime={"version": "0.1.0", "mqtt_protocol": "5"},
                              description={"model": model(bundle), "window": describe_window(500, 300.0, RULE)})
    return decoded(topics.birth, message)


def death(device: str, bd_seq: int, reason: str = "lost") -> tuple:
    topics = DeviceTopics("plant-a", device)
    return decoded(topics.death, envelopes.death(topics, bd_seq=bd_seq, reason=reason))


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    """An empty store: a SQLite file of this test's own, or a new database on the session's PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/fleet.db"
        return
    server = request.getfixturevalue("postgres")
    name = f"t{uuid.uuid4().hex[:12]}"
    yield server.create_database(name)
    server.drop_database(name)


@pytest.fixture
def store(url):
    with Store.open(url) as s:
        yield s


def count(store: Store, table: str) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar()


def write_v1_rows(store: Store) -> None:
    """A birth of pi-07 (bdSeq 3) and its window 0, written as version 1 of the code wrote them (the columns of
    that version only)."""
    from edgeml.fleet.rows import prepare

    with store.engine.begin() as conn:
        for topic, message in (birth("pi-07", 3), window("pi-07", 3, 0)):
            m = prepare(topic, message, T0)
            table = "devices" if m.kind == "birth" else "windows"
            row = {k: v for k, v in m.row.items() if k not in ("performance", "outbox_backlog")}  # later columns
            if table == "devices":
                row = {k: json.dumps(v) if k == "window" else v for k, v in row.items()}
            columns = ", ".join(f'"{k}"' for k in row)
            conn.execute(sa.text(f"INSERT INTO {table} ({columns}) VALUES ({', '.join(f':{k}' for k in row)})"),
                         row)


def renumbered(bundle, folder, version: str = "2"):
    """A copy of ``bundle`` in ``folder`` whose manifest says ``version``: the same artifacts, another identity."""
    copy = folder / f"demo-{version}"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "version": version}, indent=2))
    return copy
