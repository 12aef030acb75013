"""Search dimensions edgeml adds to FLAML's learners when the label calls for them: a log-scale label, class weights.

A dimension is one more categorical hyperparameter in every learner's FLAML
search space, searched and judged like the learner's own; FLAML's choice for
it is in the chosen configuration (``search.best_config``) and every trial's.

* ``target_transform`` (regression), ``"none"`` or ``"log1p"``: the learner
  is fitted on ``log1p(y)`` and its fitted model wrapped as a
  :class:`~edgeml.models.target.LogTarget`, so that every prediction (the
  trial's validation loss, the refit, the exported artifacts) is on the
  label's own scale. Offered when the label is **skewed and a log makes it
  less so**: every label is at least 0 (the offset is 0), its skewness is above
  :data:`SKEWED` and the skewness of ``log1p(y)`` is at most half of it in
  absolute value (:func:`log_scale_reason`). A label that a refit on more rows
  finds below 0 (a test row under ``--refit-all``) is learnt as 0.
* ``class_weight`` (classification), ``"none"`` or ``"balanced"``: the learner
  is fitted with sample weights ``rows / (classes × rows of the class)``
  (scikit-learn's ``"balanced"``), which only change the fit, not the exported
  model. Offered when the classes are **imbalanced**: the smallest class has
  fewer than a quarter of the largest one's rows, i.e. under 20 % of the rows
  of a binary label (:func:`imbalance_reason`). A learner whose fit takes no
  ``sample_weight`` (``Learner.weights`` false) is searched without it.

Both start at ``"none"``, what FLAML's own search does, so a search that
offers them never starts worse.

>>> y = np.exp(np.linspace(0.0, 8.0, 200))  # 1 .. 2981: three orders of magnitude
>>> [o.name for o in offer("regression", y)], offer("regression", np.linspace(1.0, 2.0, 200))
(['target_transform'], ())
>>> print(offer("classification", np.array([0] * 90 + [1] * 10))[0].reason)
the smallest class has 10.0 % of the rows (10 of 100): the search also tries balanced class weights (class_weight)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgeml.errors import SearchError
from edgeml.models.target import LogTarget, forward

TARGET_TRANSFORM = "target_transform"
CLASS_WEIGHT = "class_weight"
#: The offset of the log-scale label: it is offered only for labels that are never negative.
LOG_OFFSET = 0.0
#: A label whose skewness is above this (and which a log makes at most half as skewed) gets ``target_transform``.
SKEWED = 1.0
#: Class weighting is offered when the smallest class has fewer rows than this share of the largest one's.
IMBALANCED = 0.25


def skewness(values: np.ndarray) -> float:
    """The moment skewness of ``values`` (0 for fewer than 3 values or a constant).

    >>> round(skewness(np.array([1.0, 2.0, 3.0])), 12) == 0, round(skewness(np.array([1.0, 1.0, 1.0, 10.0])), 3)
    (True, 1.155)
    """
    v = np.asarray(values, dtype=np.float64)
    spread = v.std() if v.size >= 3 else 0.0
    if not np.isfinite(spread) or spread == 0.0:
        return 0.0
    return float(np.mean(((v - v.mean()) / spread) ** 3))


def log_scale_reason(y: np.ndarray) -> str | None:
    """Why a regression label is offered ``target_transform`` (``None``: it is not), by the rule above.

    >>> log_scale_reason(np.array([-1.0, 5.0, 7.0])) is None  # a negative label: no log scale
    True
    """
    y = np.asarray(y, dtype=np.float64)
    if y.size < 3 or not np.all(np.isfinite(y)) or y.min() < LOG_OFFSET:
        return None
    raw, logged = skewness(y), skewness(forward(y, LOG_OFFSET))
    if raw <= SKEWED or abs(logged) > raw / 2:
        return None
    median, top = np.percentile(y, [50, 99])
    return (f"the label is skewed (skewness {raw:.3g}, {logged:.3g} on a log scale; 99th percentile {top:.4g}, "
            f"median {median:.4g}): the search also tries learning log1p(label) (target_transform)")


def imbalance_reason(y: np.ndarray) -> str | None:
    """Why classification labels ``y`` are offered ``class_weight`` (``None``: they are not), by the rule above.

    >>> imbalance_reason(np.array([0] * 80 + [1] * 20)) is None  # exactly 20 %: not imbalanced
    True
    """
    counts = np.unique(np.asarray(y), return_counts=True)[1]
    if len(counts) < 2 or counts.min() >= IMBALANCED * counts.max():
        return None
    return (f"the smallest class has {100 * counts.min() / counts.sum():.1f} % of the rows ({counts.min():,} of "
            f"{counts.sum():,}): the search also tries balanced class weights (class_weight)")


@dataclass(frozen=True)
class Dimension:
    """One search dimension: its config key, the task it serves, its values (the first is where the search
    starts: what FLAML alone does), whether it needs a fit that takes ``sample_weight``, and its rule."""

    name: str
    task: str
    values: tuple[str, ...]
    reason: Callable[[np.ndarray], str | None]
    needs_weights: bool = False

    def space(self) -> dict:
        """The dimension's entry in a FLAML search space."""
        from flaml import tune

        return {"domain": tune.choice(list(self.values)), "init_value": self.values[0]}


DIMENSIONS: dict[str, Dimension] = {
    TARGET_TRANSFORM: Dimension(TARGET_TRANSFORM, "regression", ("none", "log1p"), log_scale_reason),
    CLASS_WEIGHT: Dimension(CLASS_WEIGHT, "classification", ("none", "balanced"), imbalance_reason,
                            needs_weights=True),
}


