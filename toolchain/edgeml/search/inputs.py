"""Fewer inputs for small devices: the raw input columns that do not help the validation metric are dropped.

A device reads one sensor per raw input column, so the unit judged here is the
raw column (:attr:`edgeml.data.prepare.Prepared.inputs`), never one model
feature: a categorical's one-hot columns and a datetime's parts go together.

The rule (:func:`select`), for the configuration the search chose:

1. it is fitted as the validation fitted it (:func:`fit_held_out`): one model
   per cross-validation fold, each scored on its out-of-fold rows (the folds
   of :func:`edgeml.search.refit.held_out_predictions`), or, under a holdout,
   one model on the training split scored on the validation split;
2. each raw input is shuffled among the held-out rows of each fold,
   :data:`REPEATS` times, and the build's metric is computed on the held-out
   predictions: the column's **permutation importance** is how much the
   metric's loss rises, mean ± sd over the repeats (:func:`permutation_importances`);
3. a column **helps** when that mean is above both :data:`IMPORTANCE_TOLERANCE`
   and :data:`NOISE_SDS` standard deviations of the repeats (shuffling an
   unused or noise column moves the loss by chance only, as often down as
   up); the others are the columns to drop, but never every input: when none
   helps, the most important one stays;
4. the configuration is fitted again without them (same folds) and the drop
   is kept only when the reduced model is not worse on the held-out rows
   (:func:`no_worse`): its loss, fold by fold against the full model's on the
   same folds, higher on average by no more than the larger of
   :data:`REDUCED_TOLERANCE` and :data:`NOISE_SDS` standard errors of those
   paired differences (a refit without unused columns still moves by chance:
   a learner that samples columns samples others). Otherwise fewer of them
   go: the largest number of them, least important first (0 ± 0 first),
   whose removal passes that check, found by bisection (:func:`largest_drop`:
   ``1 + log2(n)`` refits at most); the build says which ones stayed and why
   (columns that help only together, two readings of one temperature, say).

Tolerances are on the loss's own scale for metrics that are shares
(``1 - roc_auc``, ``1 - r2``, ``1 - f1``, ...) and relative to the full
model's loss for the others (:data:`RELATIVE_METRICS`: errors in the label's
units, log loss). :func:`select_inputs_stage` is the build's stage: on by
default for microcontroller targets (:func:`selects_by_default`), where every
sensor costs pins, power and RAM; ``--select-inputs``/``--all-inputs`` choose.

Example, a column that decides the label beside one of pure noise:

>>> import pandas as pd
>>> from edgeml.data.prepare import prepare
>>> from edgeml.search.validation import choose_validation
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=400)
>>> frame = pd.DataFrame({"signal": x, "noise": rng.normal(size=400), "y": (x > 0).astype(int)})
>>> data = prepare(frame, "y")
>>> s = select(data, "lrl2", {"C": 1.0}, "roc_auc", choose_validation(340, "classification"))
>>> sorted(s.dropped), s.kept
(['noise'], ('signal',))
>>> print(s.dropped["noise"][:43])
does not help the validation roc_auc: permu
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from edgeml.data.prepare import Prepared, without_inputs
from edgeml.search.loss import validation_loss
from edgeml.search.refit import refit
from edgeml.search.threshold import decision_for, positive_labels
from edgeml.search.validation import Validation

#: How many times each column is shuffled.
REPEATS = 5
#: A column helps only when its mean importance is above this many standard deviations of its repeats.
NOISE_SDS = 2.0
#: ... and above this (on the loss's scale, see the module docstring).
IMPORTANCE_TOLERANCE = 0.001
#: The model without the dropped columns may lose at most this much held-out loss against the full one.
REDUCED_TOLERANCE = 0.005
#: Threads per fit: the fold models are small and many, and LightGBM's all-core default is many times slower
#: for them on a busy machine.
N_JOBS = 1
#: Metrics whose loss is not a share (label units, log loss): tolerances are relative to the full model's loss.
RELATIVE_METRICS = ("rmse", "mae", "mse", "mape", "log_loss")
#: Metrics computed on probabilities (the others on labels, or on values for regression).
PROBABILITY_METRICS = ("roc_auc", "roc_auc_ovr", "log_loss", "ap")


@dataclass(frozen=True)
class Importance:
    """How much ``column``'s shuffling raised the held-out loss: ``mean`` ± ``sd`` over ``repeats``."""

    column: str
    mean: float
    sd: float
    repeats: int

    def bound(self, tolerance: float) -> float:
        """The importance a column must beat to help: ``max(tolerance, NOISE_SDS * sd)``."""
        return max(tolerance, NOISE_SDS * self.sd)

    def helps(self, tolerance: float) -> bool:
        """
        >>> Importance("x", 0.02, 0.004, 5).helps(0.001), Importance("n", 0.0004, 0.0003, 5).helps(0.001)
        (True, False)
        """
        return self.mean > self.bound(tolerance)


