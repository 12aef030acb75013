"""The built-in demo data: deterministic, plausible, and with a label a model can learn."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import accuracy_score, roc_auc_score

from edgeml.data.demo import DEMO_LABEL, demo_frame, write_demo_csv
from edgeml.errors import ConfigError

COLUMNS = [
    "timestamp", "machine_id", "machine_type", "air_temp_c", "process_temp_c",
    "rpm", "torque_nm", "vibration_mm_s", "tool_wear_min", "failure",
]
NUMERIC = ["air_temp_c", "process_temp_c", "rpm", "torque_nm", "vibration_mm_s", "tool_wear_min"]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return demo_frame()


def test_columns_and_default_size(frame):
    assert DEMO_LABEL == "failure"
    assert list(frame.columns) == COLUMNS and len(frame) == 3000
    assert all(pd.api.types.is_numeric_dtype(frame[c]) for c in NUMERIC)
    assert set(frame[DEMO_LABEL].unique()) == {0, 1}


def test_same_seed_same_frame_other_seed_other_frame():
    a = demo_frame(rows=800, seed=3)
    pd.testing.assert_frame_equal(a, demo_frame(rows=800, seed=3))
    assert not a.equals(demo_frame(rows=800, seed=4))


def test_without_label_the_features_are_unchanged():
    pd.testing.assert_frame_equal(
        demo_frame(rows=300, seed=7, label=False), demo_frame(rows=300, seed=7).drop(columns=DEMO_LABEL)
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_positive_rate_is_five_to_ten_percent(seed):
    assert 0.05 <= demo_frame(seed=seed)[DEMO_LABEL].mean() <= 0.10


def test_timestamps_are_iso_every_ten_minutes(frame):
    stamps = pd.to_datetime(frame["timestamp"], format="%Y-%m-%dT%H:%M:%S")
    assert stamps.iloc[0] >= pd.Timestamp("2024-01-01")
    steps = stamps.diff().dropna().dt.total_seconds() / 60
    assert (steps > 0).all() and 9 <= steps.median() <= 11


def test_machines_and_types(frame):
    assert frame["machine_id"].str.fullmatch(r"M-\d{4}").all()
    assert 10 <= frame["machine_id"].nunique() <= 20
    assert (frame.groupby("machine_id")["machine_type"].nunique() == 1).all()  # a machine keeps its type
    shares = frame["machine_type"].value_counts(normalize=True)
    assert set(shares.index) == {"L", "M", "H"} and shares["L"] > shares["M"] > shares["H"]


def test_readings_are_physically_plausible(frame):
    assert frame["air_temp_c"].between(10, 35).all()
    assert (frame["process_temp_c"] > frame["air_temp_c"]).mean() > 0.99
    assert frame["rpm"].between(1000, 3000).all() and frame["torque_nm"].between(0, 100).all()
    assert frame["tool_wear_min"].between(0, 260).all()
    assert np.corrcoef(frame["rpm"], frame["torque_nm"])[0, 1] < -0.5  # constant-power drive


def test_about_one_percent_missing_vibration_and_nothing_else(frame):
    assert 0.003 <= frame["vibration_mm_s"].isna().mean() <= 0.02
    assert frame.drop(columns="vibration_mm_s").notna().all().all()


def test_no_identifier_like_columns(frame):
    for column in frame.columns.drop("timestamp"):
        assert frame[column].nunique() < len(frame) / 2, column
    assert not any(frame[c].is_monotonic_increasing and frame[c].is_unique for c in NUMERIC)


def test_label_is_learnable_on_held_out_rows(frame):
    X = frame[NUMERIC].assign(machine_type=frame["machine_type"].map({"L": 0, "M": 1, "H": 2}))
    y = frame[DEMO_LABEL]
    model = HistGradientBoostingClassifier(random_state=0).fit(X[:2000], y[:2000])
    held_x, held_y = X[2000:], y[2000:]
    majority = max(held_y.mean(), 1 - held_y.mean())
    assert accuracy_score(held_y, model.predict(held_x)) > majority + 0.005
    assert roc_auc_score(held_y, model.predict_proba(held_x)[:, 1]) > 0.8


def test_write_demo_csv_round_trips(tmp_path):
    path = write_demo_csv(tmp_path / "sub" / "demo.csv", rows=200, seed=5, label=False)
    assert path == tmp_path / "sub" / "demo.csv"
    back = pd.read_csv(path)
    pd.testing.assert_frame_equal(back, demo_frame(rows=200, seed=5, label=False), check_dtype=False)


@pytest.mark.parametrize("rows", [0, -5, 2.5, True, "100"])
def test_bad_row_count_is_a_clean_error(rows, tmp_path):
    with pytest.raises(ConfigError, match=f"demo rows = {re.escape(repr(rows))} is not allowed"):
        demo_frame(rows=rows)
    with pytest.raises(ConfigError):
        write_demo_csv(tmp_path / "out" / "demo.csv", rows=rows)
    assert not (tmp_path / "out").exists()  # nothing written for a refused request


@pytest.mark.parametrize("seed", [-1, 1.5, None])
def test_bad_seed_is_a_clean_error(seed):
    with pytest.raises(ConfigError,
                       match=f"demo seed = {re.escape(repr(seed))} is not allowed; give a whole number >= 0"):
        demo_frame(rows=10, seed=seed)
