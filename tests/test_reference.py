"""The drift reference written at build time: deciles, shares and missing rates of the real training split."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from edgeml.bundle.reference import QUANTILES, build_reference
from edgeml.data.ingest import read_table
from edgeml.data.prepare import prepare
from edgeml_runtime.drift import DriftMonitor, DriftSettings
from edgeml_runtime.schema import InputSchema


def _training(path, label, drop=()):
    data = prepare(read_table(path).frame, label, drop=drop)
    return data.inputs, data.calibration, data.fit_rows  # the inputs are described on train+validation


@pytest.fixture(scope="module")
def telco(datasets):
    """Telco churn: numeric (one with blanks), boolean and categorical inputs."""
    return _training(datasets / "telco-churn.csv", "Churn")


@pytest.fixture(scope="module")
def telco_reference(telco):
    inputs, feeds, train = telco
    return build_reference(feeds, inputs, np.zeros(100, dtype=np.int64), "classification", ("No", "Yes"))


def _values(feeds, inputs, name):
    col = next(c for c in inputs.columns if c.name == name)
    return feeds[col.features[0]].ravel()


def test_numeric_edges_are_training_deciles_and_shares_count_the_bins(telco, telco_reference):
    inputs, feeds, _ = telco
    for name in ("tenure", "MonthlyCharges", "TotalCharges", "SeniorCitizen"):
        entry = telco_reference["columns"][name]
        x = _values(feeds, inputs, name)
        present = x[~np.isnan(x)]
        deciles = [d for d in np.unique(np.quantile(present, QUANTILES, method="inverted_cdf")) if d < present.max()]
        # each edge cuts the training values exactly where its decile does, halfway to the next value
        assert len(entry["edges"]) == len(deciles)
        for d, e in zip(deciles, entry["edges"], strict=False):
            assert e == (float(d) + float(present[present > d].min())) / 2
        # right-closed bins, counted independently of the runtime's counter
        bounds = [-np.inf, *entry["edges"], np.inf]
        expected = [np.mean((present > lo) & (present <= hi)) for lo, hi in zip(bounds, bounds[1:], strict=False)]
        np.testing.assert_allclose(entry["shares"], expected, rtol=0, atol=1e-12)
        assert sum(entry["shares"]) == pytest.approx(1.0)
        assert all(s > 0 for s in entry["shares"]), "every bin holds training values"
        assert entry["range"] == [float(present.min()), float(present.max())]
        assert entry["missing_rate"] == pytest.approx(np.isnan(x).mean())
    assert telco_reference["columns"]["TotalCharges"]["missing_rate"] > 0  # blanks in the real file
    assert telco_reference["columns"]["SeniorCitizen"]["edges"] == [0.5]  # a 0/1 column: two bins


def test_categorical_and_boolean_shares_match_the_training_split(telco, telco_reference):
    inputs, feeds, train = telco
    contract = telco_reference["columns"]["Contract"]
    counts = train["Contract"].value_counts(normalize=True)
    assert contract["categories"] == ["Month-to-month", "One year", "Two year"]
    assert contract["shares"] == pytest.approx([*(counts[c] for c in contract["categories"]), 0.0])
    partner = telco_reference["columns"]["Partner"]
    x = _values(feeds, inputs, "Partner")
    assert partner["kind"] == "boolean"
    assert partner["shares"] == pytest.approx([np.mean(x == 0), np.mean(x == 1)])
    for entry in telco_reference["columns"].values():
        assert sum(entry["shares"]) == pytest.approx(1.0)


def test_other_bucket_counts_training_rows_outside_the_kept_categories(telco):
    inputs, feeds, train = telco
    kept = InputSchema(tuple(replace(c, categories=("DSL", "No")) if c.name == "InternetService" else c
                             for c in inputs.columns))
    entry = build_reference(feeds, kept, [0], "classification", ("No", "Yes"))["columns"]["InternetService"]
    fiber = np.mean(train["InternetService"] == "Fiber optic")
    assert entry["categories"] == ["DSL", "No"]
    assert entry["shares"][-1] == pytest.approx(fiber) and fiber > 0.3


def test_device_bins_the_training_split_exactly_as_the_reference(telco, telco_reference):
    inputs, feeds, _ = telco
    rows = len(next(iter(feeds.values())))
    monitor = DriftMonitor(telco_reference, inputs, DriftSettings(window_rows=rows + 1), clock=lambda: 0.0)
    monitor.update(feeds, np.zeros(rows, dtype=np.int64))
    window = monitor.flush()
    for name, col in window["columns"].items():
        entry = telco_reference["columns"][name]
        present = rows - col["missing"]
        assert [c / present for c in col["counts"]] == pytest.approx(entry["shares"], abs=1e-12), name
        assert col["psi"] == pytest.approx(0, abs=1e-9) and col["p_value"] == 1.0 and col["status"] == "ok"
    assert window["verdict"] == {"status": "ok", "drifted_columns": [], "share": 0.0, "tests": 20,
                                 "level": 0.0005}  # 19 input columns and the output, at 0.01 / 20


def test_regression_output_reference_is_deciles_of_validation_predictions():
    schema = InputSchema(())
    predictions = np.linspace(400.0, 500.0, 1001)
    ref = build_reference({}, schema, predictions, "regression")
    out = ref["output"]
    assert out["kind"] == "numeric" and out["split"] == "valid" and ref["rows"]["valid"] == 1001
    deciles = np.quantile(predictions.astype(np.float32), QUANTILES, method="inverted_cdf")
    assert out["edges"] == pytest.approx(deciles + 0.05, abs=1e-4)  # halfway to the next prediction, 0.1 away
    assert out["shares"] == pytest.approx([0.1] * 10, abs=2e-3)
    assert sum(out["shares"]) == pytest.approx(1.0) and "missing_rate" not in out


def test_build_writes_the_reference_into_the_manifest(demo_bundle):
    m = json.loads((demo_bundle / "manifest.json").read_text())
    ref = m["reference"]
    assert ref["format"] == 1 and ref["bins"] == "right-closed"
    split = m["provenance"]["data"]["split"]  # inputs on train+validation, the shipped model's output on test
    assert ref["rows"] == {"train": split["train"] + split["valid"], "test": split["test"]}
    assert ref["output"]["split"] == "test"
    assert list(ref["columns"]) == [c["name"] for c in m["inputs"]]
    assert ref["columns"]["timestamp"]["kind"] == "datetime" and ref["columns"]["timestamp"]["monitored"] is False
    assert ref["output"]["kind"] == "classes" and ref["output"]["classes"] == m["classes"]
    assert sum(ref["output"]["shares"]) == pytest.approx(1.0)
    json.dumps(ref, allow_nan=False)
