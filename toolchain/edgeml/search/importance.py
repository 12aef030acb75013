"""Permutation importance of raw inputs on held-out rows, and the held-out fits and scores it is measured on.

:func:`fit_held_out` fits a configuration as the search's validation does
(fold models scored on their out-of-fold rows, or one model scored on the
validation split); :func:`scorer` scores an output of those models with the
build's metric over every held-out row and part by part (fold by fold, or
:data:`PARTS` parts of a holdout's rows); :func:`permutation_importances`
shuffles each raw input (all its model features together,
:func:`feature_columns`) and says how much the loss rises, mean ± sd over the
parts. :mod:`edgeml.search.inputs` decides from that which inputs to drop.

>>> import pandas as pd
>>> from edgeml.data.prepare import prepare
>>> from edgeml.search.validation import choose_validation
>>> rng = np.random.default_rng(1)
>>> x = rng.normal(size=300)
>>> data = prepare(pd.DataFrame({"x": x, "n": rng.normal(size=300), "y": (x > 0).astype(int)}), "y")
>>> held = fit_held_out("lrl2", {"C": 1.0}, data, choose_validation(255, "classification"))
>>> x_imp, n_imp = permutation_importances(held, feature_columns(data), scorer(held, "roc_auc"))
>>> x_imp.mean > 0.3, abs(n_imp.mean) < 0.01, x_imp.parts
(True, True, 5)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from edgeml.data.prepare import Prepared
from edgeml.search.loss import validation_loss
from edgeml.search.refit import predictions, refit
from edgeml.search.threshold import decision_for, positive_labels
from edgeml.search.validation import Validation

#: How many times each column is shuffled.
REPEATS = 5
#: Under a holdout, the validation rows are cut in this many parts to measure the spread over (folds under CV).
PARTS = 5
#: A column helps only when its mean importance is above this many standard deviations over the parts.
NOISE_SDS = 2.0
#: Threads per fit: the fold models are small and many, and LightGBM's all-core default is many times slower
#: for them on a busy machine.
N_JOBS = 1
#: Metrics whose loss is not a share (label units, log loss): tolerances are relative to the full model's loss.
RELATIVE_METRICS = ("rmse", "mae", "mse", "mape", "log_loss")
#: Metrics computed on probabilities (the others on labels, or on values for regression).
PROBABILITY_METRICS = ("roc_auc", "roc_auc_ovr", "log_loss", "ap")


@dataclass(frozen=True)
class Importance:
    """How much shuffling ``column`` raised the held-out loss: ``mean`` ± ``sd`` over ``parts`` parts of the
    held-out rows (each part's rise averaged over ``repeats`` shuffles)."""

    column: str
    mean: float
    sd: float
    parts: int
    repeats: int

    def bound(self, tolerance: float) -> float:
        """The importance a column must beat to help: ``max(tolerance, NOISE_SDS * sd)``."""
        return max(tolerance, NOISE_SDS * self.sd)

    def helps(self, tolerance: float) -> bool:
        """
        >>> Importance("x", 0.02, 0.004, 5, 5).helps(0.001), Importance("n", 0.0004, 0.0003, 5, 5).helps(0.001)
        (True, False)
        """
        return self.mean > self.bound(tolerance)


@dataclass(frozen=True)
class HeldOut:
    """Models fitted as the validation fits them, the rows of ``X`` each one did not see, and the parts of
    their output the spread is measured over (the folds under cross-validation)."""

    X: np.ndarray  #: train+validation, in that order
    y: np.ndarray
    folds: tuple[tuple[object, np.ndarray], ...]  #: (fitted model, the rows of X it is scored on)
    classes: int  #: probability columns (0 for regression)
    parts: tuple[np.ndarray, ...]  #: positions in :meth:`predict`'s output

    @property
    def rows(self) -> np.ndarray:
        return np.concatenate([rows for _, rows in self.folds])

    def predict(self, X: np.ndarray | None = None) -> np.ndarray:
        """Each model's output on its own held-out rows of ``X`` (default: :attr:`X`), in :attr:`rows` order."""
        X = self.X if X is None else X
        return np.concatenate([predictions(model, X[rows], self.classes) for model, rows in self.folds])


def fit_held_out(learner: str, config: dict, data: Prepared, validation: Validation | None, *,
                 seed: int = 0) -> HeldOut:
    """``learner`` with ``config`` fitted fold by fold on ``data`` (cross-validation, the folds of
    :func:`~edgeml.search.refit.held_out_predictions`) or on its training split (a holdout, also when
    ``validation`` is ``None``: its validation rows cut in :data:`PARTS` parts), as the search validates."""
    X, y = data.fit_matrix()
    classes = len(data.classes) if data.task == "classification" else 0
    if validation is None or not validation.is_cv:
        n = len(data.y["train"])
        model = refit(learner, config, X[:n], y[:n], data.task, n_jobs=N_JOBS)
        parts = tuple(held for _, held in _folds(y[n:], PARTS, classes > 0, seed))
        return HeldOut(X, y, ((model, np.arange(n, len(y))),), classes, parts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a class with fewer rows than folds: some folds lack it
        folds = tuple((refit(learner, config, X[fit], y[fit], data.task, n_jobs=N_JOBS), held)
                      for fit, held in _folds(y, validation.folds, validation.stratified, seed))
    ends = np.cumsum([len(held) for _, held in folds])
    return HeldOut(X, y, folds, classes, tuple(np.arange(e - len(h), e) for e, (_, h) in zip(ends, folds, strict=True)))


def _folds(y: np.ndarray, k: int, stratified: bool, seed: int):
    """Shuffled (stratified) k-fold splits of ``len(y)`` rows, as the search's cross-validation draws them."""
    from sklearn.model_selection import KFold, StratifiedKFold

    kind = StratifiedKFold if stratified and np.bincount(y.astype(int)).max() >= k else KFold
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return list(kind(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def loss_function(metric: str, y: np.ndarray, classes: int,
                  threshold: float | None = None) -> Callable[[np.ndarray], float]:
    """The loss of held-out outputs against ``y`` for ``metric`` (FLAML's, lower is better); a binary label
    metric labels rows at ``threshold`` (the bundle's decision), others by argmax.

    >>> loss = loss_function("accuracy", np.array([0, 1, 1]), 2, threshold=0.3)
    >>> loss(np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]]))
    0.0
    """
    labels = np.arange(classes) if classes else None

    def loss(output: np.ndarray) -> float:
        if not classes:
            y_pred = output
        elif metric in PROBABILITY_METRICS:
            y_pred = output[:, 1] if classes == 2 and metric in ("roc_auc", "ap") else output
        elif classes == 2 and threshold is not None:
            y_pred = positive_labels(output[:, 1], threshold)
        else:
            y_pred = np.argmax(output, axis=1)
        return float(validation_loss(metric, y_pred, y, labels))

    return loss


def metric_value(metric: str, loss: float) -> float:
    """The metric itself from FLAML's loss: ``1 - loss`` for shares, the loss for errors.

    >>> metric_value("roc_auc", 0.25), metric_value("rmse", 3.0)
    (0.75, 3.0)
    """
    return loss if metric in RELATIVE_METRICS else 1.0 - loss


@dataclass(frozen=True)
class Scored:
    """A configuration's held-out loss: over every held-out row (``pooled``) and part by part (``parts``; NaN
    where it cannot be computed, a part whose rows hold one class for ROC AUC, say)."""

    pooled: float
    parts: np.ndarray


def scorer(held: HeldOut, metric: str) -> Callable[[np.ndarray], Scored]:
    """The :class:`Scored` of an output of ``held`` (as :meth:`HeldOut.predict` gives it), labels at the decision
    threshold the bundle would carry for ``held``'s own predictions (:func:`~edgeml.search.threshold.decision_for`)."""
    y, output = held.y[held.rows], held.predict()
    decision = decision_for(output, y, held.y, metric) if held.classes == 2 else None
    threshold = decision.threshold if decision is not None else None
    pooled = loss_function(metric, y, held.classes, threshold)
    each = [(p, loss_function(metric, y[p], held.classes, threshold)) for p in held.parts]

    def score(out: np.ndarray) -> Scored:
        values = []
        for p, loss in each:
            try:
                values.append(loss(out[p]))
            except ValueError:
                values.append(np.nan)
        return Scored(pooled(out), np.asarray(values, dtype=np.float64))

    return score


def feature_columns(data: Prepared) -> dict[str, np.ndarray]:
    """The columns of ``data.X`` each raw input becomes (a categorical's one-hot columns, a datetime's parts).

    >>> from edgeml.data.demo import demo_frame
    >>> from edgeml.data.prepare import prepare
    >>> cols = feature_columns(prepare(demo_frame(rows=300, seed=0), "failure"))
    >>> len(cols["timestamp"]), len(cols["machine_type"]), len(cols["rpm"]), sum(map(len, cols.values()))
    (10, 3, 1, 39)
    """
    pre = data.preprocessor
    owner = {f: c.name for c in data.inputs.columns for f in c.features}
    groups: dict[str, list[int]] = {c.name: [] for c in data.inputs.columns}
    for name, transformer, columns in pre.transformers_:
        if name not in pre.output_indices_ or name == "remainder":
            continue
        start = pre.output_indices_[name].start
        if name == "cat":
            widths = [len(c) for c in transformer.categories_]
            starts = np.cumsum([0, *widths])
            for f, s, w in zip(columns, starts, widths, strict=False):
                groups[owner[f]].extend(range(start + s, start + s + w))
        else:  # median imputation: one column per feature it kept (an all-missing feature is left out)
            for i, f in enumerate(transformer.get_feature_names_out(columns)):
                groups[owner[f]].append(start + i)
    return {name: np.asarray(cols, dtype=int) for name, cols in groups.items()}


def permutation_importances(held: HeldOut, groups: Mapping[str, np.ndarray], score: Callable[[np.ndarray], Scored],
                            *, repeats: int = REPEATS, seed: int = 0) -> tuple[Importance, ...]:
    """Each group's :class:`Importance`: the rise of the loss on each part of the held-out rows when the group's
    columns are shuffled together among each fold's held-out rows, averaged over ``repeats`` shuffles, then
    mean ± sd over the parts (a group without columns: 0 ± 0)."""
    rng = np.random.default_rng(seed)
    base = score(held.predict()).parts
    out = []
    for name, cols in groups.items():
        rises = []
        for _ in range(repeats if len(cols) else 0):
            X = held.X.copy()
            for _, rows in held.folds:
                X[np.ix_(rows, cols)] = held.X[np.ix_(rng.permutation(rows), cols)]
            rises.append(score(held.predict(X)).parts - base)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a part no loss could be computed on: NaN, left out
            per_part = np.nanmean(rises, axis=0) if rises else np.zeros(0)
        per_part = per_part[np.isfinite(per_part)]
        mean = float(per_part.mean()) if len(per_part) else 0.0
        sd = float(per_part.std(ddof=1)) if len(per_part) > 1 else 0.0
        out.append(Importance(name, mean, sd, len(per_part), repeats))
    return tuple(out)


__all__ = ["N_JOBS", "NOISE_SDS", "PARTS", "PROBABILITY_METRICS", "RELATIVE_METRICS", "REPEATS", "HeldOut",
           "Importance", "Scored", "feature_columns", "fit_held_out", "loss_function", "metric_value",
           "permutation_importances", "scorer"]