@dataclass(frozen=True)
class Selection:
    """What :func:`select` decided: ``dropped`` (column: reason; empty when every input stays) and the evidence."""

    metric: str
    rows: int  #: the held-out rows scored
    where: str  #: "out-of-fold" or "validation"
    importances: tuple[Importance, ...]
    full: float  #: the held-out value of ``metric`` with every input
    reduced: float | None = None  #: ... without the unhelpful columns (None: nothing to drop)
    dropped: Mapping[str, str] = field(default_factory=dict)
    note: str | None = None  #: why every input stays although some did not help

    @property
    def kept(self) -> tuple[str, ...]:
        return tuple(i.column for i in self.importances if i.column not in self.dropped)

    def describe(self) -> str:
        """One line for the terminal."""
        value = f"{self.metric} {self.full:.4f} with all {len(self.importances)} inputs"
        if not self.dropped:
            return f"inputs: every input kept ({value}{'' if self.note else '; each one helps'})"
        return (f"inputs: dropped {len(self.dropped)} of {len(self.importances)} ({', '.join(self.dropped)}), "
                f"which do not help the validation {self.metric}; {value}, {self.reduced:.4f} with the "
                f"{len(self.kept)} kept ({self.rows:,} {self.where} rows)")


@dataclass(frozen=True)
class HeldOut:
    """Models fitted as the validation fits them, and the rows of ``X`` each one did not see."""

    X: np.ndarray  #: train+validation, in that order
    y: np.ndarray
    folds: tuple[tuple[object, np.ndarray], ...]  #: (fitted model, the rows of X it is scored on)
    classes: int  #: probability columns (0 for regression)

    @property
    def rows(self) -> np.ndarray:
        return np.concatenate([rows for _, rows in self.folds])

    def predict(self, X: np.ndarray | None = None) -> np.ndarray:
        """Each model's output on its own held-out rows of ``X`` (default: :attr:`X`), in :attr:`rows` order."""
        X = self.X if X is None else X
        return np.concatenate([_output(model, X[rows], self.classes) for model, rows in self.folds])


def fit_held_out(learner: str, config: dict, data: Prepared, validation: Validation | None, *,
                 seed: int = 0) -> HeldOut:
    """``learner`` with ``config`` fitted fold by fold on ``data`` (cross-validation) or on its training split
    (a holdout, also when ``validation`` is ``None``), as the search's validation does."""
    from sklearn.model_selection import KFold, StratifiedKFold

    X, y = data.fit_matrix()
    classes = len(data.classes) if data.task == "classification" else 0
    if validation is None or not validation.is_cv:
        n = len(data.y["train"])
        model = refit(learner, config, X[:n], y[:n], data.task, n_jobs=N_JOBS)
        return HeldOut(X, y, ((model, np.arange(n, len(y))),), classes)
    kind = StratifiedKFold if validation.stratified else KFold
    splits = kind(n_splits=validation.folds, shuffle=True, random_state=seed).split(X, y)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a class with fewer rows than folds: some folds lack it
        folds = tuple((refit(learner, config, X[fit], y[fit], data.task, n_jobs=N_JOBS), held) for fit, held in splits)
    return HeldOut(X, y, folds, classes)


def _output(model, X: np.ndarray, classes: int) -> np.ndarray:
    """A FLAML estimator's values, or probabilities with a column per class (0 for a class it did not see)."""
    if not classes:
        return np.asarray(model.predict(X), dtype=np.float64)
    proba = np.asarray(model.predict_proba(X), dtype=np.float64)
    if proba.shape[1] != classes:
        full = np.zeros((len(X), classes))
        full[:, np.asarray(model.estimator.classes_, dtype=int)] = proba
        proba = full
    return proba / np.maximum(proba.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)


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
    """A configuration's held-out loss: over every held-out row (``pooled``) and fold by fold (``folds``)."""

    pooled: float
    folds: np.ndarray


