"""The chosen configuration fitted again: on train+validation for the shipped model, on every row under
``--refit-all``, and fold by fold for the held-out predictions the validation metrics are computed from.

A FLAML estimator class is wrapped by :func:`failing_softly` so that a
learner that cannot fit the data fails one trial, not the whole search, and
knows edgeml's search dimensions (:mod:`edgeml.models.dimensions`): a config
holding ``target_transform`` ``"log1p"`` refits as a
:class:`~edgeml.models.target.LogTarget`, one holding ``class_weight``
``"balanced"`` with balanced sample weights.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import numpy as np

from edgeml.errors import SearchError
from edgeml.models.learners import LEARNERS
from edgeml.search.validation import Validation


def failing_softly(flaml_class: type) -> type:
    """``flaml_class`` whose ``fit`` keeps an exception as the estimator's ``failure`` instead of raising it.

    FLAML lets an exception in one trial's fit end the whole search; kept,
    it makes that trial a failed one (:class:`~edgeml.search.judge.TrialJudge` scores it ``inf``
    and records it) while the search goes on with other configurations.
    """
    def fit(self, *args, **kwargs):
        self.failure = None
        try:
            return flaml_class.fit(self, *args, **kwargs)
        except Exception as exc:  # a learner that cannot fit these data: a failed trial, recorded
            self.failure = said(exc)
            return 0.0

    return type(flaml_class.__name__, (flaml_class,), {"fit": fit, "__module__": flaml_class.__module__,
                                                       "__doc__": flaml_class.__doc__})


@cache
def learner_class(learner: str, dimensions: tuple[str, ...] = ()) -> type:
    """The FLAML class the search hands FLAML for ``learner`` and refits with: its search space holds the search
    ``dimensions`` offered, its estimators understand every dimension's config key, and its fit fails softly.

    One class per learner and dimensions, pickled by reference to this module (a cluster search ships FLAML's
    state to other processes, which rebuild the class through :func:`__getattr__`):

    >>> import pickle
    >>> pickle.loads(pickle.dumps(learner_class("rf", ("class_weight",)))) is learner_class("rf", ("class_weight",))
    True
    """
    cls = failing_softly(LEARNERS[learner].searched_class(tuple(dimensions)))
    cls.__module__, cls.__qualname__ = __name__, "__".join(("searched", learner, *dimensions))
    return cls


def __getattr__(name: str) -> type:
    """``searched__<learner>[__<dimension>...]``: :func:`learner_class`'s class, as pickle looks it up."""
    parts = name.split("__")
    if parts[0] != "searched" or len(parts) < 2 or parts[1] not in LEARNERS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return learner_class(parts[1], tuple(parts[2:]))


def cores() -> int:
    """The CPUs this build may use: the process's affinity (a container's cpuset, ``taskset``), further cut by a
    cgroup v2 CPU quota where one is set; what the learners get as ``n_jobs`` unless told otherwise. LightGBM's
    and XGBoost's ``-1`` ask OpenMP, which counts every core of the machine under a quota and oversubscribes it.

    >>> 1 <= cores() <= (os.cpu_count() or 1)
    True
    """
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return count


def refit(learner: str, config: dict, X: np.ndarray, y: np.ndarray, task: str, n_jobs: int | None = None):
    """A fresh FLAML estimator of ``learner`` with ``config`` fitted on ``X``, ``y``: how the shipped model is
    trained on train+validation (and on every row under ``--refit-all``); its fitted model is ``.estimator``.

    >>> import numpy as np
    >>> X = np.arange(40.0).reshape(20, 2); y = X[:, 0] * 2.0
    >>> model = refit("enet", {"alpha": 1e-4, "l1_ratio": 0.5}, X, y, "regression")
    >>> model.estimator.n_features_in_
    2
    >>> refit("enet", {"alpha": 1e-4, "l1_ratio": 0.5, "target_transform": "log1p"}, X, y + 1.0,
    ...       "regression").estimator.__class__.__name__
    'LogTarget'
    """
    from flaml.automl.task.factory import task_factory

    if task == "classification":
        name = "binary" if len(np.unique(y)) == 2 else "multiclass"
    else:
        name = "regression"
    flaml_class = learner_class(learner)
    model = flaml_class(**dict(config), task=task_factory(name, None, y), n_jobs=n_jobs or cores())
    model.fit(X, y)
    if model.failure is not None:
        raise SearchError(f"refitting the best model ({learner}) on {len(y):,} rows failed: {model.failure}")
    return model


def held_out_predictions(learner: str, config: dict, X_train: np.ndarray, y_train: np.ndarray,
                         X_valid: np.ndarray, y_valid: np.ndarray, validation: Validation, task: str, *,
                         seed: int = 0, n_jobs: int | None = None) -> np.ndarray:
    """Predictions of the chosen configuration on rows it was not fitted on, in train-then-validation order under
    cross-validation (out-of-fold: every train+validation row once) or on the validation rows under a holdout.

    Probabilities with one column per class for classification, values for regression: what the build's
    validation metrics (and a decision threshold) are computed from, since the shipped model has seen every
    train+validation row.

    >>> from edgeml.search.validation import choose_validation
    >>> X = np.arange(80.0).reshape(40, 2); y = X[:, 0] * 2.0
    >>> p = held_out_predictions("enet", {"alpha": 1e-4, "l1_ratio": 0.5}, X[:34], y[:34], X[34:], y[34:],
    ...                          choose_validation(40, "regression"), "regression")
    >>> p.shape, bool(np.allclose(p, y, atol=1.0))
    ((40,), True)
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    classes = len(np.unique(np.concatenate([y_train, y_valid]))) if task == "classification" else 0
    if not validation.is_cv:
        return predictions(refit(learner, config, X_train, y_train, task, n_jobs), X_valid, classes)
    X, y = np.concatenate([X_train, X_valid]), np.concatenate([y_train, y_valid])
    kind = StratifiedKFold if validation.stratified else KFold
    folds = kind(n_splits=validation.folds, shuffle=True, random_state=seed)
    out = np.zeros((len(y), classes)) if classes else np.zeros(len(y))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a class with fewer rows than folds: some folds lack it
        for fit_rows, held in folds.split(X, y):
            out[held] = predictions(refit(learner, config, X[fit_rows], y[fit_rows], task, n_jobs), X[held], classes)
    return out


def predictions(model, X: np.ndarray, classes: int) -> np.ndarray:
    """``model``'s values, or probabilities with a column per class (0 for a class its rows lacked)."""
    if not classes:
        return np.asarray(model.predict(X), dtype=np.float64)
    proba = np.asarray(model.predict_proba(X), dtype=np.float64)
    if proba.shape[1] != classes:
        full = np.zeros((len(X), classes))
        full[:, np.asarray(model.estimator.classes_, dtype=int)] = proba
        proba = full
    return proba / np.maximum(proba.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)  # float32 sums off 1


def said(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line of a message: its type and the first line of what it says (no native stack).

    >>> said(ValueError("Label contains NaN.\\nStack trace:\\n  [bt] (0) libxgboost.so"))
    'ValueError: Label contains NaN.'
    """
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


__all__ = ["failing_softly", "held_out_predictions", "learner_class", "refit", "said"]
