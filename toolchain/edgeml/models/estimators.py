"""edgeml's own estimators and FLAML learners: standardised linear models and a small MLP.

Tree ensembles use FLAML's own learners. Linear models are replaced by
variants that standardise their inputs first (FLAML's fit them on raw scales,
where the saga solver barely converges); the scaler becomes part of the
exported model. The small neural net (``mlp``, scikit-learn's multi-layer
perceptron) is edgeml's own FLAML learner, standardised the same way, with a
small declarative search space so that one trial stays quick. The learners
are registered by name in :mod:`edgeml.models.learners`; the wrappers' model
families in :mod:`edgeml.models.families`.
"""

from __future__ import annotations

import numpy as np
from flaml import tune
from flaml.automl.model import ElasticNetEstimator, LRL1Classifier, LRL2Classifier, SKLearnEstimator
from sklearn.linear_model import ElasticNet, LogisticRegression
from sklearn.neural_network import MLPClassifier, MLPRegressor
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

    def fit(self, X, y=None, sample_weight=None, **params):
        """Fit the scaler, then the model; ``sample_weight`` weights the model's rows (not the scaling), so that
        class weights (:mod:`edgeml.models.dimensions`) work for these learners as for trees."""
        if sample_weight is not None:
            params["model__sample_weight"] = sample_weight
        return super().fit(X, y, **params)


class StandardizedLogisticRegression(StandardizedModel):
    model_class = LogisticRegression


class StandardizedElasticNet(StandardizedModel):
    model_class = ElasticNet


class StandardizedMLPClassifier(StandardizedModel):
    model_class = MLPClassifier


class StandardizedMLPRegressor(StandardizedModel):
    """Standardises the target too, then folds its scale into the output layer: the fitted net predicts ``y``.

    An MLP starting from small weights needs many epochs to reach a target
    in the hundreds; scaling it keeps a trial short, and folding the scale
    back (the output layer is linear) leaves a plain ``MLPRegressor`` to export.
    """

    model_class = MLPRegressor

    def fit(self, X, y, **params):
        y = np.asarray(y, dtype=np.float64)
        mean, std = float(y.mean()), float(y.std()) or 1.0
        super().fit(X, (y - mean) / std, **params)
        mlp = self.named_steps["model"]
        mlp.coefs_[-1] = mlp.coefs_[-1] * std
        mlp.intercepts_[-1] = mlp.intercepts_[-1] * std + mean
        return self


#: Hidden layers the MLP search chooses from: one or two ReLU layers, narrow to moderate.
MLP_LAYERS = ("16", "32", "64", "32x16", "64x32", "128x64")


class MLPEstimator(SKLearnEstimator):
    """FLAML learner for a small standardised MLP (ReLU, Adam), searched over a few layer shapes.

    The search space is declarative, like FLAML's own learners':

    >>> sorted(MLPEstimator.search_space(data_size=(1000, 8), task="binary"))
    ['alpha', 'hidden', 'learning_rate_init', 'max_iter']
    >>> MLPEstimator(task="binary", hidden="64x32", alpha=1e-4, learning_rate_init=1e-3,
    ...              max_iter=100).params["hidden_layer_sizes"]
    (64, 32)
    """

    @classmethod
    def search_space(cls, data_size, task, **params):
        return {
            # Layer widths as text ("64x32"): FLAML's search state and the manifest keep it readable.
            "hidden": {"domain": tune.choice(list(MLP_LAYERS)), "init_value": "16", "low_cost_init_value": "16"},
            "alpha": {"domain": tune.loguniform(lower=1e-6, upper=1e-1), "init_value": 1e-4},
            "learning_rate_init": {"domain": tune.loguniform(lower=1e-4, upper=3e-2), "init_value": 1e-3},
            # Epochs; training stops earlier when the loss stops improving.
            "max_iter": {"domain": tune.lograndint(lower=20, upper=200), "init_value": 50, "low_cost_init_value": 20},
        }

    @classmethod
    def cost_relative2lgbm(cls):
        return 3

    def config2params(self, config: dict) -> dict:
        params = super().config2params(config)
        params.pop("n_jobs", None)
        hidden = params.pop("hidden", "16")
        params["hidden_layer_sizes"] = tuple(int(w) for w in str(hidden).split("x"))
        # Stop when the training loss stops improving; early stopping on a held-out 10% scores accuracy,
        # which saturates at once on imbalanced labels.
        params.setdefault("n_iter_no_change", 5)
        params.setdefault("random_state", 0)
        return params

    def __init__(self, task="binary", **config):
        super().__init__(task, **config)
        self.estimator_class = (
            StandardizedMLPClassifier if self._task.is_classification() else StandardizedMLPRegressor
        )


def _standardized(flaml_class, model_class):
    class Learner(flaml_class):
        def __init__(self, task="binary", **config):
            super().__init__(task, **config)
            self.estimator_class = model_class

    Learner.__name__ = Learner.__qualname__ = f"Standardized{flaml_class.__name__}"
    return Learner


#: FLAML learners fitting the standardised linear models (FLAML's own search spaces).
StandardizedLRL1Classifier = _standardized(LRL1Classifier, StandardizedLogisticRegression)
StandardizedLRL2Classifier = _standardized(LRL2Classifier, StandardizedLogisticRegression)
StandardizedElasticNetEstimator = _standardized(ElasticNetEstimator, StandardizedElasticNet)


def model_steps(model) -> list[tuple[str, object]]:
    """The fitted steps of a searched model, as plain scikit-learn objects for a Pipeline.

    A :class:`~edgeml.models.target.LogTarget` stays the last step, around the
    wrapped model's own last step (the scaler before it), so that the
    pipeline's output is the label itself."""
    from edgeml.models.target import LogTarget

    if isinstance(model, LogTarget):
        *before, (name, last) = model_steps(model.regressor_)
        return [*before, (name, LogTarget.of(last, model.offset))]
    if isinstance(model, StandardizedModel):
        return [("scale", model.named_steps["scale"]), ("model", model.named_steps["model"])]
    return [("model", model)]


__all__ = ["MLP_LAYERS", "MLPEstimator", "StandardizedElasticNet", "StandardizedElasticNetEstimator",
           "StandardizedLRL1Classifier", "StandardizedLRL2Classifier", "StandardizedLogisticRegression",
           "StandardizedMLPClassifier", "StandardizedMLPRegressor", "StandardizedModel", "model_steps"]
