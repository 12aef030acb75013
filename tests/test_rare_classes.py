"""Rare classes and stray label spellings: never a zero-trial search, and a search that fails says why.

The issue's cases, rebuilt from the shared tables: a medical label with a
third spelling of a class (a stray tab), a class of a few rows that a
stratified split leaves out of validation (FLAML's log_loss then refused
every trial: "the search finished without a model; give it more time"), and
a label no learner can fit.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import build_bundle
from sklearn.metrics import roc_auc_score

from edgeml.data.prepare import prepare
from edgeml.data.preprocess import split_frame
from edgeml.errors import SearchError
from edgeml.search.automl import SearchSettings, run_search
from edgeml.search.validation import Validation
from edgeml.verify.metrics import classification_metrics


@pytest.fixture(scope="module")
def heart(datasets) -> pd.DataFrame:
    frame = pd.read_csv(datasets / "heart-disease.csv")
    frame["target"] = frame["target"].map({1: "positive", 0: "negative"})
    return frame


def with_rare(frame: pd.DataFrame, rows: int, name: str = "unclear") -> pd.DataFrame:
    """``frame`` with the label of its first ``rows`` rows set to ``name``: a class of ``rows`` rows."""
    rare = frame.copy()
    rare.loc[rare.index[:rows], "target"] = name
    return rare


def test_labels_that_differ_only_by_whitespace_are_one_class(heart):
    frame = heart.copy()
    frame.loc[frame.index[frame["target"] == "positive"][:3], "target"] = "positive\t"  # the stray tab
    data = prepare(frame, "target")
    assert data.classes == ("negative", "positive")
    assert set(data.frame["target"]) == {"negative", "positive"}
    assert "label 'target': 'positive\\t' (3 rows) is class 'positive': surrounding whitespace is not part of a " \
           "label" in data.schema.notices
    assert int((data.frame["target"] == "positive").sum()) == int((heart["target"] == "positive").sum())


@pytest.mark.parametrize("rows", [1, 2, 3, 5])
def test_a_class_too_rare_to_split_stays_in_training_with_a_note(heart, rows):
    data = prepare(with_rare(heart, rows), "target")
    split = data.split
    assert data.classes == ("negative", "positive", "unclear")
    assert int((split.train["target"] == "unclear").sum()) == rows
    assert "unclear" not in set(split.valid["target"]) | set(split.test["target"])
    assert sum(split.sizes.values()) == len(heart)
    assert split.notes == (f"class 'unclear' ({rows} row{'s' if rows > 1 else ''}) is too rare for a stratified "
                           "split (fewer than 7 rows): its rows are all used for training, none to validate or test "
                           "on, so the test metrics do not measure it",)


def test_a_class_of_seven_rows_is_stratified(heart):
    split = prepare(with_rare(heart, 7), "target").split
    assert split.notes == ()
    assert all((part["target"] == "unclear").any() for part in (split.train, split.valid, split.test))


def test_a_class_that_appears_only_late_is_moved_into_training(heart):
    frame = heart.assign(when=pd.date_range("2024-01-01", periods=len(heart), freq="h").strftime("%Y-%m-%dT%H:%M"))
    frame.loc[frame.index[-4:], "target"] = "unclear"  # the last rows: the test period only
    split = split_frame(frame, "target", "classification", seed=0, time_column="when")
    assert int((split.train["target"] == "unclear").sum()) == 4
    assert "unclear" not in set(split.valid["target"]) | set(split.test["target"])
    assert split.notes[0].startswith("class(es) 'unclear' (4 rows) first appear after the training period")


@pytest.mark.parametrize("metric", ["auto", "log_loss", "roc_auc", "accuracy"])
def test_every_trial_is_scored_when_validation_lacks_a_class(heart, metric):
    """The root of the zero-trial searches: validation rows without the rare class."""
    data = prepare(with_rare(heart, 2), "target")
    assert 2 not in data.y["valid"] and 2 in data.y["train"]
    result = run_search(data.X["train"], data.y["train"], data.X["valid"], data.y["valid"],
                        SearchSettings("classification", ("lgbm", "lrl2"), metric=metric, max_iter=3, n_jobs=1))
    assert len(result.trials) == 3
    assert all(t.failure is None and np.isfinite(t.loss) for t in result.trials)
    assert result.model.predict_proba(data.X["test"]).shape[1] == 3


def test_a_validation_split_of_one_class_falls_back_to_log_loss(heart):
    data = prepare(heart, "target")
    keep = data.y["valid"] == 1  # as if the other class were kept in training
    result = run_search(data.X["train"], data.y["train"], data.X["valid"][keep], data.y["valid"][keep],
                        SearchSettings("classification", ("lgbm",), max_iter=2, n_jobs=1),
                        validation=Validation("holdout", 1, int(keep.sum())))  # only a holdout can lack a class
    assert result.metric == "log_loss" and all(np.isfinite(t.loss) for t in result.trials)
    assert result.notes == ("the validation split holds one class only (1), so roc_auc cannot be computed; the "
                            "search minimises log_loss instead",)


def test_a_build_that_gave_zero_trials_now_gives_a_model(heart, tmp_path):
    """Before: every trial scored inf and the build stopped with "give it more time"."""
    path = tmp_path / "heart-rare.csv"
    with_rare(heart, 2).to_csv(path, index=False)
    out = tmp_path / "heart-rare-1"
    result = build_bundle(out, data=str(path), label="target", estimators=("lgbm",), max_iter=2)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["classes"] == ["negative", "positive", "unclear"]
    trials = manifest["search"]["trial_log"]
    assert len(trials) == 2 and all(t["loss"] is not None for t in trials)
    assert set(result.manifest.metrics.test) >= {"accuracy", "roc_auc", "log_loss"}


def test_when_every_trial_fails_the_error_is_the_first_failure(datasets, tmp_path):
    """A label in the wrong unit (power in 10^298 W): forests predict values whose r2 is not a number, XGBoost refuses
    the labels outright."""
    frame = pd.read_csv(datasets / "ccpp.csv").iloc[:300]
    frame["PE"] = frame["PE"] * 1e298
    path = tmp_path / "ccpp-huge.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(SearchError, match=r"no model: all 2 trial\(s\) failed; the first, trial 1 \(rf\): its "
                                          r"validation r2 loss is nan \(predictions begin [-0-9.e+]+"):
        build_bundle(tmp_path / "rf", data=str(path), label="PE", estimators=("rf",), max_iter=2)
    with pytest.raises(SearchError, match=r"the first, trial 1 \(xgboost\): fitting raised XGBoostError: .*Label "
                                          r"contains NaN, infinity or a value too large"):
        build_bundle(tmp_path / "xgb", data=str(path), label="PE", estimators=("xgboost",), max_iter=2)


def test_test_metrics_leave_out_a_class_the_test_split_lacks():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)  # class 2 is not among the rows
    proba = rng.dirichlet([1, 1, 1], 60)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn's "y_pred contains classes not in y_true" is not raised
        m = classification_metrics(y, proba.argmax(axis=1), proba)
    auc = np.mean([roc_auc_score(y == c, proba[:, c]) for c in (0, 1)])
    assert m["roc_auc"] == round(auc, 6)
    recall = [np.mean(proba.argmax(axis=1)[y == c] == c) for c in (0, 1)]
    assert m["balanced_accuracy"] == round(float(np.mean(recall)), 6)
    assert "roc_auc" not in classification_metrics(np.zeros(5, int), proba[:5].argmax(axis=1), proba[:5])


def test_seven_classes_one_of_five_rows_are_all_learned(datasets):
    """The issue's first table: 4,898 rows in 7 classes, one of 5 rows (the shape of white-wine quality), here the
    power plant's output cut into classes of those sizes."""
    frame = pd.read_csv(datasets / "ccpp.csv").iloc[:4898]
    sizes = {3: 20, 4: 163, 5: 1457, 6: 2198, 7: 880, 8: 175, 9: 5}
    rank = frame["PE"].rank(method="first").to_numpy() - 1
    frame["quality"] = np.searchsorted(np.cumsum(list(sizes.values())), rank, side="right") + 3
    frame = frame.drop(columns="PE")
    assert frame["quality"].value_counts().to_dict() == sizes
    data = prepare(frame, "quality")
    assert data.split.notes[0].startswith("class 9 (5 rows) is too rare for a stratified split")
    result = run_search(data.X["train"], data.y["train"], data.X["valid"], data.y["valid"],
                        SearchSettings("classification", ("lgbm",), max_iter=2, n_jobs=1))
    assert all(t.failure is None and np.isfinite(t.loss) for t in result.trials)
    assert result.model.predict_proba(data.X["test"]).shape[1] == 7
