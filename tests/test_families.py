"""The model-family registry: every learner's fitted model resolves along its MRO, overwrites are refused, an
unknown class is named, and the cost model and both exporters take what the family says."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.svm import SVC

from edgeml.errors import ExportError
from edgeml.export.onnx import estimator_bytes
from edgeml.export.tflite.pipeline import estimator_tflite
from edgeml.export.tflite.trees import FOREST_READERS
from edgeml.models.estimators import StandardizedLogisticRegression, StandardizedMLPRegressor, model_steps
from edgeml.models.families import FAMILIES, KINDS, TFLITE_PRECISIONS, Family, family_of, register_family
from edgeml.models.learners import LEARNERS, Learner, register_learner
from edgeml.models.structure import linear_structure
from edgeml.search.costmodel import structure_of

RNG = np.random.default_rng(0)
X = RNG.normal(size=(300, 5))
Y = {"classification": (X[:, 0] + X[:, 1] > 0).astype(int), "regression": X[:, 0] * 3 + X[:, 2]}
CASES = [(name, task) for name, learner in LEARNERS.items() for task in learner.tasks]


def fitted(name: str, task: str):
    """The model FLAML's learner ``name`` fits, at its cheapest starting configuration."""
    from flaml.automl.task.factory import task_factory

    cls = LEARNERS[name].flaml_class
    flaml_task = task_factory("binary" if task == "classification" else "regression")
    space = cls.search_space(data_size=X.shape, task=flaml_task)
    config = {k: v.get("low_cost_init_value", v["init_value"]) for k, v in space.items() if "init_value" in v}
    learner = cls(task=flaml_task, n_jobs=1, **config)
    learner.fit(X, Y[task])
    return learner.estimator


@pytest.mark.parametrize(("name", "task"), CASES)
def test_every_learners_model_resolves_to_its_family_and_exports_as_it_says(name, task):
    model = fitted(name, task)
    family = family_of(model)
    assert family is FAMILIES[LEARNERS[name].family]
    assert structure_of(model).family == family.kind
    assert estimator_bytes(model, X.shape[1], task) > 100
    for precision in TFLITE_PRECISIONS:
        if precision in family.tflite_precisions:
            exported = estimator_tflite(model_steps(model), X.shape[1], task, precision, X)
            assert exported.family == family.kind and exported.data
        else:
            with pytest.raises(ExportError, match="not exported in int8"):
                estimator_tflite(model_steps(model), X.shape[1], task, precision, X)


def test_subclasses_and_wrappers_resolve_along_the_mro():
    class MyForest(RandomForestClassifier):
        pass

    assert family_of(MyForest) is FAMILIES["forest"]
    assert family_of(MyForest(n_estimators=2).fit(X, Y["classification"])).name == "forest"
    # The standardising wrappers are Pipelines: they resolve to the family of the model they wrap.
    assert family_of(StandardizedLogisticRegression).name == "linear"
    assert family_of(StandardizedMLPRegressor).name == "mlp"


def test_registering_a_name_or_a_class_twice_is_refused():
    before = dict(FAMILIES)
    with pytest.raises(ValueError, match="model family 'linear' is already registered"):
        register_family(FAMILIES["linear"])
    clash = Family("my-forest", "my forest", "random forest", "trees", ("sklearn.ensemble:RandomForestClassifier",),
                   linear_structure)
    with pytest.raises(ValueError, match=r"model family 'my-forest': class sklearn.ensemble:RandomForestClassifier "
                                         r"already belongs to family 'forest'"):
        register_family(clash)
    assert FAMILIES == before
    with pytest.raises(ValueError, match="learner 'lgbm' is already registered"):
        register_learner(LEARNERS["lgbm"])
    with pytest.raises(ValueError, match="learner 'svm': unknown model family 'svm'"):
        Learner("svm", "sklearn.svm:SVC", ("classification",), "svm", "support vector machine")
    with pytest.raises(ValueError, match="family 'odd': kind 'kernel' is not one of trees, linear, mlp"):
        Family("odd", "odd", "odd", "kernel", ("sklearn.svm:SVC",), linear_structure)


def test_an_unknown_estimator_is_named_with_the_known_families():
    known = ", ".join(f"{f.name} ({f.title})" for f in FAMILIES.values())
    with pytest.raises(ExportError) as err:
        family_of(SVC())
    assert str(err.value) == (
        f"edgeml has no model family for SVC (sklearn.svm._classes.SVC); it knows {known}. Use one of the "
        "target's learners, or register a family in edgeml/models/families.py"
    )
    assert "lightgbm (LightGBM), xgboost (XGBoost), forest" in str(err.value)


def test_every_family_is_wired_into_the_exporters():
    from edgeml.export.tflite.dense import DENSE_READERS
    from edgeml.export.tflite.pipeline import MODEL_EMITTERS

    assert set(MODEL_EMITTERS) == set(KINDS)
    assert set(DENSE_READERS) == set(KINDS) - {"trees"}
    trees = {name for name, f in FAMILIES.items() if f.kind == "trees"}
    assert trees == set(FOREST_READERS)
    for family in FAMILIES.values():
        assert family.estimator_classes()  # every class name imports
    assert {n for n, f in FAMILIES.items() if f.onnx_converter} == {"lightgbm", "xgboost"}