def score_held_out(held: HeldOut, metric: str) -> tuple[Scored, Callable[[np.ndarray], float]]:
    """``held``'s held-out loss with every column as it is, and the loss function of its rows (at the decision
    threshold the bundle would carry for these predictions, :func:`~edgeml.search.threshold.decision_for`)."""
    y, output = held.y[held.rows], held.predict()
    decision = decision_for(output, y, held.y, metric) if held.classes == 2 else None
    threshold = decision.threshold if decision is not None else None
    folds, start = [], 0
    for _, rows in held.folds:
        part = slice(start, start + len(rows))
        start += len(rows)
        try:
            folds.append(loss_function(metric, y[part], held.classes, threshold)(output[part]))
        except ValueError:  # a fold whose rows hold one class: no ROC AUC there
            continue
    loss = loss_function(metric, y, held.classes, threshold)
    return Scored(loss(output), np.asarray(folds, dtype=np.float64)), loss


def no_worse(full: np.ndarray, reduced: np.ndarray, tolerance: float) -> tuple[bool, float, float]:
    """Whether the reduced model's fold losses are not worse than the full model's on the same folds beyond
    the larger of ``tolerance`` and :data:`NOISE_SDS` standard errors of the paired differences; the mean
    difference and that bound. One fold (a holdout): ``tolerance`` alone.

    >>> no_worse(np.array([0.10, 0.12, 0.11]), np.array([0.10, 0.121, 0.11]), 0.005)[0]
    True
    >>> no_worse(np.array([0.10, 0.12, 0.11]), np.array([0.13, 0.15, 0.14]), 0.005)[0]
    False
    """
    d = np.asarray(reduced, dtype=np.float64) - np.asarray(full, dtype=np.float64)
    if not len(d):
        return False, float("nan"), tolerance
    noise = NOISE_SDS * float(np.std(d, ddof=1)) / np.sqrt(len(d)) if len(d) > 1 else 0.0
    bound = max(tolerance, noise)
    return bool(d.mean() <= bound), float(d.mean()), bound


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


def permutation_importances(held: HeldOut, groups: Mapping[str, np.ndarray], loss: Callable[[np.ndarray], float],
                            base: float, *, repeats: int = REPEATS, seed: int = 0) -> tuple[Importance, ...]:
    """Each group's :class:`Importance`: the rise of ``loss`` over ``base`` when its columns are shuffled
    together among each fold's held-out rows, ``repeats`` times (a group without columns: 0 ± 0)."""
    rng = np.random.default_rng(seed)
    out = []
    for name, cols in groups.items():
        rises = []
        for _ in range(repeats if len(cols) else 0):
            X = held.X.copy()
            for _, rows in held.folds:
                X[np.ix_(rows, cols)] = held.X[np.ix_(rng.permutation(rows), cols)]
            rises.append(loss(held.predict(X)) - base)
        mean, sd = (float(np.mean(rises)), float(np.std(rises, ddof=1))) if len(rises) > 1 else (0.0, 0.0)
        out.append(Importance(name, mean, sd, repeats))
    return tuple(out)


def select(data: Prepared, learner: str, config: dict, metric: str, validation: Validation | None, *,
           seed: int = 0, repeats: int = REPEATS) -> Selection:
    """Which raw inputs of ``data`` to drop for ``learner`` with ``config`` under the build's ``metric`` and
    ``validation`` (the rule in the module docstring); :meth:`Selection.describe` says what was decided."""
    held = fit_held_out(learner, config, data, validation, seed=seed)
    full, loss = score_held_out(held, metric)
    scale = max(abs(full.pooled), 1e-12) if metric in RELATIVE_METRICS else 1.0
    tolerance = IMPORTANCE_TOLERANCE * scale
    importances = permutation_importances(held, feature_columns(data), loss, full.pooled, repeats=repeats,
                                          seed=seed)
    where = "validation" if len(held.folds) == 1 else "out-of-fold"
    chosen = Selection(metric, len(held.rows), where, importances, metric_value(metric, full.pooled))
    # the least important first: by the bound a column would have to beat (0 ± 0, never used, comes first)
    unhelpful = sorted((i for i in importances if not i.helps(tolerance)), key=lambda i: (i.mean + NOISE_SDS * i.sd,
                                                                                           i.mean))
    if len(unhelpful) == len(importances):  # never every input: the most important one stays
        unhelpful.pop()
    if not unhelpful:
        return chosen
    reasons = {i.column: _reason(i, metric, tolerance, chosen) for i in unhelpful}
    names = list(reasons)

    @functools.cache
    def without(k: int) -> tuple[Scored, tuple]:  # held-out loss without the k least important, and the check
        reduced = without_inputs(data, {n: reasons[n] for n in names[:k]})
        scored = score_held_out(fit_held_out(learner, config, reduced, validation, seed=seed), metric)[0]
        return scored, no_worse(full.folds, scored.folds, REDUCED_TOLERANCE * scale)

    k = largest_drop(len(names), lambda k: without(k)[1][0])
    chosen = replace(chosen, dropped={n: reasons[n] for n in names[:k]},
                     reduced=metric_value(metric, without(k)[0].pooled) if k else None)
    if k == len(names):
        return chosen
    failed, (_, worse, bound) = without(k + 1)
    return replace(chosen, note=(
        f"{', '.join(names[k:])} did not help the validation {metric} one by one, but the model without "
        f"{names[k]}{' as well' if k else ''} scores "
        f"{metric_value(metric, failed.pooled):.4f} against {chosen.full:.4f} with every input (its "
        f"{where} loss higher by {worse:.4f} on average over {len(full.folds)} fold(s), more than the "
        f"{bound:.4f} allowed): {'they are' if len(names) - k > 1 else 'it is'} kept"))


