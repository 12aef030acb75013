"""Live performance end to end: real `edgeml-runtime run` devices stream labelled demo rows through a real
Mosquitto to a real controller (`edgeml fleet run`), which sums the windows' counts and decides.

Two fleets of two devices each read 500 fresh demo rows on stdin, as JSON
lines carrying the label (``failure``, as text, as a CSV-minded logger
writes it): ``honest`` with the true labels, ``flipped`` with 40 % of them
turned over. The store then holds, per fleet, counts that add up to exactly
the confusion matrix the test computes by scoring the same rows with
``edgeml_runtime.Model`` (and scikit-learn); ``flipped`` gets one
``performance`` decision, ``honest`` none.
"""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest
from broker import require_mosquitto, wait_until
from conftest import BIN, run_env
from fleet_traffic import Controller, fleet_broker
from sklearn.metrics import confusion_matrix

ROWS, WINDOW_ROWS, FLIP = 500, 250, 0.4
FLEETS = {"honest": 0.0, "flipped": FLIP}
DEVICES = ("d1", "d2")
POLICY = """
[policy]
judge_every = 0.5
slice = "2s"
slices = 60
min_devices = 2
cooldown = "1h"
min_labelled = 400
performance_margin = 0.1
"""


def labelled_rows(seed: int, flip: float) -> list[dict]:
    """Demo rows with their label as text, a share ``flip`` of the labels turned over."""
    from edgeml.data.demo import DEMO_LABEL, demo_frame

    frame = demo_frame(rows=ROWS, seed=seed, label=True)
    turned = np.random.default_rng(seed).random(ROWS) < flip
    frame[DEMO_LABEL] = np.where(turned, 1 - frame[DEMO_LABEL], frame[DEMO_LABEL])
    return frame.astype(str).to_dict("records")


def edgeml(*args) -> str:
    done = subprocess.run([str(BIN / "edgeml"), *map(str, args)], capture_output=True, text=True, env=run_env(),
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, demo_bundle):
    require_mosquitto()
    tmp = tmp_path_factory.mktemp("performance-e2e")
    broker = fleet_broker(tmp / "mosquitto").start()
    store = f"sqlite:///{tmp / 'fleet.db'}"
    edgeml("registry", "add", demo_bundle, "--store", store)
    config = tmp / "fleet.toml"
    config.write_text(f'[broker]\nurl = "{broker.url}"\n\n[store]\nurl = "{store}"\n{POLICY}')
    # Started here, not by Controller.start: the controllers it starts are killed after each test, and this one
    # serves the whole module.
    controller = Controller(tmp, "--config", str(config))
    with open(controller.log_path, "ab") as log:
        controller.proc = subprocess.Popen(controller.args, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                           env=controller.env)
    sent: dict[str, list[list[dict]]] = {name: [] for name in FLEETS}
    try:
        controller.wait_log("subscribed to", timeout=60)
        devices = []
        for f, (name, flip) in enumerate(FLEETS.items()):
            for d, device in enumerate(DEVICES):
                rows = labelled_rows(200 + 10 * f + d, flip)
                sent[name].append(rows)
                cmd = [str(BIN / "edgeml-runtime"), "run", str(demo_bundle), "--fleet", name, "--device-id", device,
                       "--broker", broker.url, "--outbox", str(tmp / f"{name}-{device}.db"),
                       "--window-rows", str(WINDOW_ROWS)]
                proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True, env=run_env())
                devices.append((proc, "".join(json.dumps(r) + "\n" for r in rows)))
        for proc, text in devices:
            _, err = proc.communicate(text, timeout=120)
            assert proc.returncode == 0, err
        yield {"store": store, "sent": sent, "controller": controller, "config": str(config)}
    finally:
        code = controller.stop() if controller.proc.poll() is None else controller.proc.returncode
        broker.stop()
    assert code == 0, controller.log()


def expected_matrix(bundle, devices: list[list[dict]]) -> np.ndarray:
    """What the test computes: the same rows scored by ``edgeml_runtime.Model``, counted by scikit-learn."""
    from edgeml_runtime import Model

    model = Model.load(bundle)
    label, classes = model.manifest.label, list(model.classes)
    total = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for rows in devices:
        predicted = model.predict([{k: v for k, v in r.items() if k != label} for r in rows]).labels
        total += confusion_matrix([int(r[label]) for r in rows], list(predicted), labels=classes)
    return total


