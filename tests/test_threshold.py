"""A binary classifier's decision threshold: tuned on validation predictions, stored in the manifest, applied by
the runtime for every artifact, by the sample self-test, ``edgeml verify`` and the generated firmware."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess

import click
import numpy as np
import pytest
from conftest import AI4I_DROP, build_bundle

from edgeml.config import BuildConfig
from edgeml.data.ingest import read_input
from edgeml.data.prepare import prepare
from edgeml.export.tflite.firmware import HEADER, SOURCE, write_firmware
from edgeml.progress import summary
from edgeml.search.loss import validation_loss
from edgeml.search.threshold import MIN_POSITIVES, decide, positive_labels, score, tune
from edgeml.verify.baseline import report_split
from edgeml.verify.bundle_check import check_bundle
from edgeml_runtime import Model
from edgeml_runtime.bundle import read_manifest
from edgeml_runtime.errors import BundleError
from edgeml_runtime.manifest import Manifest
from edgeml_runtime.manifest_artifacts import AbsoluteTolerance
from edgeml_runtime.samples import Outputs, compare, read_samples

CC = shutil.which("cc") or shutil.which("gcc")
AI4I = dict(label="Machine failure", drop=AI4I_DROP, seed=0)


# --- the tuning function, on fixed scores --------------------------------------------------------------------


def test_f1_threshold_is_the_best_midpoint():
    scores = np.array([0.05, 0.1, 0.2, 0.3, 0.35, 0.6, 0.9])
    y = np.array([0, 0, 0, 1, 1, 0, 1])
    assert tune(scores, y, "f1") == 0.25  # F1 6/7 there; 0.5 (argmax) gives 1/2
    assert score("f1", y, positive_labels(scores, 0.25)) == pytest.approx(6 / 7)


def test_ties_go_to_the_threshold_nearest_one_half_then_the_lower():
    # every cut between 0.2 and 0.8 is perfect: 0.5 (argmax) is kept
    assert tune(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1]), "f1") == 0.5
    # accuracy 3/4 at 0.4 and at 0.6, 2/4 at 0.5: equally near 0.5, the lower wins
    assert tune(np.array([0.35, 0.45, 0.55, 0.65]), np.array([0, 1, 0, 1]), "accuracy") == 0.4
    # a score equal to the threshold is negative, as argmax gives a 0.5/0.5 tie to the first class
    assert positive_labels(np.array([0.25, 0.2500001, 0.5]), 0.25).tolist() == [0, 1, 1]


def test_balanced_accuracy_and_recall_thresholds():
    scores = np.array([0.02, 0.05, 0.08, 0.12, 0.15, 0.3, 0.35, 0.55, 0.7, 0.9] * 3)
    y = np.array([0, 0, 0, 0, 1, 0, 1, 0, 1, 1] * 3)
    assert tune(scores, y, "balanced_accuracy") == 0.135  # all four positives kept, four of six negatives
    recall = decide(scores, y, "recall", 0.4)  # recall alone would call every row positive
    assert (recall.metric, recall.threshold) == ("balanced_accuracy", 0.135)
    assert recall.valid == pytest.approx((1 + 4 / 6) / 2) and recall.argmax == pytest.approx((0.5 + 5 / 6) / 2)


def test_the_rule_for_threshold_free_metrics_and_few_positives():
    rng = np.random.default_rng(3)
    scores = rng.random(200)
    y = (scores + rng.normal(0, 0.3, 200) > 0.9).astype(int)
    rare = decide(scores, y, "roc_auc", 0.12)
    assert rare.metric == "f1" and rare.threshold == tune(scores, y, "f1") and "under 20%" in rare.reason
    common = decide(scores, y, "auto", 0.35)
    assert (common.threshold, common.metric) == (0.5, None)
    few = np.zeros(200, dtype=int)
    few[np.argsort(scores)[-(MIN_POSITIVES - 1):]] = 1
    kept = decide(scores, few, "f1", 0.05)
    assert (kept.threshold, kept.metric) == (0.5, None) and f"fewer than {MIN_POSITIVES}" in kept.reason
    few[np.argsort(scores)[0]] = 1  # the tenth positive: tuned
    assert decide(scores, few, "f1", 0.05).metric == "f1"


def test_argmax_that_calls_every_row_one_class_is_tuned_for_accuracy():
    # A short, slow-learning boosted model (telco-churn, 26 % churn, 17 trees at learning rate 0.026) ranked well
    # (ROC AUC 0.87) but never gave churn more than 0.5: argmax called every customer loyal.
    rng = np.random.default_rng(5)
    y = (rng.random(400) < 0.26).astype(int)
    squashed = np.clip(0.2 + 0.2 * y + rng.normal(0, 0.06, 400), 0.01, 0.49)
    tuned = decide(squashed, y, "roc_auc", 0.26)
    assert tuned.metric == "accuracy" and tuned.threshold < 0.5 and "calls every validation row negative" in \
        tuned.reason
    assert tuned.valid > tuned.argmax == pytest.approx(1 - y.mean())
    assert len(np.unique(positive_labels(squashed, tuned.threshold))) == 2
    spread = np.clip(squashed + 0.25 * y, 0, 1)  # the same ranking, crossing 0.5: argmax stays
    assert (decide(spread, y, "roc_auc", 0.26).threshold, decide(spread, y, "roc_auc", 0.26).metric) == (0.5, None)


def test_near_ties_are_measured_against_the_threshold():
    tolerance = AbsoluteTolerance(atol=1e-4)
    want = Outputs(labels=("no", "yes", "no"), probabilities=np.array([[0.74995, 0.25005], [0.4, 0.6], [0.5, 0.5]]))
    got = Outputs(labels=("no", "yes", "yes"), probabilities=np.array([[0.75001, 0.24999], [0.4, 0.6], [0.5, 0.5]]))
    against = compare(want, got, tolerance, ("no", "yes"), threshold=0.25)
    assert against.ties == 0 and against.label_mismatches == 1  # rows[2]: 0.5 is far from 0.25
    want0 = Outputs(labels=("yes", "yes", "no"), probabilities=want.probabilities)
    forgiven = compare(want0, got, tolerance, ("no", "yes"), threshold=0.25)
    assert forgiven.ties == 1 and [d.row for d in forgiven.differences] == [2]
    plain = compare(want0, got, tolerance, ("no", "yes"))  # argmax: rows[0] is no tie, rows[2] (0.5/0.5) is
    assert [d.row for d in plain.differences] == [0] and plain.ties == 1


def test_recall_and_balanced_accuracy_are_search_metrics():
    y, p = np.array([0, 0, 0, 1, 1]), np.array([0, 1, 0, 1, 0])
    assert validation_loss("recall", p, y, np.arange(2)) == pytest.approx(0.5)
    assert validation_loss("balanced_accuracy", p, y, np.arange(2)) == pytest.approx(1 - (2 / 3 + 0.5) / 2)
    assert validation_loss("f1", np.array([0, 1, 2, 2]), np.array([0, 1, 2, 1]), np.arange(3)) == pytest.approx(
        1 - (1 + 2 / 3 + 2 / 3) / 3)
    for metric in ("recall", "balanced_accuracy", "f1"):
        BuildConfig(data="x.csv", label="y", metric=metric)  # accepted


# --- a real build of ai4i2020 (3.4 % failures) -----------------------------------------------------------------


@pytest.fixture(scope="module")
def ai4i(datasets, tmp_path_factory):
    out = tmp_path_factory.mktemp("threshold") / "ai4i"
    result = build_bundle(out, data=str(datasets / "ai4i2020.csv"), target="x86-64", estimators=("lgbm",),
                          max_iter=3, **AI4I)
    table, label = read_input(str(datasets / "ai4i2020.csv"), AI4I["label"], seed=0)
    data = prepare(table.frame, label, drop=AI4I["drop"], seed=0, unnamed=table.unnamed)
    return out, result, data


def _f1(y, labels):
    return score("f1", y, labels)


def test_the_tuned_threshold_beats_argmax_on_test_f1_for_every_artifact(ai4i):
    out, result, data = ai4i
    decision = result.manifest.decision
    assert decision.metric == "f1" and decision.threshold < 0.5 and decision.valid > decision.argmax
    assert decision.rows == len(data.y["valid"]) and decision.positives == int(data.y["valid"].sum())
    assert read_manifest(out).decision == decision
    rows = {c: data.split.test[c].tolist() for c in data.split.test.columns}
    y = data.y["test"]
    for artifact in result.manifest.artifacts:
        got = Model.load(out, artifact=artifact.path).predict(rows)
        p = np.asarray(got.probabilities)
        index = np.array([result.manifest.classes.index(v) for v in got.labels])
        assert (index == (p[:, 1] > decision.threshold)).all(), artifact.path  # labels follow the threshold
        assert _f1(y, index) > _f1(y, p.argmax(axis=1)), artifact.path
        assert artifact.test_metrics["f1"] == pytest.approx(_f1(y, index), abs=1e-6)
    assert {a.format for a in result.manifest.artifacts} >= {"onnx", "tflite"}


def test_the_self_test_and_verify_refuse_an_altered_threshold(ai4i, tmp_path):
    out, result, _ = ai4i
    samples = read_samples(out, result.manifest)
    p1 = samples.outputs_for("model.onnx").probabilities[:, 1]
    moved = 0.0
    assert ((p1 > moved + 1e-3) & (p1 <= result.manifest.decision.threshold)).any()  # some sample rows flip
    copy = tmp_path / "altered"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["decision"]["threshold"] = moved
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=2))
    with pytest.raises(BundleError, match="does not score the bundle's sample rows"):
        Model.load(copy)
    report = check_bundle(copy)
    assert not report.passed
    assert {c.subject for c in report.checks if c.kind == "parity" and c.status == "fail"} == \
        {a.path for a in result.manifest.artifacts}
    assert check_bundle(out).passed


def test_a_threshold_is_refused_where_there_are_not_two_classes(ai4i):
    out, _, _ = ai4i
    d = json.loads((out / "manifest.json").read_text())
    d["classes"] = d["reference"]["output"]["classes"] = [0, 1, 2]
    a, b = d["reference"]["output"]["shares"]
    d["reference"]["output"]["shares"] = [a, b / 2, b / 2]
    with pytest.raises(BundleError, match="a threshold is for two classes only"):
        Manifest.from_dict(d)


def test_the_firmware_applies_the_threshold(ai4i, tmp_path):
    out, result, _ = ai4i
    threshold = result.manifest.decision.threshold
    write_firmware(out, tmp_path)
    header = (tmp_path / HEADER).read_text()
    assert f"#define EDGEML_THRESHOLD {threshold!r}" in header and "int edgeml_label(const float *p);" in header
    if CC is None:
        pytest.skip("no C compiler (cc) on this machine")
    tflite = next(a.path for a in result.manifest.artifacts if a.format == "tflite")
    expected = read_samples(out, result.manifest).outputs_for(tflite)
    (tmp_path / "main.c").write_text(
        '#include <stdio.h>\n#include "edgeml_model.h"\n'
        "int main(void) { float p[2]; while (scanf(\"%a %a\", &p[0], &p[1]) == 2) printf(\"%d\\n\", "
        "edgeml_label(p)); return 0; }\n")
    exe = tmp_path / "label"
    subprocess.run([CC, "-std=c99", "-Wall", "-Werror", str(tmp_path / "main.c"), str(tmp_path / SOURCE), "-lm",
                    "-o", str(exe)], check=True, capture_output=True, text=True)
    probabilities = np.vstack([expected.probabilities.astype(np.float32),
                               [[1 - threshold, threshold], [0.5, 0.5], [0.9, 0.1]]]).astype(np.float32)
    feed = "".join(f"{float(a).hex()} {float(b).hex()}\n" for a, b in probabilities)
    ran = subprocess.run([str(exe)], input=feed, check=True, capture_output=True, text=True).stdout.split()
    classes = result.manifest.classes
    want = [classes.index(v) for v in expected.labels]
    tail = (probabilities[-3:, 1].astype(np.float64) > threshold).astype(int).tolist()
    assert [int(v) for v in ran] == want + tail


def test_the_summary_shows_the_baseline_the_confusion_matrix_and_warns_on_one_class(ai4i):
    _, result, data = ai4i
    text = summary(result)
    assert "majority class 0 (the baseline): accuracy" in text and "confusion (rows true, columns predicted)" in text
    assert f"above {result.manifest.decision.threshold:.4g}" in text and "warning" not in text
    c = np.array(result.test_split.confusion)
    assert c.sum() == len(data.y["test"]) and c[1].sum() == int(data.y["test"].sum())
    assert result.test_split.baseline["accuracy"] == pytest.approx(1 - data.y["test"].mean(), abs=1e-6)
    one = report_split(data.y["test"], np.zeros(len(data.y["test"]), dtype=int), data.y["train"], (0, 1))
    warned = click.unstyle(summary(dataclasses.replace(result, test_split=one)))
    assert "warning: the model predicts 0 for every test row" in warned


def test_a_recall_build_tunes_for_balanced_accuracy(datasets, tmp_path):
    result = build_bundle(tmp_path / "recall", data=str(datasets / "ai4i2020.csv"), target="x86-64",
                          estimators=("lgbm",), max_iter=2, metric="recall", **AI4I)
    assert result.manifest.search.metric == "recall"
    assert result.manifest.decision.metric == "balanced_accuracy"
    assert result.manifest.metrics.test["balanced_accuracy"] > 0.5
