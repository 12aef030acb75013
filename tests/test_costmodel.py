"""The cost model: its shipped fit, the structure it reads from fitted models, monotone predictions.

Nothing here times anything: the coefficients were fitted by bench/fit_cost_model.py on real measurements.
"""

from __future__ import annotations

import json
from dataclasses import replace
from importlib import resources

import numpy as np
import pytest
from lightgbm import LGBMClassifier, LGBMRegressor
from sklearn.ensemble import ExtraTreesRegressor, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPRegressor
from sklearn.svm import SVC
from xgboost import XGBClassifier

from edgeml.errors import ExportError
from edgeml.export.onnx import estimator_bytes
from edgeml.models.estimators import StandardizedMLPClassifier
from edgeml.models.structure import Structure
from edgeml.search.costmodel import LATENCY_TERMS, CostModel, load_cost_model, structure_of

RNG = np.random.default_rng(0)
X = RNG.normal(size=(400, 6))
Y_CLASS = (X[:, 0] + X[:, 1] > 0).astype(int)
Y_VALUE = X[:, 0] * 3 + X[:, 2]


def test_shipped_fit_loads_with_its_quality_and_machine():
    raw = json.loads(resources.files("edgeml.search").joinpath("cost_model.json").read_text())
    cost = load_cost_model()
    assert set(cost.latency_us) == set(LATENCY_TERMS) and all(v >= 0 for v in cost.latency_us.values())
    q = cost.quality
    assert q["points"] >= 60 and q["held_out"] >= 15
    assert q["latency"]["r2"] > 0.8 and q["size"]["r2"] > 0.95
    assert 0 <= q["latency"]["median_relative_error"] <= q["latency"]["max_relative_error"]
    assert cost.machine["processor"] and cost.machine["onnxruntime"]
    assert CostModel.from_dict(raw) == cost


def test_incomplete_data_is_refused_with_the_fix():
    with pytest.raises(ExportError, match="lacks base.*refit it with bench/fit_cost_model.py"):
        CostModel.from_dict({"latency_us": {}, "size_bytes": {}})


@pytest.mark.parametrize("field", ["n_trees", "n_nodes", "n_leaves", "path_length", "n_weights"])
@pytest.mark.parametrize("family", ["trees", "linear", "mlp"])
def test_predictions_never_fall_as_a_model_grows(family, field):
    cost = load_cost_model()
    s = Structure(family, n_features=8, n_outputs=2, n_trees=10, n_nodes=300, n_leaves=155, max_depth=5,
                  path_length=45.0, n_weights=100)
    latency, size = [], []
    for k in (1, 2, 5, 10, 100, 1000):
        bigger = replace(s, **{field: type(getattr(s, field))(getattr(s, field) * k)})
        latency.append(cost.predict_ms(bigger, n_inputs=6))
        size.append(cost.predict_bytes(bigger))
    assert latency == sorted(latency) and size == sorted(size)
    assert cost.predict_ms(s, 7) >= cost.predict_ms(s, 6)  # more raw inputs, more work for the runtime


def test_real_models_rank_by_size():
    cost = load_cost_model()
    small, big = (LGBMClassifier(n_estimators=n, num_leaves=31, min_child_samples=5, verbose=-1).fit(X, Y_CLASS)
                  for n in (5, 300))
    s_small, s_big = structure_of(small), structure_of(big)
    assert cost.predict_ms(s_big) > cost.predict_ms(s_small)
    assert estimator_bytes(big, 6, "classification") > estimator_bytes(small, 6, "classification")
    assert cost.predict_ms(s_big, speed_factor=6.0) == pytest.approx(6.0 * cost.predict_ms(s_big))


def test_structure_of_each_family():
    lgbm = LGBMRegressor(n_estimators=7, num_leaves=5, min_child_samples=5, verbose=-1).fit(X, Y_VALUE)
    s = structure_of(lgbm)
    assert (s.family, s.n_trees, s.n_features, s.n_outputs) == ("trees", 7, 6, 1)
    assert s.n_leaves <= 35 and s.n_nodes == 2 * s.n_leaves - s.n_trees
    assert s.n_trees <= s.path_length <= s.n_trees * s.max_depth

    xgb = XGBClassifier(n_estimators=4, max_depth=2).fit(X, Y_CLASS)
    s = structure_of(xgb)
    assert (s.n_trees, s.max_depth, s.n_outputs) == (4, 2, 2) and s.n_leaves <= 16

    rf = RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0).fit(X, Y_CLASS)
    s = structure_of(rf)
    assert s.n_trees == 3 and s.n_nodes == sum(t.tree_.node_count for t in rf.estimators_)
    assert s.max_depth == max(t.tree_.max_depth for t in rf.estimators_)

    et = ExtraTreesRegressor(n_estimators=2, max_leaf_nodes=8, random_state=0).fit(X, Y_VALUE)
    assert structure_of(et).n_leaves == 16

    lr = LogisticRegression().fit(X, Y_CLASS)
    assert structure_of(lr) == Structure("linear", n_features=6, n_outputs=2, n_weights=7)

    mlp = StandardizedMLPClassifier(hidden_layer_sizes=(16, 8), max_iter=5).fit(X, Y_CLASS)
    s = structure_of(mlp)  # the scaler in front is looked through
    assert (s.family, s.n_weights, s.max_depth) == ("mlp", 6 * 16 + 16 + 16 * 8 + 8 + 8 * 1 + 1, 3)
    assert (structure_of(MLPRegressor(hidden_layer_sizes=(4,), max_iter=5).fit(X, Y_VALUE)).n_weights
            == 6 * 4 + 4 + 4 + 1)


def test_unknown_family_is_named():
    with pytest.raises(ExportError, match=r"edgeml has no model family for SVC \(sklearn\.svm\._classes\.SVC\); "
                                          r"it knows lightgbm \(LightGBM\), xgboost \(XGBoost\), forest"):
        structure_of(SVC().fit(X[:50], Y_CLASS[:50]))


def test_size_estimate_is_close_to_the_real_export():
    cost = load_cost_model()
    for model in (LGBMClassifier(n_estimators=60, num_leaves=15, min_child_samples=5, verbose=-1).fit(X, Y_CLASS),
                  RandomForestClassifier(n_estimators=20, random_state=0).fit(X, Y_CLASS)):
        real = estimator_bytes(model, 6, "classification")
        assert cost.predict_bytes(structure_of(model)) == pytest.approx(real, rel=0.3)