@dataclass(frozen=True)
class Offer:
    """A dimension the search offers, and why (a line for the build's notes)."""

    name: str
    reason: str


def offer(task: str, y: np.ndarray, names: tuple[str, ...] | None = None) -> tuple[Offer, ...]:
    """The dimensions a search of ``task`` on labels ``y`` offers: by their rules, or exactly ``names``.

    >>> offer("regression", np.arange(10.0), names=("class_weight",))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    edgeml.errors.SearchError: search dimension 'class_weight' serves classification, not regression; use ...
    """
    if names is None:
        found = ((d.name, d.reason(y)) for d in DIMENSIONS.values() if d.task == task)
        return tuple(Offer(name, reason) for name, reason in found if reason)
    serving = [d.name for d in DIMENSIONS.values() if d.task == task]
    for name in names:
        if name not in DIMENSIONS or DIMENSIONS[name].task != task:
            what = f"serves {DIMENSIONS[name].task}, not {task}" if name in DIMENSIONS else "is not known"
            raise SearchError(f"search dimension {name!r} {what}; use {', '.join(serving) or 'none'}")
    return tuple(Offer(name, f"search dimension {name} ({' or '.join(DIMENSIONS[name].values)}) added, as the "
                             "search settings ask") for name in names)


def balanced_weights(y: np.ndarray, sample_weight: np.ndarray | None = None) -> np.ndarray:
    """Sample weights ``rows / (classes × rows of the class)``, times ``sample_weight`` when given.

    >>> balanced_weights(np.array([0, 0, 0, 1])).tolist()
    [0.6666666666666666, 0.6666666666666666, 0.6666666666666666, 2.0]
    """
    classes, index, counts = np.unique(np.asarray(y), return_inverse=True, return_counts=True)
    weights = len(index) / (len(classes) * counts[index].astype(np.float64))
    return weights if sample_weight is None else weights * np.asarray(sample_weight, dtype=np.float64)


def with_dimensions(flaml_class: type, offered: tuple[str, ...] = (), *, weights: bool = True) -> type:
    """``flaml_class`` whose search space also holds the dimensions ``offered`` and whose estimators understand
    every dimension's key in a config (popped before the model's class sees it), searched or refitted.

    ``weights`` false (a learner whose fit takes no ``sample_weight``) leaves ``class_weight`` out of the space.

    >>> from flaml.automl.model import RandomForestEstimator
    >>> from flaml.automl.task.factory import task_factory
    >>> cls = with_dimensions(RandomForestEstimator, ("target_transform",))
    >>> cls.search_space(data_size=(100, 3), task=task_factory("regression"))["target_transform"]["init_value"]
    'none'
    >>> X = np.arange(60.0).reshape(30, 2); y = np.exp(X[:, 0] / 10)
    >>> est = cls(task="regression", n_estimators=4, target_transform="log1p")
    >>> _ = est.fit(X, y); type(est.estimator).__name__, "target_transform" in est.params
    ('LogTarget', False)
    """
    searched = tuple(n for n in offered if weights or not DIMENSIONS[n].needs_weights)

    class Dimensioned(flaml_class):
        dimensions = searched

        @classmethod
        def search_space(cls, data_size, task, **params):
            space = dict(super().search_space(data_size=data_size, task=task, **params))
            return {**space, **{n: DIMENSIONS[n].space() for n in cls.dimensions}}

        def config2params(self, config: dict) -> dict:
            config = dict(config)
            self.dimension_values = {n: config.pop(n) for n in DIMENSIONS if n in config}
            for name, value in self.dimension_values.items():
                if value not in DIMENSIONS[name].values:
                    raise ValueError(f"search dimension {name!r} is {value!r}; use one of "
                                     f"{', '.join(DIMENSIONS[name].values)}")
            return super().config2params(config)

        def fit(self, X_train, y_train, budget=None, free_mem_ratio=0, **kwargs):
            return _fit(self, super().fit, X_train, y_train, budget, free_mem_ratio, weights, kwargs)

    Dimensioned.__name__ = Dimensioned.__qualname__ = flaml_class.__name__
    Dimensioned.__module__, Dimensioned.__doc__ = flaml_class.__module__, flaml_class.__doc__
    return Dimensioned


def _fit(estimator, fit, X, y, budget, free_mem_ratio, weights: bool, kwargs: dict):
    """``fit`` (the learner's own) on the label or its log scale, with balanced weights when the config says."""
    values = getattr(estimator, "dimension_values", {})
    if values.get(CLASS_WEIGHT, "none") == "balanced":
        if not weights:
            raise ValueError(f"{type(estimator).__name__} cannot fit with sample weights, so not with "
                             "class_weight 'balanced'; search it without")
        kwargs = {**kwargs, "sample_weight": balanced_weights(y, kwargs.get("sample_weight"))}
    log = values.get(TARGET_TRANSFORM, "none") == "log1p"
    if log:
        y = forward(np.maximum(np.asarray(y, dtype=np.float64), LOG_OFFSET), LOG_OFFSET)
    seconds = fit(X, y, budget, free_mem_ratio, **kwargs)
    if log and estimator._model is not None:
        estimator._model = LogTarget.of(estimator._model, LOG_OFFSET)
    return seconds


__all__ = ["CLASS_WEIGHT", "DIMENSIONS", "IMBALANCED", "LOG_OFFSET", "SKEWED", "TARGET_TRANSFORM", "Dimension",
           "Offer", "balanced_weights", "imbalance_reason", "log_scale_reason", "offer", "skewness",
           "with_dimensions"]
