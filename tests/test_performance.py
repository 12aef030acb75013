"""Live performance counts: exact on fixed inputs (against scikit-learn), additive across windows and devices,
checked by the controller key by key, and judged by the fleet (a ``performance`` decision, with hysteresis)."""

from __future__ import annotations

import numpy as np
import pytest
from fleet_helpers import REFERENCE, SCHEMA, T0, decoded, model, store, url  # noqa: F401  (fixtures)
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
)

from edgeml.fleet.judge import decide, fleet_state
from edgeml.fleet.performance import drop, judge_performance, metrics
from edgeml.fleet.policy import Policy
from edgeml.fleet.rows import prepare
from edgeml_runtime.drift import DriftMonitor, DriftSettings
from edgeml_runtime.errors import ProtocolError
from edgeml_runtime.performance import PerformanceCounter
from edgeml_runtime.protocol import VerdictRule, add_performance, check_performance, envelopes, examples
from edgeml_runtime.protocol.topics import DeviceTopics

CLASSES = ("low", "mid", "high")
RULE = VerdictRule(min_rows=1)


# -- the device's counter, exact ------------------------------------------------------------------------------

def test_the_confusion_matrix_is_scikit_learns_and_unreadable_labels_are_unlabelled():
    rng = np.random.default_rng(7)
    true = rng.choice(CLASSES, size=500).tolist()
    predicted = rng.choice(CLASSES, size=500).tolist()
    sent = list(true)
    for i in (3, 40, 41):
        sent[i] = ""  # empty: unlabelled
    for i in (5, 77):
        sent[i] = None  # null: unlabelled
    sent[9], sent[10] = "unheard-of", 12  # read, but not a class: unknown
    sent[11] = f"  {true[11]} "  # a CSV value with spaces is still its class
    counter = PerformanceCounter("classification", CLASSES).update(sent, predicted)
    kept = [i for i in range(500) if i not in (3, 40, 41, 5, 77, 9, 10)]
    expected = confusion_matrix([true[i] for i in kept], [predicted[i] for i in kept], labels=list(CLASSES))
    c = counter.counts
    assert c["matrix"] == expected.tolist()
    assert (c["labelled"], c["unknown"], c["unlabelled"]) == (len(kept), 2, 5)
    assert counter.reset().counts["matrix"] == [[0] * 3] * 3 and counter.counted == 0


def test_numeric_classes_read_from_csv_text_and_json_numbers():
    counter = PerformanceCounter("classification", (0, 1))
    counter.update(["1", "0", 1, 1.0, "1.0", "0.0", True, "yes", "2", 2.5], [1, 1, 1, 0, 1, 0, 1, 1, 0, 0])
    assert counter.counts == {"kind": "classes", "labelled": 6, "unknown": 2, "unlabelled": 2,
                              "matrix": [[1, 1], [1, 3]]}


