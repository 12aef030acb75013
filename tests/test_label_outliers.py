"""A regression label's few values far outside the rest are left out of the build, named in the summary and the
manifest, so that one typo cannot decide the model; ``--keep-label-outliers`` keeps them."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pandas as pd
import pytest
from conftest import BIN, run_env
from sklearn.datasets import load_diabetes

from edgeml.data.ingest import read_input
from edgeml.data.outliers import MAX_SHARE, find_label_outliers
from edgeml.data.prepare import prepare

SALARY = "Yearly brutto salary (without bonus and stocks) in EUR"


def test_the_salary_typos_are_left_out_and_a_smooth_tail_is_not(datasets):
    table, label = read_input(str(datasets / "it-salary-2020.csv"), SALARY)
    p = prepare(table.frame, label, drop=("Timestamp",))
    # the two salaries no one is paid (500 million and 99,999,999,999 a year) are gone, 850,000 stays
    assert [value for _, value in p.label_outliers] == [99_999_999_999.0, 500_000_000.0]
    assert [row for row, _ in p.label_outliers] == [474, 854]  # data rows, 1 = the first after the header
    assert len(p.frame) == table.rows - 2 and max(p.fit_matrix()[1].max(), p.y["test"].max()) == 850_000
    note = next(n for n in p.schema.notices if n.startswith("left out 2 rows"))
    assert "data row 474 (99,999,999,999), data row 854 (500,000,000)" in note
    assert "--keep-label-outliers" in note
    kept = prepare(table.frame, label, drop=("Timestamp",), keep_label_outliers=True)
    assert kept.label_outliers == () and len(kept.frame) == table.rows
    # ccpp's power output stretched over three orders of magnitude is a tail, not typos
    pe = pd.read_csv(datasets / "ccpp.csv")["PE"]
    assert find_label_outliers(np.exp((pe - 420) / 10)).empty and find_label_outliers(pe).empty


def test_many_far_values_are_a_tail_and_negative_labels_are_judged_raw():
    rng = np.random.default_rng(0)
    body = rng.normal(0.0, 1.0, 1000)
    few = pd.Series([*body, -80.0, 95.0])  # two of 1,002: beyond ±10 IQR (about ±14 sd) on the raw scale
    assert few.index[find_label_outliers(few)].tolist() == [1000, 1001]
    many = pd.Series([*body, *([95.0] * int(MAX_SHARE * 1000 + 2))])  # more than 0.5 %: the data, not typos
    assert find_label_outliers(many).empty
    assert find_label_outliers(pd.Series([1.0, 2.0, 1e12])).empty  # too few rows to place the quartiles


@pytest.fixture(scope="module")
def typo_csv(tmp_path_factory):
    """scikit-learn's diabetes table (442 rows) with one label typed a million times too large."""
    data = load_diabetes(as_frame=True).frame
    data.loc[100, "target"] = data.loc[100, "target"] * 1e6
    path = tmp_path_factory.mktemp("typo") / "diabetes.csv"
    data.to_csv(path, index=False)
    return path, float(data.loc[100, "target"])


def _build(csv, out, *flags):
    done = subprocess.run([str(BIN / "edgeml"), "build", "--data", str(csv), "--label", "target", "--target",
                           "x86-64", "--max-trials", "3", "--validation", "holdout", "--out", str(out), *flags],
                          capture_output=True, text=True, env=run_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    return done, json.loads((out / "manifest.json").read_text())


def test_a_build_leaves_the_typo_out_and_says_so(typo_csv, tmp_path):
    csv, typo = typo_csv
    done, manifest = _build(csv, tmp_path / "left-out")
    data = manifest["provenance"]["data"]
    assert data["label_outliers"] == [{"row": 101, "value": typo}]
    assert data["labelled_rows"] == 441 and sum(data["split"].values()) == 441
    assert "left out 1 row whose label 'target'" in done.stderr and "data row 101" in done.stderr
    # what the model learnt from stays on the labels' own scale
    assert manifest["metrics"]["test"]["r2"] > 0.2

    done, manifest = _build(csv, tmp_path / "kept", "--keep-label-outliers")
    assert "label_outliers" not in manifest["provenance"]["data"]
    assert manifest["provenance"]["data"]["labelled_rows"] == 442
    assert "left out" not in done.stderr
