"""The search's judge: FLAML's custom metric, which scores, measures, judges and records every trial.

:func:`edgeml.search.automl.run_search` hands FLAML a :class:`TrialJudge` as
its metric; see that module for how the judge's objective keeps every budget.

On a cluster (:mod:`edgeml.search.cluster`) FLAML runs the metric in other
processes, where appending to :attr:`TrialJudge.trials` is lost: there it runs
the judge's :meth:`~TrialJudge.shipped` copy, which puts each trial's record
(:meth:`TrialJudge.record_of`, plain JSON values) in the trial's logged
metrics instead, and the driver's judge :meth:`~TrialJudge.replay` s them in
FLAML's iteration order, numbering them, keeping the best so far and calling
``progress`` as a local search would.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from edgeml.errors import SearchError
from edgeml.models.learners import LEARNERS
from edgeml.search.cluster import RECORD_KEY
from edgeml.search.loss import metric_for, validation_loss
from edgeml.search.refit import said
from edgeml.search.trials import INFEASIBLE, Cost, HardwareBudget, Trial

if TYPE_CHECKING:
    from edgeml.search.automl import SearchSettings

#: What the search is given to measure a trial's fitted model on the target (see :mod:`edgeml.targets.measure`).
#: A measure whose ``predicts`` is true predicts the trials' costs; its ``exact`` exports the candidates for real.
Measure = Callable[[object], Cost]


class TrialJudge:
    """FLAML's custom metric: the validation loss FLAML would compute, the model's cost, and the trial's record.

    FLAML calls it once per trial with the trial's fitted estimator. It
    returns FLAML's objective (the loss, or beyond every loss when a budget
    is broken) and the values to log, among them ``pred_time`` (the predicted
    device latency in seconds, which FLAML's ``metric_constraints`` can see),
    and appends the trial to :attr:`trials` (and hands it to ``progress``):
    the judge counts the iterations, knows the learner from the estimator's
    class and keeps the best loss so far among the trials that fit.
    """

    def __init__(self, settings: SearchSettings, budget: HardwareBudget, measure: Measure | None, y_train,
                 progress: Callable[[Trial], None] | None = None, *, y_valid=None, folds: int = 0):
        from flaml.automl.task.factory import task_factory

        labels = np.unique(y_train)
        if settings.task == "classification":
            name = "binary" if len(labels) == 2 else "multiclass"
        else:
            name = "regression"
        self.flaml_task = task_factory(name, None, y_train)
        self.metric_name = self.flaml_task.default_metric(settings.metric)
        self.metric_note = None
        if settings.task == "classification" and y_valid is not None:
            self.metric_name, self.metric_note = metric_for(self.metric_name, y_valid)
        #: the classes as FLAML encodes them (0..k-1 in sorted order): a classifier's probability columns
        self.labels = np.arange(len(labels)) if settings.task == "classification" else None
        self.budget = budget
        self.measure = measure
        self.progress = progress
        self.learners = {LEARNERS[n].flaml_class: n for n in settings.learners}
        self.trials: list[Trial] = []
        self.best: tuple[float, str] | None = None
        self.started = time.monotonic()
        self.rows = len(y_train)
        #: under cross-validation (``folds`` > 0): the current trial's folds, (loss, failure, cost, learner, config)
        self.folds = folds
        self.pending: list[tuple] = []
        #: set on a :meth:`shipped` copy: the last trial's record, for its logged metrics, instead of :attr:`trials`
        self.remote = False
        self.last: dict | None = None

    def shipped(self) -> TrialJudge:
        """A copy to run in other processes (a cluster's workers): no ``progress``, no trials, and each trial's
        record put in its logged metrics under :data:`~edgeml.search.cluster.RECORD_KEY`."""
        remote = copy.copy(self)
        remote.progress, remote.trials, remote.pending, remote.remote = None, [], [], True
        return remote

    def replay(self, records) -> None:
        """Record the trials a :meth:`shipped` copy judged elsewhere: ``(record, wall-clock seconds)`` pairs, in
        FLAML's iteration order (:func:`edgeml.search.cluster.read_records`)."""
        for record, seconds in records:
            cost = None if record["cost"] is None else Cost(**{**record["cost"],
                                                                "unmapped": tuple(record["cost"]["unmapped"])})
            loss = float("inf") if record["loss"] is None else float(record["loss"])
            self._record(record["learner"], record["config"], loss, cost, tuple(record["broken"]),
                         record["failure"], elapsed=seconds)

    def start(self) -> None:
        """Start the clock of the trials' elapsed times."""
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def notes(self) -> tuple[str, ...]:
        """The metric actually minimised, when it is not the one asked for, and the trials that failed."""
        failed = [t for t in self.trials if t.failure is not None]
        notes = [self.metric_note] if self.metric_note else []
        if failed:
            first = failed[0]
            notes.append(f"{len(failed)} of {len(self.trials)} trials failed and were left out; the first, trial "
                         f"{first.iteration + 1} ({first.learner}): {first.failure}")
        return tuple(notes)

    def __call__(self, X_val, y_val, estimator, labels, X_train, y_train, weight_val=None, weight_train=None,
                 config=None, *args):
        learner = self.learner_of(estimator)
        loss, failure = self._loss(estimator, X_val, y_val)
        if self.folds and self.pending:  # a later fold of the same configuration: measured on its first fold
            cost = self.pending[0][2]
        else:
            cost = None if self.measure is None or failure else self.measure(estimator.estimator)
        broken = () if cost is None else self.budget.broken(cost)
        objective = INFEASIBLE * (1 + self.budget.excess(cost)) + loss if broken else loss
        if self.folds:
            self.pending.append((loss, failure, cost, learner, dict(config or {})))
        else:
            self._record(learner, dict(config or {}), loss, cost, broken, failure)
        logged = {"val_loss": loss, "feasible": not broken}
        if cost is not None:
            logged.update(pred_time=cost.latency_ms / 1000.0, model_bytes=cost.model_bytes, latency_ms=cost.latency_ms)
        if self.last is not None:
            logged[RECORD_KEY], self.last = self.last, None
        return objective, logged

    def aggregate(self, val_loss_folds, log_metrics_folds):
        """FLAML's ``cv_score_agg_func``, called once per trial after its folds: records the trial (its loss the
        folds' mean, its first failure) and gives FLAML the mean objective and logged values."""
        from flaml.automl.ml import default_cv_score_agg_func

        folds, self.pending = self.pending, []
        if folds:
            failure = next((f[1] for f in folds if f[1] is not None), None)
            loss = float("inf") if failure else float(np.mean([f[0] for f in folds]))
            cost, learner, config = folds[0][2], folds[0][3], folds[0][4]
            self._record(learner, config, loss, cost, () if cost is None else self.budget.broken(cost), failure)
        objective, logged = default_cv_score_agg_func(val_loss_folds, log_metrics_folds)
        if self.last is not None:  # after FLAML's mean over folds, which only adds numbers
            logged = {**(logged or {}), RECORD_KEY: self.last}
            self.last = None
        return objective, logged

    def _loss(self, estimator, X_val, y_val) -> tuple[float, str | None]:
        """The trial's validation loss, and why it failed (None when it is a finite number)."""
        from flaml.automl.ml import get_y_pred

        if getattr(estimator, "failure", None) is not None:
            return float("inf"), f"fitting raised {estimator.failure}"
        try:
            y_pred = self._full_columns(get_y_pred(estimator, X_val, self.metric_name, self.flaml_task), estimator)
            loss = validation_loss(self.metric_name, y_pred, y_val, self.labels)
        except (ValueError, IndexError, FloatingPointError) as exc:  # FLAML scores such a model inf too
            return float("inf"), f"its {self.metric_name} could not be computed: {said(exc)}"
        if not np.isfinite(loss):
            shown = ", ".join(f"{v:.3g}" for v in np.ravel(y_pred)[:3])
            return float("inf"), f"its validation {self.metric_name} loss is {loss} (predictions begin {shown})"
        return loss, None

    def _full_columns(self, y_pred, estimator):
        """Probabilities with one column per class, where the trial's model saw fewer (a sample lacking a class)."""
        if self.labels is None or np.ndim(y_pred) != 2 or y_pred.shape[1] == len(self.labels):
            return y_pred
        full = np.zeros((len(y_pred), len(self.labels)))
        full[:, np.asarray(estimator.classes_, dtype=int)] = y_pred
        return full

    def learner_of(self, estimator) -> str:
        """The searched learner whose FLAML class fitted ``estimator`` (along its MRO)."""
        for cls in type(estimator).__mro__:
            if cls in self.learners:
                return self.learners[cls]
        raise SearchError(f"FLAML scored a {type(estimator).__name__}, which none of the learners "
                          f"{', '.join(self.learners.values())} fits")

    @staticmethod
    def record_of(learner: str, config: dict, loss: float, cost: Cost | None, broken: tuple[str, ...],
                  failure: str | None) -> dict:
        """A trial's record as plain JSON values (FLAML's training log is JSON), for :meth:`replay`.

        >>> TrialJudge.record_of("rf", {"n_estimators": np.int64(4)}, float("inf"), Cost(np.int64(900), 0.5),
        ...                      ("max_model_bytes",), None)["cost"]
        {'model_bytes': 900, 'latency_ms': 0.5, 'arena_bytes': None, 'unmapped': []}
        """
        plain = None if cost is None else {
            "model_bytes": int(cost.model_bytes), "latency_ms": float(cost.latency_ms),
            "arena_bytes": None if cost.arena_bytes is None else int(cost.arena_bytes), "unmapped": list(cost.unmapped)}
        config = {k: v.item() if isinstance(v, np.generic) else v for k, v in config.items()}
        return {"learner": learner, "config": config,
                "loss": float(loss) if np.isfinite(loss) else None, "cost": plain, "broken": list(broken),
                "failure": failure}

    def _record(self, learner: str, config: dict, loss: float, cost: Cost | None, broken: tuple[str, ...],
                failure: str | None = None, elapsed: float | None = None):
        if self.remote:
            self.last = self.record_of(learner, config, loss, cost, broken, failure)
            return
        feasible = not broken
        if feasible and np.isfinite(loss) and (self.best is None or loss < self.best[0]):
            self.best = (loss, learner)
        best_loss, best_learner = self.best if self.best is not None else (None, None)
        elapsed = self.elapsed() if elapsed is None else elapsed
        trial = Trial(len(self.trials), learner, elapsed, best_loss, best_learner, config=config, loss=loss,
                      cost=cost, feasible=feasible, broken=broken, failure=failure)
        self.trials.append(trial)
        if self.progress is not None:
            self.progress(trial)


__all__ = ["Measure", "TrialJudge"]
