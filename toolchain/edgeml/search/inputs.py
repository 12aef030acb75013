"""Fewer inputs for small devices: the raw input columns that do not help the validation metric are dropped.

A device reads one sensor per raw input column, so the unit judged here is the
raw column (:attr:`edgeml.data.prepare.Prepared.inputs`), never one model
feature: a categorical's one-hot columns and a datetime's parts go together.

The rule (:func:`select`), for the configuration the search chose:

1. it is fitted as the validation fitted it (:func:`~edgeml.search.importance.fit_held_out`): one model
   per cross-validation fold, each scored on its out-of-fold rows (the folds
   of :func:`edgeml.search.refit.held_out_predictions`), or, under a holdout,
   one model on the training split scored on the validation split;
2. each raw input is shuffled among the held-out rows of each fold,
   :data:`~edgeml.search.importance.REPEATS` times, and the build's metric is computed on the held-out
   predictions: the column's **permutation importance** is how much the
   metric's loss rises (:func:`~edgeml.search.importance.permutation_importances`), measured fold by
   fold (under a holdout, on :data:`~edgeml.search.importance.PARTS` parts of the validation rows) and
   given as mean ± sd over the folds. The spread over folds, not over the
   shuffles, is the noise to beat: it holds the luck of the held-out rows
   themselves, which shuffles of one set of rows cannot show;
3. a column **helps** when that mean is above both :data:`IMPORTANCE_TOLERANCE`
   and :data:`~edgeml.search.importance.NOISE_SDS` standard deviations (shuffling an unused or noise
   column moves the loss by chance only, as often down as up); the others
   are the columns to drop, but never every input: when none helps, the
   most important one stays;
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
model's loss for the others (:data:`~edgeml.search.importance.RELATIVE_METRICS`: errors in the label's
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
from edgeml.search.importance import (
    NOISE_SDS,
    RELATIVE_METRICS,
    REPEATS,
    Importance,
    Scored,
    feature_columns,
    fit_held_out,
    metric_value,
    permutation_importances,
    scorer,
)
from edgeml.search.refit import refit
from edgeml.search.validation import Validation

#: A column helps only when its mean importance is above this (on the loss's scale, see the module docstring)
#: and above :data:`~edgeml.search.importance.NOISE_SDS` standard deviations over the folds.
IMPORTANCE_TOLERANCE = 0.001
#: The model without the dropped columns may lose at most this much held-out loss against the full one.
REDUCED_TOLERANCE = 0.005


@dataclass(frozen=True)
class Selection:
    """What :func:`select` decided: ``dropped`` (column: reason; empty when every input stays) and the evidence."""

    metric: str
    rows: int  #: the held-out rows scored
    where: str  #: "out-of-fold" or "validation"
    importances: tuple[Importance, ...]
    full: float  #: the held-out value of ``metric`` with every input
    reduced: float | None = None  #: ... without the dropped columns (None: nothing dropped)
    dropped: Mapping[str, str] = field(default_factory=dict)
    note: str | None = None  #: why some columns that did not help one by one are kept

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


def no_worse(full: np.ndarray, reduced: np.ndarray, tolerance: float) -> tuple[bool, float, float]:
    """Whether the reduced model's part losses are not worse than the full model's on the same parts beyond
    the larger of ``tolerance`` and :data:`NOISE_SDS` standard errors of the paired differences; the mean
    difference and that bound.

    >>> no_worse(np.array([0.10, 0.12, 0.11]), np.array([0.10, 0.121, 0.11]), 0.005)[0]
    True
    >>> no_worse(np.array([0.10, 0.12, 0.11]), np.array([0.13, 0.15, 0.14]), 0.005)[0]
    False
    """
    d = np.asarray(reduced, dtype=np.float64) - np.asarray(full, dtype=np.float64)
    d = d[np.isfinite(d)]
    if not len(d):
        return False, float("nan"), tolerance
    noise = NOISE_SDS * float(np.std(d, ddof=1)) / np.sqrt(len(d)) if len(d) > 1 else 0.0
    bound = max(tolerance, noise)
    return bool(d.mean() <= bound), float(d.mean()), bound


def select(data: Prepared, learner: str, config: dict, metric: str, validation: Validation | None, *,
           seed: int = 0, repeats: int = REPEATS, tolerance: float = IMPORTANCE_TOLERANCE) -> Selection:
    """Which raw inputs of ``data`` to drop for ``learner`` with ``config`` under the build's ``metric`` and
    ``validation`` (the rule in the module docstring, ``tolerance`` the importance a column must beat on the
    loss's scale); :meth:`Selection.describe` says what was decided."""
    held = fit_held_out(learner, config, data, validation, seed=seed)
    score = scorer(held, metric)
    full = score(held.predict())
    scale = max(abs(full.pooled), 1e-12) if metric in RELATIVE_METRICS else 1.0
    tolerance = tolerance * scale
    importances = permutation_importances(held, feature_columns(data), score, repeats=repeats, seed=seed)
    where = "out-of-fold" if len(held.folds) > 1 else "validation"
    chosen = Selection(metric, len(held.rows), where, importances, metric_value(metric, full.pooled))
    # the least important first: by the bound a column would have to beat (0 ± 0, never used, comes first)
    unhelpful = sorted((i for i in importances if not i.helps(tolerance)),
                       key=lambda i: (i.mean + NOISE_SDS * i.sd, i.mean))
    if len(unhelpful) == len(importances):  # never every input: the most important one stays
        unhelpful.pop()
    if not unhelpful:
        return chosen
    reasons = {i.column: _reason(i, metric, tolerance, chosen) for i in unhelpful}
    names = list(reasons)

    @functools.cache
    def without(k: int) -> tuple[Scored, tuple]:  # held-out loss without the k least important, and the check
        reduced = without_inputs(data, {n: reasons[n] for n in names[:k]})
        refitted = fit_held_out(learner, config, reduced, validation, seed=seed)
        scored = scorer(refitted, metric)(refitted.predict())
        return scored, no_worse(full.parts, scored.parts, REDUCED_TOLERANCE * scale)

    k = largest_drop(len(names), lambda k: without(k)[1][0])
    chosen = replace(chosen, dropped={n: reasons[n] for n in names[:k]},
                     reduced=metric_value(metric, without(k)[0].pooled) if k else None)
    if k == len(names):
        return chosen
    failed, (_, worse, bound) = without(k + 1)
    return replace(chosen, note=(
        f"{', '.join(names[k:])} did not help the validation {metric} one by one, but the model without "
        f"{names[k]}{' as well' if k else ''} scores {metric_value(metric, failed.pooled):.4f} against "
        f"{chosen.full:.4f} with every input (its {where} loss higher by {worse:.4f} on average over "
        f"{len(full.parts)} {'folds' if where == 'out-of-fold' else 'parts of the validation rows'}, more than the "
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
    parts = f"{i.parts} folds" if s.where == "out-of-fold" else f"{i.parts} parts of the validation rows"
    return (f"does not help the validation {metric}: permutation importance {mean:.4f} ± {i.sd:.4f} (mean ± sd "
            f"over {parts}, {i.repeats} shuffles each, {s.rows:,} {s.where} rows), not above "
            f"{i.bound(tolerance):.4f} (the larger of {tolerance:.4g} and {NOISE_SDS:g} sd); the model without "
            "it was refitted and checked")


def selects_by_default(target) -> bool:
    """Whether a build for ``target`` (a :class:`~edgeml.targets.profiles.TargetProfile`) selects its inputs
    unasked: microcontroller targets (their TFLite operator set is TFLite Micro's), where each sensor read
    costs pins, power and RAM. Other targets keep every input unless ``--select-inputs`` says otherwise."""
    return target.tflite_ops == "tflite-micro"


def select_inputs_stage(config, target, data: Prepared, result, report) -> tuple[Prepared, object]:
    """The build's stage after the search: ``data`` without the inputs :func:`select` drops and ``result``
    with its model refitted on them (and measured again for ``target``); both unchanged when the stage is off
    (``config.select_inputs``, default :func:`selects_by_default`), there is one input, nothing is dropped, or
    the refitted model breaks a budget of ``target`` that the full one met."""
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
    if cost is not None and (broken := result.budget.broken(cost)):  # the same configuration, grown otherwise
        report.notice(f"inputs: the model without {', '.join(chosen.dropped)} breaks {', '.join(broken)} of "
                      f"{target.name}: every input is kept")
        return data, result
    return reduced, replace(result, model=model, cost=cost)


__all__ = ["IMPORTANCE_TOLERANCE", "REDUCED_TOLERANCE", "Selection", "largest_drop", "no_worse", "select",
           "select_inputs_stage", "selects_by_default"]
