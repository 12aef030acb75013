"""A device-aware search that is not starved: TFLite trials are predicted from the model's shape, the frontier is
exported for real, and a winner that breaks a budget once exported gives way to the next candidate.

Everything runs on real tables (ai4i2020 for the predictor, heart-disease for the searches: 212 rows, so that
five-fold trials are quick), real fitted models, the real exporter and TensorFlow Lite Micro's own interpreter.
"""

from __future__ import annotations

import json
from dataclasses import replace
from functools import cache

import numpy as np
import pytest
from conftest import AI4I_DROP, DATASETS, build_bundle
from lightgbm import LGBMClassifier, LGBMRegressor
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier, RandomForestRegressor
from xgboost import XGBClassifier

from edgeml.export.tflite import micro as tflm
from edgeml.models.estimators import StandardizedLogisticRegression, StandardizedMLPClassifier
from edgeml.search.automl import SearchSettings, run_search, usable_learners
from edgeml.targets.measure import EXPORT_NEAR, TrialMeasure, target_budget
from edgeml.targets.profiles import load_target

#: The predictor's stated error against the real export: the file's bytes and the planned tensors are the exporter's
#: own graph (exact); TFLite Micro's arena adds its own structures, estimated (tflm_arena) within this share.
SIZE_ERROR, TFLM_ARENA_ERROR = 0.0, 0.05


#: The cortex-m7 profile with TensorFlow Lite Micro as its firmware form, so that its trials are TFLite files
#: (the built-in one writes plain C, whose trials are sized from the model alone).
TFLM_M7 = "cortex-m7-tflm"
TFLM_M7_TOML = f'name = "{TFLM_M7}"\nextends = "cortex-m7"\nfirmware = "tflm"\n'


def target_of(name: str):
    return replace(load_target("cortex-m7"), name=TFLM_M7, firmware="tflm") if name == TFLM_M7 else load_target(name)


@cache
def prepared(name: str):
    from edgeml.data.ingest import read_table
    from edgeml.data.prepare import prepare

    label, drop = {"ai4i2020": ("Machine failure", AI4I_DROP), "concrete": ("strength", ()),
                   "heart-disease": ("target", ())}[name]
    table = read_table(DATASETS / f"{name}.csv")
    if name == "concrete":
        label = table.frame.columns[-1]
    return prepare(table.frame, label, drop=drop)


MODELS = {  # trees of several sizes and both TFLite forms, an MLP, a linear model; one regression table
    "lgbm 5x4 (walk)": ("ai4i2020", lambda: LGBMClassifier(n_estimators=5, num_leaves=4, verbose=-1)),
    "lgbm 20x8 (gemm)": ("ai4i2020", lambda: LGBMClassifier(n_estimators=20, num_leaves=8, verbose=-1)),
    "lgbm 40x16 (gemm, over the m7 arena)": ("ai4i2020", lambda: LGBMClassifier(n_estimators=40, num_leaves=16,
                                                                                   verbose=-1)),
    "xgboost 30, depth 5": ("ai4i2020", lambda: XGBClassifier(n_estimators=30, max_depth=5)),
    "random forest 8, grown": ("ai4i2020", lambda: RandomForestClassifier(n_estimators=8, random_state=0)),
    "extra trees 10, depth 9": ("ai4i2020", lambda: ExtraTreesClassifier(n_estimators=10, max_depth=9,
                                                                           random_state=0)),
    "mlp 32x16": ("ai4i2020", lambda: StandardizedMLPClassifier(hidden_layer_sizes=(32, 16), max_iter=40,
                                                                 random_state=0)),
    "logistic": ("ai4i2020", lambda: StandardizedLogisticRegression(max_iter=300)),
    "lgbm regressor 20x8": ("concrete", lambda: LGBMRegressor(n_estimators=20, num_leaves=8, verbose=-1)),
    "forest regressor 6, depth 7": ("concrete", lambda: RandomForestRegressor(n_estimators=6, max_depth=7,
                                                                               random_state=0)),
}


@cache
def fitted(name: str):
    data_name, make = MODELS[name]
    d = prepared(data_name)
    return make().fit(d.X["train"], d.y["train"])


def relative(predicted: int, measured: int) -> float:
    return abs(predicted - measured) / measured


@pytest.mark.parametrize("target_name", ["android-arm64", TFLM_M7])
@pytest.mark.parametrize("model_name", list(MODELS))
def test_the_prediction_is_within_its_stated_error_of_the_real_export(datasets, target_name, model_name):
    d = prepared(MODELS[model_name][0])
    measure = TrialMeasure.for_target(target_of(target_name), d, predict=True)
    model = fitted(model_name)
    predicted, before = measure(model), measure.exports.count
    assert measure.exports.count == before == 0  # predicting exported nothing
    exact = measure.exact(model)
    assert measure.exports.count >= 1
    assert relative(predicted.model_bytes, exact.model_bytes) <= SIZE_ERROR
    assert predicted.unmapped == exact.unmapped == ()
    assert predicted.latency_ms == exact.latency_ms
    arena_error = TFLM_ARENA_ERROR if measure.tflite_ops and tflm.available() else 0.0
    assert relative(predicted.arena_bytes, exact.arena_bytes) <= arena_error, (predicted, exact)


@cache
def searched(target_name: str):
    d = prepared("heart-disease")
    target = target_of(target_name)
    measure = TrialMeasure.for_target(target, d, predict=True)
    settings = SearchSettings(d.task, usable_learners(("lgbm", "rf", "xgboost", "lrl1"), d.task), max_iter=8, seed=0)
    result = run_search(d.X["train"], d.y["train"], d.X["valid"], d.y["valid"], settings,
                        budgets=target_budget(target), measure=measure)
    return target, measure, result