def test_regression_sums_are_exact_and_give_scikit_learns_metrics():
    rng = np.random.default_rng(3)
    true = rng.normal(50.0, 10.0, size=400)
    predicted = (true + rng.normal(0.5, 3.0, size=400)).astype(np.float32)
    sent = [f"{v!r}" for v in true.tolist()]  # text, as CSV gives it
    sent[0], sent[1], sent[2] = "", "n/a", "inf"
    counter = PerformanceCounter("regression").update(sent, predicted)
    y, p = true[3:].tolist(), [float(v) for v in predicted[3:]]
    e = [a - b for a, b in zip(p, y, strict=True)]
    expected = {"kind": "values", "labelled": 397, "unlabelled": 3, "sum_error": 0.0, "sum_abs_error": 0.0,
                "sum_squared_error": 0.0, "sum_label": 0.0, "sum_label_squared": 0.0}
    for err, label in zip(e, y, strict=True):  # the same sums, in the same order: equal to the last bit
        expected["sum_error"] += err
        expected["sum_abs_error"] += abs(err)
        expected["sum_squared_error"] += err * err
        expected["sum_label"] += label
        expected["sum_label_squared"] += label * label
    assert counter.counts == expected
    live = metrics(counter.counts)
    assert live["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y, p)), abs=1e-6)
    assert live["mae"] == pytest.approx(mean_absolute_error(y, p), abs=1e-6)
    assert live["r2"] == pytest.approx(r2_score(y, p), abs=1e-6)


@pytest.mark.parametrize("classes", [(0, 1), CLASSES])
def test_metrics_from_the_matrix_are_the_builds(classes):
    rng = np.random.default_rng(len(classes))
    true = rng.choice(len(classes), size=300, p=[0.7, 0.3] if len(classes) == 2 else None)
    predicted = np.where(rng.random(300) < 0.8, true, rng.choice(len(classes), size=300))
    c = PerformanceCounter("classification", classes).update([classes[i] for i in true],
                                                               [classes[i] for i in predicted]).counts
    live = metrics(c)
    assert live["accuracy"] == round(accuracy_score(true, predicted), 6)
    assert live["balanced_accuracy"] == round(balanced_accuracy_score(true, predicted), 6)
    average = "binary" if len(classes) == 2 else "macro"
    assert live["f1"] == round(f1_score(true, predicted, average=average), 6)


@pytest.mark.parametrize("batch", [1, 32, 120])
def test_rows_a_batch_put_into_a_closed_window_are_counted_in_it(batch):
    """Windows of 50 rows, batches of 1, 32 or 120 rows: each window's matrix is that of exactly its rows."""
    monitor = DriftMonitor(REFERENCE, SCHEMA, DriftSettings(window_rows=50, rule=RULE), clock=lambda: T0,
                           performance=PerformanceCounter("classification", (0, 1)))
    rng = np.random.default_rng(11)
    true, predicted = rng.integers(0, 2, size=200), rng.integers(0, 2, size=200)
    for start in range(0, 200, batch):
        stop = min(start + batch, 200)
        values = rng.uniform(1, 29, size=(stop - start, 1)).astype(np.float32)
        monitor.update({f"x{i}": values for i in range(3)}, predicted[start:stop])
        monitor.count_labels([str(v) for v in true[start:stop]], predicted[start:stop])
    windows = monitor.poll()
    assert [w["rows"] for w in windows] == [50, 50, 50, 50] and monitor.flush() is None
    for k, w in enumerate(windows):
        rows = slice(50 * k, 50 * (k + 1))
        assert w["performance"]["matrix"] == confusion_matrix(true[rows], predicted[rows], labels=[0, 1]).tolist()
    total = add_performance(w["performance"] for w in windows)
    assert total["matrix"] == confusion_matrix(true, predicted).tolist() and total["labelled"] == 200


def test_a_window_without_labelled_rows_carries_no_performance():
    monitor = DriftMonitor(REFERENCE, SCHEMA, DriftSettings(window_rows=10, rule=RULE), clock=lambda: T0,
                           performance=PerformanceCounter("classification", (0, 1)))
    values = np.full((10, 1), 15.0, dtype=np.float32)
    monitor.update({f"x{i}": values for i in range(3)}, np.zeros(10, dtype=np.int64))
    monitor.count_labels([""] * 10, np.zeros(10, dtype=np.int64))  # the column, but nothing to read in it
    [window] = monitor.poll()
    assert "performance" not in window


# -- the protocol: adding up, and what the controller refuses -----------------------------------------------

def test_counts_add_across_windows_and_devices_exactly():
    rng = np.random.default_rng(5)
    parts, true_all, predicted_all = [], [], []
    for _ in range(6):  # 3 devices x 2 windows
        true, predicted = rng.integers(0, 2, size=80), rng.integers(0, 2, size=80)
        parts.append(PerformanceCounter("classification", (0, 1)).update(true.tolist(), predicted.tolist()).counts)
        true_all += true.tolist()
        predicted_all += predicted.tolist()
    total = add_performance(parts)
    assert total == {"kind": "classes", "labelled": 480, "unknown": 0, "unlabelled": 0,
                     "matrix": confusion_matrix(true_all, predicted_all).tolist()}
    with pytest.raises(ProtocolError, match="of another shape: add only windows of the same bundle"):
        add_performance([parts[0], {**parts[0], "matrix": [[1, 0, 0], [0, 0, 0], [0, 0, 0]]}])


GOOD = {"kind": "classes", "labelled": 3, "unknown": 0, "unlabelled": 0, "matrix": [[1, 1], [0, 1]]}
GOOD_VALUES = {"kind": "values", "labelled": 2, "unlabelled": 0, "sum_error": -1.0, "sum_abs_error": 1.0,
               "sum_squared_error": 0.5, "sum_label": 4.0, "sum_label_squared": 8.5}


@pytest.mark.parametrize("bad,key", [
    ({**GOOD, "kind": "confusion"}, "performance.kind is 'confusion'"),
    ({**GOOD, "labelled": -1}, r"performance.labelled is -1; it must be a whole number"),
    ({**GOOD, "unknown": 1.5}, r"performance.unknown is 1.5"),
    ({k: v for k, v in GOOD.items() if k != "unlabelled"}, "performance.unlabelled is None"),
    ({**GOOD, "matrix": [[1, 1], [0]]}, r"performance.matrix\[1\] is \[0\], not a list of 2 counts"),
    ({**GOOD, "matrix": [[1, 1], [0, True]]}, r"performance.matrix\[1\]\[1\] is True"),
    ({**GOOD, "matrix": "[[1]]"}, "performance.matrix is '\\[\\[1\\]\\]', not a k × k"),
    ({**GOOD, "labelled": 4}, "performance.labelled is 4, but the matrix counts 3 rows"),
    ({**GOOD, "accuracy": 0.9}, "performance.accuracy is not a key of classes counts"),
    ({**GOOD_VALUES, "sum_squared_error": -0.5}, "performance.sum_squared_error is -0.5; it must be a number, at"),
    ({**GOOD_VALUES, "sum_error": "1"}, "performance.sum_error is '1'; it must be a number, finite"),
    ([1, 2], "performance is list, not a JSON object"),
])
def test_a_malformed_performance_is_refused_naming_the_key(bad, key):
    with pytest.raises(ProtocolError, match=key):
        check_performance(bad, "edgeml/plant-a/pi-07/drift")
    reason = prepare("edgeml/plant-a/pi-07/drift", {**examples()["drift"], "performance": bad}, 0.0).reason
    assert reason is not None and reason.startswith("edgeml/plant-a/pi-07/drift: performance")


def test_the_store_keeps_good_counts_rejects_bad_ones_and_stores_a_version_4_window(store):  # noqa: F811
    example = examples()["drift"]
    old = {k: v for k, v in example.items() if k != "performance"} | {"format_version": 4, "seq": 1}
    bad = {**example, "seq": 2, "performance": {**GOOD, "matrix": [[1, 1], [0, -1]]}}
    batch = store.record_messages([decoded("edgeml/plant-a/pi-07/drift", m) for m in (example, old, bad)])
    assert batch.outcomes == ("stored", "stored", "rejected")
    stored = {w.seq: w.performance for w in store.windows("plant-a", example["model"]["bundle_sha256"])}
    assert stored == {41: example["performance"], 1: {}}
    [rejected] = store.rejected()
    assert rejected.topic == "edgeml/plant-a/pi-07/drift"
    assert rejected.reason == ("edgeml/plant-a/pi-07/drift: performance.matrix[1][1] is -1; it must be a whole "
                               f"number from 0 to {2**63 - 1}")


# -- the fleet: summed per bundle, judged against the build ---------------------------------------------------

BUNDLE = "ab" * 32
MANIFEST = {"name": "demo", "version": "1", "task": "classification", "classes": [0, 1], "reference": REFERENCE,
            "search": {"metric": "roc_auc"}, "metrics": {"test": {"accuracy": 0.9, "f1": 0.5, "roc_auc": 0.95}}}
POLICY = Policy(slice=60.0, slices=5, drifted_slices=3, min_devices=3, cooldown=0, min_labelled=300,
                performance_margin=0.05)


def labelled_window(device: str, seq: int, ended: float, flipped: float, rows: int, rng) -> tuple:
    """A window of ``rows`` rows counted by a real DriftMonitor: predictions right 90 % of the time, then a share
    ``flipped`` of the labels turned over (the world's answers changed)."""
    now = [ended - 30.0]
    monitor = DriftMonitor(REFERENCE, SCHEMA, DriftSettings(window_rows=100_000, rule=RULE), clock=lambda: now[0],
                           performance=PerformanceCounter("classification", (0, 1)))
    predicted = rng.integers(0, 2, size=rows)
    true = np.where(rng.random(rows) < 0.9, predicted, 1 - predicted)
    true = np.where(rng.random(rows) < flipped, 1 - true, true)
    values = np.linspace(1.0, 29.0, rows, dtype=np.float32).reshape(-1, 1)
    monitor.update({f"x{i}": values for i in range(3)}, predicted)
    monitor.count_labels([str(v) for v in true], predicted)
    now[0] = ended
    topics = DeviceTopics("plant-a", device)
    sent = envelopes.drift(topics, session=1, seq=seq, model=model(BUNDLE), outbox_dropped=0, window=monitor.flush())
    return decoded(topics.drift, {**sent, "historical": False}), confusion_matrix(true, predicted, labels=[0, 1])


def stream(store, slices: range, flipped, rows: int = 60, seed: int = 0) -> dict[int, np.ndarray]:  # noqa: F811
    """One window per device per slice; the confusion matrix the test computes of each slice's windows."""
    rng, batch, matrices = np.random.default_rng(seed), [], {}
    for k in slices:
        matrices[k] = np.zeros((2, 2), dtype=np.int64)
        for d in ("pi-0", "pi-1", "pi-2"):
            message, matrix = labelled_window(d, k, T0 + 60.0 * k + 30.0, flipped(k), rows, rng)
            batch.append(message)
            matrices[k] += matrix
    store.record_messages(batch)
    return matrices


def judge(store, slices: range) -> list[tuple[int, str, dict]]:  # noqa: F811
    out = []
    for k in slices:
        for d in decide(store, POLICY, holder="c1", lease_seconds=30, now=T0 + 60.0 * (k + 1) + 1.0):
            if d.kind.startswith("performance"):
                out.append((k, d.kind, d.evidence))
    return out


def horizon_drop(matrices: dict, k: int) -> tuple[np.ndarray, float]:
    """The test's own sum of the 5 slices ending with slice ``k``, and its accuracy's drop from the build's 0.9."""
    total = sum(matrices[j] for j in range(k - 4, k + 1) if j in matrices)
    return total, round(0.9 - round(np.trace(total) / total.sum(), 6), 6)


def test_flipped_labels_make_a_performance_decision_and_honest_ones_recover_it(store):  # noqa: F811
    store.add_bundle(BUNDLE, MANIFEST, "test")
    matrices = stream(store, range(5), lambda k: 0.0)
    assert judge(store, range(5)) == []  # honest labels: live accuracy near the build's 0.9
    assert all(horizon_drop(matrices, k)[1] <= 0.05 for k in range(5))
    matrices |= stream(store, range(5, 10), lambda k: 0.4)
    found = judge(store, range(5, 10))
    first = next(k for k in range(5, 10) if horizon_drop(matrices, k)[1] > 0.05)
    assert [(k, kind) for k, kind, _ in found] == [(first, "performance")]  # once, then it is the state
    matrix, expected_drop = horizon_drop(matrices, first)
    p = found[0][2]["performance"]
    assert p["counts"]["matrix"] == matrix.tolist() and p["labelled"] == int(matrix.sum()) == 900
    assert p["metric"] == "accuracy" and "search metric 'roc_auc' needs probabilities" in p["chosen"]
    assert p["live"] == round(np.trace(matrix) / matrix.sum(), 6) and p["build"] == 0.9
    assert p["drop"] == expected_drop == drop("accuracy", build=0.9, live=p["live"]) and p["margin"] == 0.05
    assert sorted(p["devices"]) == ["pi-0", "pi-1", "pi-2"]
    assert sum(d["labelled"] for d in p["devices"].values()) == 900
    assert "performance dropped: live accuracy" in found[0][2]["summary"]
    assert fleet_state(store.decisions("plant-a"))[BUNDLE]["performance"] == "drop"
    matrices |= stream(store, range(10, 16), lambda k: 0.0, seed=1)
    back = next(k for k in range(10, 16) if horizon_drop(matrices, k)[1] <= 0.025)
    assert any(0.025 < horizon_drop(matrices, k)[1] for k in range(10, back))  # hysteresis: not yet
    assert [(k, kind) for k, kind, _ in judge(store, range(10, 16))] == [(back, "performance_recovered")]
    assert fleet_state(store.decisions("plant-a"))[BUNDLE]["performance"] == "ok"


def test_a_handful_of_labelled_rows_decides_nothing(store):  # noqa: F811
    store.add_bundle(BUNDLE, MANIFEST, "test")
    stream(store, range(5), lambda k: 1.0, rows=10)  # every label wrong, but 150 labelled rows, fewer than 300
    assert judge(store, range(5)) == []


def test_the_metric_and_counts_of_another_shape():
    class W:
        def __init__(self, device, performance):
            self.device, self.session, self.seq, self.performance = device, 1, 0, performance

    regression = {**MANIFEST, "task": "regression", "classes": [], "metrics": {"test": {"rmse": 2.0, "mae": 1.5}}}
    values = {**GOOD_VALUES, "labelled": 4, "sum_squared_error": 25.0}  # RMSE 2.5: 25 % worse than 2.0
    p = judge_performance(regression, [W("a", values), W("b", GOOD)], POLICY)
    assert (p.metric, p.live, p.drop, p.labelled) == ("rmse", 2.5, 0.25, 4)
    assert p.unfit == {"b": {"windows": 1, "reason": "classes counts for a bundle that counts values"}}
    assert not p.dropping  # 4 labelled rows, fewer than min_labelled
    three = {**GOOD, "matrix": [[1, 1, 0], [0, 1, 0], [0, 0, 0]]}
    p = judge_performance(MANIFEST, [W("a", three)], POLICY)
    assert p.counts is None and "not a 2 × 2 list" in p.unfit["a"]["reason"]
    with pytest.raises(Exception, match="performance_metric = 'roc_auc': must be one of auto, accuracy"):
        Policy(performance_metric="roc_auc")
    with pytest.raises(Exception, match="performance_margin = 0: must be a number above 0"):
        Policy.from_table({"performance_margin": 0}, "fleet.toml")
    with pytest.raises(Exception, match="min_labelled = 0: must be a whole number from 1"):
        Policy(min_labelled=0)
