"""The learners edgeml searches over, keyed by FLAML's names.

Tree ensembles use FLAML's own learners. Linear models are replaced by
variants that standardise their inputs first (FLAML's fit them on raw scales,
where the saga solver barely converges); the scaler becomes part of the
exported model. A learner is added here, once, with the task it serves.
"""

from __future__ import annotations

from dataclasses import dataclass

from flaml.automl.model import (
    ElasticNetEstimator,
    ExtraTreesEstimator,
    LGBMEstimator,
    LRL1Classifier,
    LRL2Classifier,
    RandomForestEstimator,
    XGBoostLimitDepthEstimator,
    XGBoostSklearnEstimator,
)
from sklearn.linear_model import ElasticNet, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler


class StandardizedModel(Pipeline):
    """``StandardScaler`` followed by one linear model, constructed from the model's parameters."""

    model_class = None

    def __init__(self, **params):
        self.model_params = params
        super().__init__([("scale", StandardScaler()), ("model", self.model_class(**params))])

    def get_params(self, deep=True):
        return dict(self.model_params)


class StandardizedLogisticRegression(StandardizedModel):
    model_class = LogisticRegression


class StandardizedElasticNet(StandardizedModel):
    model_class = ElasticNet


def _standardized(flaml_class, model_class):
    class Learner(flaml_class):
        def __init__(self, task="binary", **config):
            super().__init__(task, **config)
            self.estimator_class = model_class

    Learner.__name__ = Learner.__qualname__ = f"Standardized{flaml_class.__name__}"
    return Learner


@dataclass(frozen=True)
class Learner:
    name: str
    flaml_class: type
    tasks: tuple[str, ...]
    family: str
    description: str


_BOTH = ("classification", "regression")

LEARNERS: dict[str, Learner] = {}


def register_learner(learner: Learner) -> None:
    if learner.name in LEARNERS:
        raise ValueError(f"learner {learner.name!r} is already registered")
    LEARNERS[learner.name] = learner


for _learner in (
    Learner("lgbm", LGBMEstimator, _BOTH, "gradient-boosted trees", "LightGBM"),
    Learner("xgboost", XGBoostSklearnEstimator, _BOTH, "gradient-boosted trees", "XGBoost, leaf-wise"),
    Learner("xgb_limitdepth", XGBoostLimitDepthEstimator, _BOTH, "gradient-boosted trees", "XGBoost, depth-limited"),
    Learner("rf", RandomForestEstimator, _BOTH, "random forest", "scikit-learn random forest"),
    Learner("extra_tree", ExtraTreesEstimator, _BOTH, "random forest", "scikit-learn extra trees"),
    Learner("lrl1", _standardized(LRL1Classifier, StandardizedLogisticRegression), ("classification",),
            "linear", "standardised L1 logistic regression"),
    Learner("lrl2", _standardized(LRL2Classifier, StandardizedLogisticRegression), ("classification",),
            "linear", "standardised L2 logistic regression"),
    Learner("enet", _standardized(ElasticNetEstimator, StandardizedElasticNet), ("regression",),
            "linear", "standardised elastic net"),
):
    register_learner(_learner)


def model_steps(model) -> list[tuple[str, object]]:
    """The fitted steps of a searched model, as plain scikit-learn objects for a Pipeline."""
    if isinstance(model, StandardizedModel):
        return [("scale", model.named_steps["scale"]), ("model", model.named_steps["model"])]
    return [("model", model)]