@pytest.mark.parametrize("target_name", ["android-arm64", TFLM_M7])
def test_a_device_search_exports_its_candidates_not_its_trials(datasets, target_name):
    target, measure, result = searched(target_name)
    check = result.check
    assert check is not None and check.trial_costs == "predicted"
    # Every trial was measured (it has a cost), but the exporter ran only for the candidates checked after the
    # search: at most one call per precision tried for each.
    assert len(result.trials) == 8 and all(t.cost is not None for t in result.trials if t.failure is None)
    assert 1 <= measure.exports.count <= len(check.candidates) * len(target.precisions) < len(result.trials)
    # What ships is the candidate that fits once exported for real, measured again here: the same cost.
    shipped = check.shipped
    assert shipped is not None and not shipped.broken
    assert result.cost == shipped.measured == TrialMeasure.for_target(target, prepared("heart-disease")).exact(
        result.model)
    assert (result.learner, result.best_loss) == (shipped.trial.learner, shipped.trial.loss)
    # The predictor's error on the frontier is recorded per candidate, and it is small.
    for c in check.candidates:
        assert c.predicted is not None and relative(c.predicted.model_bytes, c.measured.model_bytes) <= SIZE_ERROR
    assert "frontier check: " in result.notes[-1] and "trial costs predicted" in result.notes[-1]


def test_an_onnx_target_predicts_sizes_far_inside_its_budget_and_exports_those_near_it(datasets):
    d = prepared("heart-disease")
    target = load_target("rpi4")
    measure = TrialMeasure.for_target(target, d, predict=True)
    settings = SearchSettings(d.task, ("lgbm",), max_iter=3, seed=0)
    result = run_search(d.X["train"], d.y["train"], d.X["valid"], d.y["valid"], settings,
                        budgets=target_budget(target), measure=measure)
    # rpi4 allows 50 MB: no trial is near it, so none is exported; the shipped candidate is, and its size error is
    # the predictor's on the frontier
    assert measure.predicts and result.check.trial_costs == "predicted"
    assert measure.exports.count == len(result.check.candidates) == 1
    shipped = result.check.shipped
    assert relative(shipped.predicted.model_bytes, shipped.measured.model_bytes) <= 1.0
    assert result.cost == shipped.measured == measure.exact(result.model)
    # a budget the trial's predicted size is near (at least EXPORT_NEAR of it) exports the trial for real
    near = replace(measure, max_model_bytes=int(shipped.predicted.model_bytes / EXPORT_NEAR))
    before = near.exports.count
    assert near(result.model) == shipped.measured and near.exports.count == before + 1
    far = replace(measure, max_model_bytes=int(shipped.predicted.model_bytes / EXPORT_NEAR) + 10)
    assert far(result.model) == shipped.predicted and far.exports.count == before + 1


def test_a_winner_over_budget_once_exported_gives_way_to_the_next_candidate(datasets, tmp_path):
    """The TFLite Micro arena of an int8 MLP is predicted a little low (its tail is an estimate): a budget between
    the best candidate's predicted and measured arena lets the search choose it and the real export refuse it."""
    heart = DATASETS / "heart-disease.csv"
    settings = dict(data=str(heart), label="target", estimators=("mlp",), max_iter=4)
    (tmp_path / f"{TFLM_M7}.toml").write_text(TFLM_M7_TOML)
    first = build_bundle(tmp_path / "free", target=str(tmp_path / f"{TFLM_M7}.toml"), **settings)
    check = first.manifest.search.frontier_check
    best = check.candidates[0]
    predicted, measured = best.predicted.arena_bytes, best.measured.arena_bytes
    budget = (predicted + measured) // 2
    trials = first.manifest.search.trial_log
    # The construction: the best is predicted under the budget and measured over it, and every trial is predicted
    # under it, so that the second search judges every trial as the first did and chooses the same best.
    assert predicted < budget < measured
    assert all(t.arena_bytes <= budget for t in trials)
    profile = tmp_path / "tight-m7.toml"
    profile.write_text(f'name = "tight-m7"\nextends = "cortex-m7"\nfirmware = "tflm"\n\n[budgets]\n'
                       f'max_arena_bytes = {budget}\n')
    second = build_bundle(tmp_path / "tight", target=str(profile), **settings)
    check = second.manifest.search.frontier_check
    assert check.candidates[0].iteration == best.iteration and check.candidates[0].broken == ("max_arena_bytes",)
    assert len(check.candidates) >= 2 and check.shipped == check.candidates[-1].iteration != best.iteration
    assert check.candidates[-1].measured.arena_bytes <= budget and not check.candidates[-1].broken
    assert check.fallback.startswith(f"trial {best.iteration + 1} (mlp) broke max_arena_bytes when exported")
    assert f"trial {check.shipped + 1} (mlp) ships instead" in check.fallback
    shipped = next(t for t in second.manifest.search.trial_log if t.iteration == check.shipped)
    assert second.manifest.search.best_config == shipped.config
    # The artifact the bundle ships was run in TFLite Micro by the build, and its arena fits the budget.
    runs = [a.transform.tflite_micro for a in second.manifest.artifacts
            if a.transform is not None and getattr(a.transform, "tflite_micro", None) is not None]
    manifest = json.loads((tmp_path / "tight" / "manifest.json").read_text())
    assert manifest["search"]["frontier_check"]["fallback"] == check.fallback
    assert runs and all(getattr(r, "arena_bytes", 0) <= budget for r in runs)
    assert np.isfinite(second.manifest.search.best_valid_loss)