def test_flipped_labels_give_a_performance_decision_and_honest_ones_none(fleet):
    from edgeml.fleet.store import Store

    def decisions():
        return json.loads(edgeml("fleet", "decisions", "--json", "--store", fleet["store"]))

    wait_until(lambda: any(d["kind"] == "performance" for d in decisions()), 60,
               what="a performance decision for the flipped fleet", interval=0.5)
    fleet["controller"].wait_log("published decision", timeout=30)
    assert [(d["fleet"], d["kind"]) for d in decisions()] == [("flipped", "performance")]
    with Store.open(fleet["store"]) as store:
        [decision] = store.decisions()
    p = decision.evidence["performance"]
    assert p["metric"] == "accuracy" and p["labelled"] >= 400 and p["margin"] == 0.1 and p["drop"] > 0.1
    assert p["labelled"] == sum(d["labelled"] for d in p["devices"].values()) == sum(map(sum, p["counts"]["matrix"]))
    status = json.loads(edgeml("fleet", "status", "--json", "--config", fleet["config"]))["fleets"]
    shown = {name: next(iter(f["bundles"].values()))["performance"] for name, f in status.items()}
    assert shown["flipped"]["state"] == "drop" and shown["flipped"]["metric"] == "accuracy"
    assert {n: s["state"] for n, s in shown.items() if n != "flipped"} == {n: "ok" for n in shown if n != "flipped"}
    assert all(s["labelled"] > 0 for s in shown.values()), shown
    text = edgeml("fleet", "status", "--config", fleet["config"], "--fleet", "flipped")
    assert re.search(r"performance: drop; live accuracy 0\.\d{3} on [\d,]+ labelled rows( \(judged from [\d,]+\))? "
                     r"against", text), text


def test_the_store_holds_the_counts_the_rows_give(fleet, demo_bundle):
    from edgeml.fleet.store import Store
    from edgeml_runtime.protocol import add_performance

    with Store.open(fleet["store"]) as store:
        stored = {name: store.windows(name, None) for name in FLEETS}
        assert store.rejected() == []
    for name in FLEETS:
        assert len(stored[name]) == len(DEVICES) * ROWS // WINDOW_ROWS
        total = add_performance(w.performance for w in stored[name])
        expected = expected_matrix(demo_bundle, fleet["sent"][name])
        assert total == {"kind": "classes", "labelled": len(DEVICES) * ROWS, "unknown": 0, "unlabelled": 0,
                         "matrix": expected.tolist()}, name


def test_a_csv_with_labels_gives_windows_with_the_counts_and_one_without_none(demo_bundle, demo_rows, tmp_path):
    """``edgeml-runtime run`` without a broker, windows to ``--drift-output``: labels as CSV text, some unreadable."""
    from conftest import write_csv
    from jsonschema import Draft202012Validator

    from edgeml.data.demo import DEMO_LABEL, demo_frame
    from edgeml_runtime import Model
    from edgeml_runtime.protocol import add_performance, schema

    rows = demo_frame(rows=300, seed=5, label=True).astype(str).to_dict("records")
    for i in (0, 7, 150):
        rows[i][DEMO_LABEL] = ""  # not logged: unlabelled, still scored
    rows[8][DEMO_LABEL] = "n/a"
    rows[9][DEMO_LABEL] = "3"  # a number, but no class: unknown
    labelled = write_csv(tmp_path / "labelled.csv", rows)

    def windows(path) -> list[dict]:
        out = tmp_path / f"{path.stem}.jsonl"
        done = subprocess.run([str(BIN / "edgeml-runtime"), "run", str(demo_bundle), "--device-id", "d", "--fleet",
                               "f", "--input", str(path), "--drift-output", str(out), "--window-rows", "100"],
                              capture_output=True, text=True, env=run_env(), timeout=120)
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in out.read_text().splitlines()]

    got = windows(labelled)
    assert [w["rows"] for w in got] == [100, 100, 100] and all("performance" in w for w in got)
    model = Model.load(demo_bundle)
    predicted = model.predict([{k: v for k, v in r.items() if k != DEMO_LABEL} for r in rows]).labels
    kept = [i for i in range(300) if i not in (0, 7, 150, 8, 9)]
    expected = confusion_matrix([int(rows[i][DEMO_LABEL]) for i in kept], [predicted[i] for i in kept],
                                labels=list(model.classes))
    assert add_performance(w["performance"] for w in got) == {
        "kind": "classes", "labelled": 295, "unknown": 1, "unlabelled": 4, "matrix": expected.tolist()}
    assert got[1]["performance"]["unlabelled"] == 1  # row 150 is in the second window, and counted there
    drift = schema("drift")
    described = Draft202012Validator({"$defs": drift["$defs"], **drift["properties"]["performance"]})
    for w in got:
        described.validate(w["performance"])
    assert not any("performance" in w for w in windows(demo_rows))  # no label column: windows as before
