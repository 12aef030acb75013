"""Validation that fits the data: cross-validation for small tables, a holdout for large ones, the shipped model
refitted on train+validation, ``--refit-all`` folding the test rows in after evaluation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import build_bundle

from edgeml.build import host_pipeline
from edgeml.config import resolve
from edgeml.data.demo import demo_frame
from edgeml.data.ingest import read_input
from edgeml.data.prepare import prepare
from edgeml.data.preprocess import describe_inputs, make_preprocessor
from edgeml.search.automl import SearchSettings, run_search
from edgeml.search.refit import refit
from edgeml.search.trials import Cost, HardwareBudget
from edgeml.search.validation import CV_BELOW_ROWS, Validation, choose_validation


@pytest.fixture(scope="module")
def demo():
    return prepare(demo_frame(rows=300, seed=0), "failure")


def _search(p, learners, **kw):
    settings = SearchSettings(p.task, learners, max_iter=kw.pop("max_iter", 3), seed=kw.pop("seed", 0))
    return run_search(p.X["train"], p.y["train"], p.X["valid"], p.y["valid"], settings, **kw)


def test_the_rule_cross_validates_a_small_table_and_holds_out_a_large_one(demo):
    assert choose_validation(CV_BELOW_ROWS - 1, "classification") == Validation("cv", 5, CV_BELOW_ROWS - 1, True)
    assert choose_validation(CV_BELOW_ROWS, "regression", valid_rows=1765).describe() == "holdout of 1,765 rows"
    assert choose_validation(500, "regression", in_time_order=True).method == "holdout"
    assert _search(demo, ("lrl2",), max_iter=1).validation.describe() \
        == "5-fold stratified cross-validation over 255 rows"
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12_000, 3))
    large = pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "y": X @ [1.0, -2.0, 0.5]})
    p = prepare(large, "y")
    result = _search(p, ("enet",), max_iter=1)
    assert result.validation == Validation("holdout", 1, len(p.y["valid"])) and len(p.y["valid"]) > 1500
    assert result.fitted_rows == len(p.y["train"]) + len(p.y["valid"]) == 10_200


def test_under_a_time_budget_a_table_too_big_for_five_fits_a_trial_is_held_out():
    # ccpp's size: 8,133 rows of 4 columns need 36,147 cells against 22,222 for 8 s, 83,333 for 30 s
    assert choose_validation(8133, "regression", columns=4, time_budget=8).method == "holdout"
    assert choose_validation(8133, "regression", columns=4, time_budget=30).is_cv
    assert choose_validation(8133, "regression", columns=4, time_budget=None).is_cv  # a trial count: rows decide
    assert choose_validation(8133, "regression", columns=4, time_budget=8, method="cv").is_cv  # the user wins
    # run_search weighs its own matrix against its settings' budget, and only without max_iter
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3000, 12))
    y = X @ rng.normal(size=12)
    short = SearchSettings("regression", ("enet",), time_budget=2.0, seed=0)
    assert short.seconds == 2.0 and SearchSettings("regression", ("enet",), max_iter=3).seconds is None
    held = run_search(X[:2500], y[:2500], X[2500:], y[2500:], short)
    assert held.validation == Validation("holdout", 1, 500)
    counted = run_search(X[:2500], y[:2500], X[2500:], y[2500:], SearchSettings("regression", ("enet",), max_iter=2))
    assert counted.validation == Validation("cv", 5, 3000)


def test_the_shipped_model_is_the_chosen_configuration_fitted_on_train_and_validation(demo):
    result = _search(demo, ("lrl2",))
    X, y = demo.fit_matrix()
    assert result.fitted_rows == len(y) == 255
    again = refit(result.learner, result.config, X, y, demo.task).estimator
    on_train = refit(result.learner, result.config, demo.X["train"], demo.y["train"], demo.task).estimator
    shipped = result.model.predict_proba(demo.X["test"])
    np.testing.assert_allclose(shipped, again.predict_proba(demo.X["test"]), rtol=1e-9, atol=1e-12)
    assert not np.allclose(shipped, on_train.predict_proba(demo.X["test"]))
    # the preprocessing is fitted on the same rows: a preprocessor fitted on train+validation alone gives X["test"]
    fresh = make_preprocessor(demo.inputs).fit(demo.fit_features())
    np.testing.assert_array_equal(fresh.transform(demo.features["test"]), demo.X["test"])
    # and the input schema (categories, ranges) is described from them, not from the training split alone
    assert demo.inputs == describe_inputs(demo.schema.columns, demo.fit_rows)
    assert demo.inputs != describe_inputs(demo.schema.columns, demo.split.train)


def test_under_cross_validation_every_trial_is_measured_judged_and_logged_once(demo):
    measured, seen = [], []

    def measure(model) -> Cost:  # lgbm breaks the size budget, the linear model fits
        measured.append(type(model).__name__)
        return Cost(model_bytes=10_000 if "LGBM" in type(model).__name__ else 100, latency_ms=0.01)

    result = _search(demo, ("lgbm", "lrl2"), max_iter=6, budgets=HardwareBudget(max_model_bytes=1000),
                     measure=measure, progress=seen.append)
    assert result.validation.is_cv and len(result.trials) == len(seen) == 6
    assert [t.iteration for t in result.trials] == list(range(6))
    assert len(measured) == 6 + 1  # each trial once (not once per fold), and the refitted model
    assert {t.learner for t in result.trials} == {"lgbm", "lrl2"}
    assert all(t.feasible == (t.learner == "lrl2") for t in result.trials)
    assert result.learner == "lrl2" and result.cost.model_bytes == 100


def test_refit_all_trains_on_every_row_and_the_manifest_says_the_metrics_came_first(tmp_path):
    config = tmp_path / "edgeml.toml"
    config.write_text("[build]\nrefit_all = true\n")
    assert resolve({}, str(config)).refit_all and not resolve({}, cwd=tmp_path / "nowhere").refit_all
    built = build_bundle(tmp_path / "all-1", estimators=("lrl2",), max_iter=2, refit_all=True,
                         validation="auto")
    search = json.loads((built.bundle_dir / "manifest.json").read_text())["search"]
    table, label = read_input(None, None, seed=0)
    data = prepare(table.frame, label, seed=0)
    X, y = data.fit_matrix(with_test=True)
    assert search["refit"]["all_rows"] and search["refit"]["metrics_measured_before_refit"]
    assert search["refit"]["rows"] == len(y) == len(data.frame) and search["fitted_rows"] == len(y) - len(
        data.y["test"])
    assert set(search["refit"]["test_metrics_before_refit"]) >= {"accuracy", "roc_auc"}
    assert search["validation"]["method"] == "cv" and search["validation"]["rows"] == search["fitted_rows"]
    model = refit(search["best_learner"], search["best_config"], X, y, "classification").estimator
    shipped = built.pipeline.predict_proba(data.features["test"])
    np.testing.assert_allclose(shipped, host_pipeline(data, model).predict_proba(data.features["test"]), atol=1e-5)
    X_fit, y_fit = data.fit_matrix()
    without_test = refit(search["best_learner"], search["best_config"], X_fit, y_fit, "classification").estimator
    assert np.abs(shipped - host_pipeline(data, without_test).predict_proba(data.features["test"])).max() > 1e-3


def _test_score(p, model) -> float:
    from sklearn.metrics import accuracy_score, r2_score

    if p.task == "classification":
        return accuracy_score(p.y["test"], model.predict(p.X["test"]))
    return r2_score(p.y["test"], model.predict(p.X["test"]))


@pytest.mark.parametrize("name, task, learners", [("heart-disease.csv", "classification", ("lgbm", "lrl2")),
                                                  ("concrete.csv", "regression", ("lgbm",))])
def test_on_a_small_shared_table_the_rule_is_not_worse_than_the_old_holdout(datasets, name, task, learners):
    """The new rule (CV, refit on train+valid) against the old one (holdout, model fitted on train only), scored
    on the same test rows over three seeds (the means are printed). Measured once by hand with longer searches:
    heart-disease (lgbm + lrl2, 8 trials, seeds 0-4) accuracy 0.781 vs 0.744; concrete (lgbm, 10 trials, seeds
    0-2) R² 0.791 vs 0.795. Asserted: not worse than the old rule beyond about one test row of accuracy / 0.035
    R², within the spread of these small test splits."""
    path = datasets / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    frame = pd.read_csv(path)
    new, old = [], []
    for seed in range(3):
        p = prepare(frame, frame.columns[-1], task=task, seed=seed)
        ours = _search(p, learners, max_iter=4, seed=seed)
        held = _search(p, learners, max_iter=4, seed=seed, validation=Validation("holdout", 1, len(p.y["valid"])))
        before = refit(held.learner, held.config, p.X["train"], p.y["train"], task).estimator
        new.append(_test_score(p, ours.model))
        old.append(_test_score(p, before))
    print(f"{name}: new {np.round(new, 4).tolist()} mean {np.mean(new):.4f}; "
          f"old {np.round(old, 4).tolist()} mean {np.mean(old):.4f}")
    assert np.mean(new) >= np.mean(old) - 0.035


def test_validation_and_folds_are_settings_with_clear_errors(tmp_path):
    from edgeml.config import BuildConfig
    from edgeml.errors import ConfigError

    config = tmp_path / "edgeml.toml"
    config.write_text('[build]\nvalidation = "cv"\nfolds = 3\n')
    settings = resolve({}, str(config))
    assert (settings.validation, settings.folds) == ("cv", 3)
    assert resolve({"validation": "holdout"}, str(config)).validation == "holdout"  # a flag wins over the file
    with pytest.raises(ConfigError, match=r"validation = 'kfold' is not one of auto, cv, holdout \(set it with"):
        BuildConfig(validation="kfold")
    with pytest.raises(ConfigError, match="folds = 1 is not allowed; give 2 to 20 folds"):
        BuildConfig(folds=1)
    forced = choose_validation(CV_BELOW_ROWS * 3, "regression", folds=3, method="cv")
    assert forced == Validation("cv", 3, CV_BELOW_ROWS * 3) and choose_validation(100, "regression",
                                                                                 method="holdout").folds == 1
