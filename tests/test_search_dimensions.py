"""edgeml's search dimensions on real tables: a log-scale label for it-salary's long-tailed salaries, balanced class
weights for ai4i2020's 3.4 % failures, neither where the label does not call for it; the summary's median baseline.

Searches run through ``run_search`` with a few trials of one learner, refits through ``refit``; one small build
(concrete, a label a log does not help) checks the summary's regression baseline against a hand computation.
"""

from __future__ import annotations

import json

import click
import numpy as np
import pytest
from conftest import AI4I_DROP, build_bundle
from real_tables import SALARY, SALARY_LEAKS, STRENGTH

from edgeml.build import search_record
from edgeml.data.ingest import read_input
from edgeml.data.prepare import prepare
from edgeml.models.dimensions import CLASS_WEIGHT, TARGET_TRANSFORM, imbalance_reason, log_scale_reason, offer
from edgeml.models.learners import LEARNERS
from edgeml.models.target import LogTarget
from edgeml.progress import summary
from edgeml.search.automl import SearchSettings, run_search
from edgeml.search.loss import validation_loss
from edgeml.search.refit import held_out_predictions, refit
from edgeml.search.trials import HardwareBudget
from edgeml.search.validation import Validation, choose_validation

REGRESSORS = tuple(n for n, learner in LEARNERS.items() if "regression" in learner.tasks)
CLASSIFIERS = tuple(n for n, learner in LEARNERS.items() if "classification" in learner.tasks)


def _prepared(datasets, file: str, label: str, drop=()):
    table, label = read_input(str(datasets / file), label, seed=0)
    return prepare(table.frame, label, drop=drop, seed=0, unnamed=table.unnamed)


@pytest.fixture(scope="module")
def salary(datasets):
    """it-salary-2020: yearly salaries with a long tail (median 69,200, one of 10^11)."""
    return _prepared(datasets, "it-salary-2020.csv", SALARY, SALARY_LEAKS)


@pytest.fixture(scope="module")
def ai4i(datasets):
    return _prepared(datasets, "ai4i2020.csv", "Machine failure", AI4I_DROP)


def _search(p, task: str, learners: tuple[str, ...], max_iter: int, **settings):
    """A few trials, validated on the validation split (one fit per trial: quick)."""
    settings = SearchSettings(task, learners, max_iter=max_iter, seed=0, n_jobs=2, **settings)
    return run_search(p.X["train"], p.y["train"], p.X["valid"], p.y["valid"], settings,
                      validation=Validation("holdout", 1, len(p.y["valid"])))


@pytest.fixture(scope="module")
def salary_search(salary):
    return _search(salary, "regression", ("lgbm",), max_iter=4)


@pytest.fixture(scope="module")
def ai4i_search(ai4i):
    return _search(ai4i, "classification", ("lgbm",), max_iter=4)


def _init_config(learner: str, p, task: str) -> dict:
    """The configuration FLAML starts ``learner``'s search from on ``p``'s training matrix."""
    from flaml.automl.task.factory import task_factory

    flaml_task = task_factory("binary" if task == "classification" else "regression")
    space = LEARNERS[learner].flaml_class.search_space(data_size=p.X["train"].shape, task=flaml_task)
    return {k: s.get("low_cost_init_value", s.get("init_value")) for k, s in space.items()
            if "low_cost_init_value" in s or "init_value" in s}


# --- a long-tailed label: target_transform -----------------------------------------------------------------------


def test_a_long_tailed_label_makes_the_search_offer_and_record_target_transform(salary, salary_search):
    y = salary.fit_matrix()[1]
    assert log_scale_reason(y) is not None, "it-salary's salaries should meet the log-scale rule"
    result = salary_search
    assert result.dimensions == (TARGET_TRANSFORM,)
    assert any("log1p(label)" in n for n in result.notes)
    tried = {t.config[TARGET_TRANSFORM] for t in result.trials}
    assert tried == {"none", "log1p"}, f"the search tried {tried}"
    assert result.config[TARGET_TRANSFORM] in ("none", "log1p")
    # a salary of 10^11 decides a squared loss on the raw scale: the log scale wins, and the shipped model is one
    assert result.config[TARGET_TRANSFORM] == "log1p" and isinstance(result.model, LogTarget)
    record = json.loads(json.dumps(search_record(result, HardwareBudget())))
    assert record["best_config"][TARGET_TRANSFORM] == "log1p"
    assert {t["config"][TARGET_TRANSFORM] for t in record["trial_log"]} == {"none", "log1p"}


@pytest.mark.parametrize("learner", REGRESSORS)
def test_refit_of_a_log1p_config_is_a_log_target_predicting_on_the_label_scale(salary, learner):
    X, y = salary.fit_matrix()
    config = {**_init_config(learner, salary, "regression"), TARGET_TRANSFORM: "log1p"}
    model = refit(learner, config, X, y, "regression", n_jobs=2).estimator
    assert isinstance(model, LogTarget) and model.offset == 0.0
    X_test = salary.X["test"]
    inner = np.asarray(model.regressor_.predict(X_test), dtype=np.float64)
    assert np.allclose(model.predict(X_test), np.expm1(inner))
    assert abs(np.median(inner) - np.median(np.log1p(y))) < 1.0  # the wrapped regressor learnt log1p(salary)
    ratio = np.median(model.predict(X_test)) / np.median(y)
    assert 0.5 < ratio < 2.0, f"{learner}'s median prediction is {ratio:.3g} times the median salary"


