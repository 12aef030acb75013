"""The learners edgeml searches over, keyed by FLAML's names, each with the model family it fits.

A learner is registered here, once, with the tasks it serves and its family
(:mod:`edgeml.models.families`). Its FLAML class is named as
``"module:Class"`` and imported when the search asks for it, so that reading
the registry (the target profiles' allowed estimators are its names) does
not import FLAML.

Example:

>>> LEARNERS["xgb_limitdepth"].family, LEARNERS["lrl1"].tasks
('xgboost', ('classification',))
>>> LEARNERS["lgbm"].flaml_class.__name__
'LGBMEstimator'
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeml.errors import SearchError
from edgeml.models.families import FAMILIES, import_named

TASKS = ("classification", "regression")


@dataclass(frozen=True)
class Learner:
    """One FLAML learner: ``flaml`` names its class as ``"module:Class"``; ``family`` is a registered family.

    ``weights``: its fit takes ``sample_weight``, so that the search can weight classes
    (:mod:`edgeml.models.dimensions`); a learner whose fit does not is searched without class weights.
    """

    name: str
    flaml: str
    tasks: tuple[str, ...]
    family: str
    description: str
    weights: bool = True

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"learner {self.name!r}: unknown model family {self.family!r}; "
                             f"register it in edgeml/models/families.py (known: {', '.join(FAMILIES)})")
        if not self.tasks or set(self.tasks) - set(TASKS):
            raise ValueError(f"learner {self.name!r}: tasks {self.tasks!r} must be drawn from {', '.join(TASKS)}")

    @property
    def flaml_class(self) -> type:
        """The FLAML estimator class, imported (a :class:`SearchError` if it does not import)."""
        return import_named(self.flaml, f"the FLAML class of learner {self.name!r}", SearchError)

    def searched_class(self, dimensions: tuple[str, ...] = ()) -> type:
        """:attr:`flaml_class` with edgeml's search ``dimensions`` in its search space, and whose estimators
        understand every dimension's key in a config (:func:`edgeml.models.dimensions.with_dimensions`).

        >>> LEARNERS["rf"].searched_class(("class_weight",)).dimensions
        ('class_weight',)
        """
        from edgeml.models.dimensions import with_dimensions

        return with_dimensions(self.flaml_class, dimensions, weights=self.weights)


LEARNERS: dict[str, Learner] = {}


def register_learner(learner: Learner) -> Learner:
    """Add ``learner``; a name that is already registered raises ``ValueError`` (never overwritten)."""
    if learner.name in LEARNERS:
        raise ValueError(f"learner {learner.name!r} is already registered")
    LEARNERS[learner.name] = learner
    return learner


def unregister_learner(name: str) -> Learner:
    """Remove the learner registered as ``name`` and return it (a ``ValueError`` if there is none): what undoes
    :func:`register_learner`, for a plugin or a test that registered its own."""
    if name not in LEARNERS:
        raise ValueError(f"no learner {name!r} is registered (registered: {', '.join(LEARNERS)})")
    return LEARNERS.pop(name)


_FLAML = "flaml.automl.model"
_OWN = "edgeml.models.estimators"
for _learner in (
    Learner("lgbm", f"{_FLAML}:LGBMEstimator", TASKS, "lightgbm", "LightGBM"),
    Learner("xgboost", f"{_FLAML}:XGBoostSklearnEstimator", TASKS, "xgboost", "XGBoost, leaf-wise"),
    Learner("xgb_limitdepth", f"{_FLAML}:XGBoostLimitDepthEstimator", TASKS, "xgboost", "XGBoost, depth-limited"),
    Learner("rf", f"{_FLAML}:RandomForestEstimator", TASKS, "forest", "scikit-learn random forest"),
    Learner("extra_tree", f"{_FLAML}:ExtraTreesEstimator", TASKS, "forest", "scikit-learn extra trees"),
    Learner("lrl1", f"{_OWN}:StandardizedLRL1Classifier", ("classification",), "linear",
            "standardised L1 logistic regression"),
    Learner("lrl2", f"{_OWN}:StandardizedLRL2Classifier", ("classification",), "linear",
            "standardised L2 logistic regression"),
    Learner("enet", f"{_OWN}:StandardizedElasticNetEstimator", ("regression",), "linear", "standardised elastic net"),
    Learner("mlp", f"{_OWN}:MLPEstimator", TASKS, "mlp", "standardised scikit-learn MLP, 1-2 hidden layers"),
):
    register_learner(_learner)

__all__ = ["LEARNERS", "TASKS", "Learner", "register_learner", "unregister_learner"]
