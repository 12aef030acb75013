"""`edgeml-runtime run` end to end: a real bundle, a real Mosquitto, the CLI as a device runs it.

The streaming, drift and MQTT pieces have their own tests; these check the
whole path — records in on stdin or a growing file, windows out over MQTT —
including the broker going away and the process being killed.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from broker import Broker, Subscriber, require_mosquitto, wait_until
from conftest import AI4I_DROP, BIN, build_bundle, run_env

from edgeml_runtime.protocol import decode, window_key


def runtime_run(bundle, broker_url, outbox, *args, stdin=subprocess.PIPE, device="pi-07"):
    cmd = [str(BIN / "edgeml-runtime"), "run", str(bundle), "--device-id", device, "--fleet", "plant-a",
           "--broker", broker_url, "--outbox", str(outbox), *map(str, args)]
    return subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=run_env())


def validate(kind: str, payload: dict) -> None:
    import jsonschema

    from edgeml_runtime.protocol import schema

    jsonschema.validate(payload, schema(kind))


def drift_windows(sub: Subscriber) -> list[dict]:
    """Drift payloads de-duplicated by (fleet, device, session, seq), in arrival order."""
    seen, out = set(), []
    for m, p in sub.on("drift"):
        key = window_key(*decode(m.topic, m.payload))
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


@pytest.fixture(scope="module")
def demo_records(demo_rows) -> list[dict]:
    with open(demo_rows, newline="") as f:
        return list(csv.DictReader(f))


def test_birth_windows_and_death_arrive_with_documented_fields(broker, demo_bundle, tmp_path):
    from edgeml.data.demo import demo_frame

    rows = demo_frame(rows=250, seed=21, label=False).astype(str).to_dict("records")
    text = "".join(json.dumps(r) + "\n" for r in rows)
    text += '{"broken json\n' + json.dumps(dict(rows[0], rpm="fast")) + "\n" + '{"serial": "no readings"}\n'
    with Subscriber(broker.url) as sub:
        proc = runtime_run(demo_bundle, broker.url, tmp_path / "outbox.db", "--window-rows", 100,
                           "--publish-predictions")
        sub.wait_for(lambda s: s.on("birth"), what="the birth")  # predictions are not kept while offline
        out, err = proc.communicate(text, timeout=60)
        assert proc.returncode == 0, err
        sub.wait_for(lambda s: s.on("death") and len(drift_windows(s)) == 3, what="3 windows and a death")
    (_, birth), = sub.on("birth")
    (death_msg, death), = sub.on("death")
    for kind, payload in (("birth", birth), ("death", death)):
        validate(kind, payload)
    assert birth["device"] == "pi-07" and birth["fleet"] == "plant-a"
    assert birth["model"]["name"] == "demo" and len(birth["model"]["sha256"]) == 64
    assert birth["window"]["rows"] == 100
    assert death["bdSeq"] == birth["bdSeq"]
    with Subscriber(broker.url, topic="edgeml/plant-a/pi-07/death", client_id="late") as late:
        (retained, _), = late.wait_for(lambda s: s.on("death"), what="the retained death")
        assert retained.retain
    windows = drift_windows(sub)
    for w in windows:
        validate("drift", w)
    assert not any(w["historical"] for w in windows)
    assert [w["seq"] for w in windows] == [0, 1, 2]
    assert {w["session"] for w in windows} == {birth["bdSeq"]}
    assert [w["rows"] for w in windows] == [100, 100, 50]
    assert sum(w["bad_rows"] for w in windows) == 3  # bad JSON, a bad number, a record without any input
    predictions = [p for _, p in sub.on("predictions")]
    assert len(predictions) == 250
    for p in predictions:
        validate("prediction", p)
        assert p["prediction"] in (0, 1) and abs(sum(p["probabilities"].values()) - 1) < 1e-5
    errors = [e for w in windows for e in w["errors"]]
    assert "row 251: is not valid JSON" in " ".join(errors)  # rows counted across the whole stream
    assert any(e.startswith("row 252, column 'rpm'") and "'fast'" in e for e in errors), errors
    assert "3 drift windows" in err or "drift windows" in err


@pytest.fixture(scope="module")
def ai4i(datasets, tmp_path_factory):
    out = tmp_path_factory.mktemp("ai4i") / "bundle"
    build_bundle(out, data=str(datasets / "ai4i2020.csv"), label="Machine failure", drop=AI4I_DROP[2:],
                 estimators=("lgbm",), max_iter=3)
    with open(datasets / "ai4i2020.csv", newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    return out, rows


@pytest.mark.parametrize("shift", [False, True], ids=["unshifted", "torque+20,air+5"])
def test_drift_is_flagged_on_shifted_real_data_only(broker, ai4i, tmp_path, shift):
    bundle, rows = ai4i
    # A random sample of the whole file: ai4i's temperatures follow a random walk over time, so
    # any contiguous stretch of rows (even every 16th row of one half) really has drifted.
    import random

    sample = random.Random(0).sample(rows, 600)
    if shift:
        sample = [dict(r, **{"Torque [Nm]": str(float(r["Torque [Nm]"]) + 20),
                             "Air temperature [K]": str(float(r["Air temperature [K]"]) + 5)}) for r in sample]
    text = "".join(json.dumps(r) + "\n" for r in sample)
    with Subscriber(broker.url) as sub:
        proc = runtime_run(bundle, broker.url, tmp_path / "o.db", "--window-rows", 300)
        _, err = proc.communicate(text, timeout=60)
        assert proc.returncode == 0, err
        windows = sub.wait_for(lambda s: len(drift_windows(s)) == 2 and drift_windows(s), what="2 windows")
    for w in windows:
        torque = w["columns"]["Torque [Nm]"]
        if shift:
            assert torque["status"] == "significant" and w["verdict"]["status"] == "drift"
            # two of six inputs drifted: at or above the default 30 % share, so the window as a whole has drifted
            assert set(w["verdict"]["drifted_columns"]) >= {"Torque [Nm]", "Air temperature [K]"}
            assert torque["above_range"] > 0
        else:
            assert w["verdict"]["status"] == "ok" and not w["verdict"]["drifted_columns"], w["verdict"]
            assert torque["status"] == "ok"


def _append(path: Path, records: list[dict]) -> None:
    with path.open("a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def test_broker_down_mid_stream_loses_nothing(broker, demo_bundle, demo_records, tmp_path):
    stream = tmp_path / "stream.jsonl"
    stream.touch()
    with Subscriber(broker.url, persistent=True, client_id="fleet-controller") as sub:
        proc = runtime_run(demo_bundle, broker.url, tmp_path / "o.db", "--window-rows", 10, "--input", stream,
                           "--follow", stdin=subprocess.DEVNULL)
        try:
            sub.wait_for(lambda s: s.on("birth"), what="birth")
            _append(stream, demo_records[:20])
            sub.wait_for(lambda s: len(drift_windows(s)) == 2, what="2 windows before the outage")
            broker.stop()
            _append(stream, demo_records[20:50])  # three windows close while the broker is down
            outbox = tmp_path / "o.db"
            wait_until(lambda: _pending(outbox) == 3, what="3 windows waiting in the outbox", timeout=20)
            broker.restart()
            sub.wait_for(lambda s: len(s.on("birth")) >= 2, timeout=60, what="a new birth after the restart")
            _append(stream, demo_records[:10])
            sub.wait_for(lambda s: len(drift_windows(s)) == 6, timeout=60, what="all 6 windows after the restart")
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    windows = drift_windows(sub)
    assert [w["rows"] for w in windows] == [10] * 6
    order = [(w["session"], w["seq"]) for w in windows]
    assert order == sorted(order), order
    assert [w["historical"] for w in windows[2:5]] == [True, True, True]
    assert not windows[0]["historical"] and not windows[5]["historical"]
    births = [b["bdSeq"] for _, b in sub.on("birth")]
    assert births == sorted(births) and len(set(births)) >= 2  # a new session number for the new connection
    assert windows[0]["session"] == births[0] and windows[5]["session"] == births[-1]


def _pending(outbox: Path) -> int:
    import sqlite3

    """Windows waiting in the outbox, read beside the running process (-1 until the outbox exists)."""
    try:
        with sqlite3.connect(f"file:{outbox}?mode=ro", uri=True) as con:
            return con.execute("select count(*) from messages").fetchone()[0]
    except sqlite3.Error:  # not created yet, or no such table yet
        return -1


def test_killed_runtime_sends_its_windows_after_restart(tmp_path, demo_bundle, demo_records):
    require_mosquitto()
    broker = Broker(tmp_path / "broker", persistence=True)  # not started yet: the device is offline
    stream = tmp_path / "stream.jsonl"
    _append(stream, demo_records[:40])
    outbox = tmp_path / "o.db"
    proc = runtime_run(demo_bundle, broker.url, outbox, "--window-rows", 10, "--input", stream, "--follow",
                       stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: _pending(outbox) == 4, what="4 windows in the outbox", timeout=30)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
    with broker, Subscriber(broker.url) as sub:
        empty = tmp_path / "empty.jsonl"
        empty.touch()
        again = runtime_run(demo_bundle, broker.url, outbox, "--window-rows", 10, "--input", empty,
                            stdin=subprocess.DEVNULL)
        _, err = again.communicate(timeout=60)
        assert again.returncode == 0, err
        windows = sub.wait_for(lambda s: len(drift_windows(s)) == 4 and drift_windows(s), what="4 windows")
    assert [w["seq"] for w in windows] == [0, 1, 2, 3] and all(w["historical"] for w in windows)
    assert _pending(outbox) == 0


def test_bad_settings_exit_2_with_a_clear_message(demo_bundle, tmp_path):
    r = subprocess.run([str(BIN / "edgeml-runtime"), "run", str(demo_bundle), "--fleet", "f", "--broker",
                        "mqtt://127.0.0.1:1"], capture_output=True, text=True, env=run_env(), timeout=60)
    assert r.returncode == 2 and "--device-id" in r.stderr and "EDGEML_DEVICE_ID" in r.stderr
    assert "Traceback" not in r.stderr