def test_held_out_predictions_of_a_log1p_config_are_on_the_label_scale(salary):
    config = {**_init_config("lgbm", salary, "regression"), TARGET_TRANSFORM: "log1p"}
    validation = choose_validation(len(salary.fit_rows), "regression")
    out = held_out_predictions("lgbm", config, salary.X["train"], salary.y["train"], salary.X["valid"],
                               salary.y["valid"], validation, "regression", n_jobs=2)
    y = salary.fit_matrix()[1]
    assert out.shape == y.shape and out.min() > 0
    assert 0.5 < np.median(out) / np.median(y) < 2.0


def test_the_judge_scores_a_log1p_trial_on_the_original_scale(salary, salary_search):
    """Under a holdout, a log1p trial's loss is 1 - R² of its predictions, mapped back, against the salaries."""
    logged = [t for t in salary_search.trials if t.config[TARGET_TRANSFORM] == "log1p"]
    assert logged, "no trial of the search was on the log scale"
    trial = logged[0]
    model = refit("lgbm", trial.config, salary.X["train"], salary.y["train"], "regression", n_jobs=2)
    y_valid = salary.y["valid"]
    by_hand = validation_loss("r2", model.predict(salary.X["valid"]), y_valid, None)
    assert trial.loss == pytest.approx(by_hand, rel=1e-9)
    on_log_scale = validation_loss("r2", model.estimator.regressor_.predict(salary.X["valid"]), y_valid, None)
    assert on_log_scale > 2 * trial.loss  # scored on the log scale, the same trial would read far worse


# --- imbalance: class_weight ------------------------------------------------------------------------------------


def test_class_weight_is_offered_and_recorded_on_ai4i(ai4i, ai4i_search):
    assert imbalance_reason(ai4i.fit_matrix()[1]) is not None
    result = ai4i_search
    assert result.dimensions == (CLASS_WEIGHT,)
    assert any("balanced class weights" in n for n in result.notes)
    assert {t.config[CLASS_WEIGHT] for t in result.trials} == {"none", "balanced"}
    record = json.loads(json.dumps(search_record(result, HardwareBudget())))
    assert record["best_config"][CLASS_WEIGHT] in ("none", "balanced")


@pytest.mark.parametrize("learner", CLASSIFIERS)
def test_balanced_class_weights_change_every_learners_fit_on_ai4i(ai4i, learner):
    """Weighting the failures up raises the probabilities the model gives them: each learner's fit took the
    weights (the MLP and the linear models through their pipeline's model step)."""
    X, y = ai4i.fit_matrix()
    config = _init_config(learner, ai4i, "classification")
    plain = refit(learner, {**config, CLASS_WEIGHT: "none"}, X, y, "classification", n_jobs=2)
    weighted = refit(learner, {**config, CLASS_WEIGHT: "balanced"}, X, y, "classification", n_jobs=2)
    failures = ai4i.y["test"] == 1
    p_plain = plain.predict_proba(ai4i.X["test"])[:, 1]
    p_weighted = weighted.predict_proba(ai4i.X["test"])[:, 1]
    assert p_weighted[failures].mean() > 1.2 * p_plain[failures].mean(), \
        f"{learner}: mean failure probability {p_plain[failures].mean():.3g} -> {p_weighted[failures].mean():.3g}"
    assert type(weighted.estimator) is type(plain.estimator)  # the weights change the fit, not the model's kind


# --- tables that call for neither ---------------------------------------------------------------------------------


def test_neither_dimension_is_offered_on_a_balanced_table_or_a_label_a_log_does_not_help(datasets):
    heart = _prepared(datasets, "heart-disease.csv", "target")
    assert offer("classification", heart.fit_matrix()[1]) == ()
    result = _search(heart, "classification", ("lgbm",), max_iter=1)
    assert result.dimensions == () and all(CLASS_WEIGHT not in t.config for t in result.trials)
    for file, label in (("concrete.csv", STRENGTH), ("ccpp.csv", "PE")):
        assert offer("regression", _prepared(datasets, file, label).fit_matrix()[1]) == (), file


def test_dimensions_can_be_switched_off(salary):
    result = _search(salary, "regression", ("lgbm",), max_iter=1, dimensions=())
    assert result.dimensions == () and all(TARGET_TRANSFORM not in t.config for t in result.trials)


# --- the summary's regression baseline (one small build) -----------------------------------------------------------


def test_a_regression_summary_shows_the_median_baseline_and_the_median_absolute_error(datasets, tmp_path):
    result = build_bundle(tmp_path / "concrete", data=str(datasets / "concrete.csv"), label=STRENGTH,
                          target="x86-64", estimators=("lgbm",), max_iter=2)
    data = _prepared(datasets, "concrete.csv", STRENGTH)
    median = float(np.median(data.fit_matrix()[1]))
    y_test = data.y["test"]
    report = result.test_split
    assert report.median == pytest.approx(median)
    assert report.baseline["mae"] == pytest.approx(np.mean(np.abs(y_test - median)), abs=1e-5)
    predicted = result.pipeline.predict(data.features["test"])
    assert report.model["median_ae"] == pytest.approx(np.median(np.abs(y_test - predicted)), abs=1e-5)
    assert report.model["r2"] == pytest.approx(result.manifest.metrics.test["r2"], abs=1e-4)
    text = click.unstyle(summary(result))
    assert f"median {median:.4g} of the training labels (the baseline): mae {report.baseline['mae']:.4g}" in text
    assert f"median absolute error {report.model['median_ae']:.4g}" in text
    assert "log scale" not in text  # concrete's strengths are not offered the log scale