def largest_drop(n: int, passes: Callable[[int], bool]) -> int:
    """The most candidates (in order, least important first) whose removal ``passes`` (``passes(k)``: without the
    first ``k``), found by bisection: ``passes(n)`` first, then halving (``passes(0)``, every input, is taken as
    true). A few refits at most: ``1 + log2(n)``.

    >>> ok = {1: True, 2: True, 3: False, 4: False, 5: False}
    >>> largest_drop(5, ok.get), largest_drop(2, ok.get), largest_drop(1, {1: False}.get)
    (2, 2, 0)
    """
    if passes(n):
        return n
    lo, hi = 0, n  # lo passes, hi fails
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if passes(mid) else (lo, mid)
    return lo


def _reason(i: Importance, metric: str, tolerance: float, s: Selection) -> str:
    """The manifest's ``dropped`` reason for a column that does not help."""
    mean = round(i.mean, 4) + 0.0  # no "-0.0000"
    return (f"does not help the validation {metric}: permutation importance {mean:.4f} ± {i.sd:.4f} over "
            f"{i.repeats} repeats on {s.rows:,} {s.where} rows, not above {i.bound(tolerance):.4f} (the larger "
            f"of {tolerance:.4g} and {NOISE_SDS:g} sd); the model without it was refitted and checked")


def selects_by_default(target) -> bool:
    """Whether a build for ``target`` (a :class:`~edgeml.targets.profiles.TargetProfile`) selects its inputs
    unasked: microcontroller targets (their TFLite operator set is TFLite Micro's), where each sensor read
    costs pins, power and RAM. Other targets keep every input unless ``--select-inputs`` says otherwise."""
    return target.tflite_ops == "tflite-micro"


def select_inputs_stage(config, target, data: Prepared, result, report) -> tuple[Prepared, object]:
    """The build's stage after the search: ``data`` without the inputs :func:`select` drops and ``result``
    with its model refitted on them (and measured again for ``target``); both unchanged when the stage is off
    (``config.select_inputs``, default :func:`selects_by_default`), there is one input, or nothing is dropped."""
    wanted = config.select_inputs if config.select_inputs is not None else selects_by_default(target)
    if not wanted or len(data.inputs.columns) < 2:
        return data, result
    chosen = select(data, result.learner, result.config, result.metric, result.validation, seed=config.seed)
    report.stage("search", chosen.describe())
    if chosen.note:
        report.notice(chosen.note)
    if not chosen.dropped:
        return data, result
    from edgeml.targets.measure import TrialMeasure

    reduced = without_inputs(data, chosen.dropped)
    model = refit(result.learner, result.config, *reduced.fit_matrix(), reduced.task).estimator
    cost = TrialMeasure.for_target(target, reduced)(model) if result.cost is not None else None
    return reduced, replace(result, model=model, cost=cost)


__all__ = ["IMPORTANCE_TOLERANCE", "N_JOBS", "NOISE_SDS", "REDUCED_TOLERANCE", "REPEATS", "HeldOut", "Importance",
           "Scored", "Selection", "feature_columns", "fit_held_out", "largest_drop", "loss_function", "metric_value",
           "no_worse", "permutation_importances", "score_held_out", "select", "select_inputs_stage",
           "selects_by_default"]
