"""Search for the best model with FLAML, within a target's allowed learners and budgets.

Takes the preprocessed training and validation matrices (plain numpy) and
returns the refitted best model with what the search saw. Progress is
reported through a callback; FLAML's own console chatter and scikit-learn's
warnings are kept out of the user's terminal.

The search is hardware-aware, and knows nothing of exporters or targets: it
takes a measuring function (``measure(model) -> Cost``, see
:mod:`edgeml.targets.measure`, which builds one from a target profile) and
:class:`~edgeml.search.trials.HardwareBudget` judges each
:class:`~edgeml.search.trials.Cost`. FLAML is given a custom metric, the
search's judge, that computes the usual validation loss (FLAML's own
computation, so ``metric="auto"`` means what it means in FLAML) and measures
the trial's fitted model. A trial that breaks a budget is recorded as such and
reported to FLAML as worse than every trial that fits — the further over
budget, the worse — so FLAML's own incumbent is always a model that fits, if
any trial did. The latency is also reported as FLAML's ``pred_time`` and
constrained with ``metric_constraints``, which steers FLAML's local search
away from slow regions. (FLAML 2.7 checks ``metric_constraints`` only
against the top-level keys of a trial's result, among them ``pred_time``,
not against the other values a custom metric logs; the objective's penalty
is what holds every budget.)

The judge records every trial itself, as FLAML has it score one
(:class:`~edgeml.search.trials.Trial`: iteration, learner, elapsed time, config,
loss, cost, feasible, the best so far); nothing is read from FLAML's log.
:func:`~edgeml.search.trials.frontier` picks the trials no other trial beats on
loss, size and latency together.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from edgeml.errors import SearchError
from edgeml.models.learners import LEARNERS
from edgeml.search.metrics import METRICS, check_metric
from edgeml.search.trials import INFEASIBLE, Cost, HardwareBudget, Trial, frontier, infeasible_message

#: What the search is given to measure a trial's fitted model on the target (see :mod:`edgeml.targets.measure`).
Measure = Callable[[object], Cost]

@dataclass(frozen=True)
class SearchResult:
    learner: str
    config: dict
    model: object
    metric: str
    best_loss: float
    trials: tuple[Trial, ...]
    seconds: float
    budget: HardwareBudget = HardwareBudget()
    learners: tuple[str, ...] = ()  #: the learners searched
    cost: Cost | None = None  #: the refitted best model's, measured like a trial's (None: no measure)

    @property
    def frontier(self) -> list[Trial]:
        return frontier(self.trials)


@dataclass(frozen=True)
class SearchSettings:
    """What to search: the task, the learners (registered ones that serve it), the metric and how long.

    >>> SearchSettings("regression", ("enet",), metric="accuracy")
    Traceback (most recent call last):
    ...
    edgeml.errors.SearchError: metric 'accuracy' does not apply to regression; use one of auto, r2, rmse, mae, mse, mape
    """

    task: str
    learners: tuple[str, ...]
    metric: str = "auto"
    time_budget: float = 60.0
    max_iter: int | None = None
    seed: int = 0
    n_jobs: int = -1

    def __post_init__(self):
        if self.task not in METRICS:
            raise SearchError(f"task {self.task!r} is not one of {', '.join(METRICS)}")
        if problem := check_metric(self.task, self.metric):
            raise SearchError(problem)
        unfit = [n for n in self.learners if n not in LEARNERS or self.task not in LEARNERS[n].tasks]
        if unfit or not self.learners:
            raise SearchError(f"learner(s) {', '.join(unfit) or '(none)'} cannot search for {self.task}; use "
                              f"registered learners that serve it ({', '.join(_serving(self.task))})")


def _serving(task: str) -> tuple[str, ...]:
    return tuple(n for n, learner in LEARNERS.items() if task in learner.tasks)


def usable_learners(names, task: str) -> tuple[str, ...]:
    """The learners among ``names`` (registered ones, as a target profile or the build settings checked) that
    serve ``task``, in the given order."""
    usable = tuple(n for n in names if task in LEARNERS[n].tasks)
    if not usable:
        raise SearchError(f"none of the learners {', '.join(names)} can do {task}; add one of "
                          f"{', '.join(_serving(task))} to the target's estimators")
    return usable


def run_search(X_train: np.ndarray, y_train: np.ndarray, X_valid: np.ndarray, y_valid: np.ndarray,
               settings: SearchSettings, progress: Callable[[Trial], None] | None = None,
               budgets: HardwareBudget | None = None, measure: Measure | None = None) -> SearchResult:
    """Run FLAML AutoML with a holdout on the given validation split and return the refitted best model.

    Every trial's model is measured by ``measure`` and judged on ``budgets``
    as well as on the metric; with no budgets, trials are still measured but
    none is refused; with no measure, trials carry no cost and budgets that
    limit something are refused. If no trial fits, a :class:`SearchError`
    says which budget each trial broke and what to relax.
    """
    from flaml import AutoML

    budget = budgets or HardwareBudget()
    if measure is None and budget.limits:
        raise SearchError(f"the budgets {', '.join(budget.limits)} can only be judged on measured trials; pass "
                          "measure= (edgeml.targets.measure.TrialMeasure) to run_search")
    automl = AutoML()
    for name in settings.learners:
        automl.add_learner(name, LEARNERS[name].flaml_class)
    judge = _TrialJudge(settings, budget, measure, y_train, progress)
    constraints = [("pred_time", "<=", budget.latency_budget_ms / 1000.0)] if budget.latency_budget_ms else []
    if budget.max_model_bytes:
        constraints.append(("model_bytes", "<=", budget.max_model_bytes))
    kwargs = dict(
        task=settings.task,
        estimator_list=list(settings.learners),
        metric=judge,
        metric_constraints=constraints,
        time_budget=settings.time_budget if settings.max_iter is None else -1,
        eval_method="holdout",
        seed=settings.seed,
        n_jobs=settings.n_jobs,
        verbose=0,
        log_file_name="",
        retrain_full=True,
        keep_search_state=False,
    )
    if settings.max_iter is not None:
        kwargs["max_iter"] = settings.max_iter
    with _quiet_flaml():
        judge.start()
        try:
            automl.fit(X_train, y_train, X_val=X_valid, y_val=y_valid, **kwargs)
        except (ValueError, TypeError) as exc:
            raise SearchError(f"the model search failed: {exc}") from exc
    return _result(automl, judge, settings, budget, measure)


def _result(automl, judge: _TrialJudge, settings: SearchSettings, budget: HardwareBudget,
            measure: Measure | None) -> SearchResult:
    trials = tuple(judge.trials)
    if trials and not any(t.feasible for t in trials):
        raise SearchError(infeasible_message(trials, budget))
    if automl.model is None:
        raise SearchError(
            "the search finished without a model; give it more time with --time-budget "
            "or allow more estimators in the target profile"
        )
    model = automl.model.estimator
    best = min((t for t in trials if t.feasible and t.learner == automl.best_estimator and t.loss is not None),
               key=lambda t: t.loss, default=None)
    cost = measure(model) if measure is not None else None
    return SearchResult(
        learner=automl.best_estimator,
        config=dict(automl.best_config),
        model=model,
        metric=judge.metric_name,
        best_loss=best.loss if best is not None else float(automl.best_loss),
        trials=trials,
        seconds=judge.elapsed(),
        budget=budget,
        learners=tuple(settings.learners),
        cost=cost,
    )


class _TrialJudge:
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
                 progress: Callable[[Trial], None] | None = None):
        from flaml.automl.task.factory import task_factory

        if settings.task == "classification":
            name = "binary" if len(np.unique(y_train)) == 2 else "multiclass"
        else:
            name = "regression"
        self.flaml_task = task_factory(name, None, y_train)
        self.metric_name = self.flaml_task.default_metric(settings.metric)
        self.budget = budget
        self.measure = measure
        self.progress = progress
        self.learners = {LEARNERS[n].flaml_class: n for n in settings.learners}
        self.trials: list[Trial] = []
        self.best: tuple[float, str] | None = None
        self.started = time.monotonic()

    def start(self) -> None:
        """Start the clock of the trials' elapsed times."""
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def __call__(self, X_val, y_val, estimator, labels, X_train, y_train, weight_val=None, weight_train=None,
                 config=None, *args):
        from flaml.automl.ml import get_y_pred, metric_loss_score

        y_pred = get_y_pred(estimator, X_val, self.metric_name, self.flaml_task)
        try:
            loss = float(metric_loss_score(self.metric_name, y_pred, y_val, labels, weight_val))
        except ValueError:  # a model that predicts inf or NaN, as FLAML treats it
            loss = float("inf")
        cost = None if self.measure is None else self.measure(estimator.estimator)
        broken = () if cost is None else self.budget.broken(cost)
        objective = INFEASIBLE * (1 + self.budget.excess(cost)) + loss if broken else loss
        self._record(self.learner_of(estimator), dict(config or {}), loss, cost, broken)
        logged = {"val_loss": loss, "feasible": not broken}
        if cost is not None:
            logged.update(pred_time=cost.latency_ms / 1000.0, model_bytes=cost.model_bytes, latency_ms=cost.latency_ms)
        return objective, logged

    def learner_of(self, estimator) -> str:
        """The searched learner whose FLAML class fitted ``estimator`` (along its MRO)."""
        for cls in type(estimator).__mro__:
            if cls in self.learners:
                return self.learners[cls]
        raise SearchError(f"FLAML scored a {type(estimator).__name__}, which none of the learners "
                          f"{', '.join(self.learners.values())} fits")

    def _record(self, learner: str, config: dict, loss: float, cost: Cost | None, broken: tuple[str, ...]):
        feasible = not broken
        if feasible and np.isfinite(loss) and (self.best is None or loss < self.best[0]):
            self.best = (loss, learner)
        best_loss, best_learner = self.best if self.best is not None else (None, None)
        trial = Trial(len(self.trials), learner, self.elapsed(), best_loss, best_learner, config=config, loss=loss,
                      cost=cost, feasible=feasible, broken=broken)
        self.trials.append(trial)
        if self.progress is not None:
            self.progress(trial)


@contextmanager
def _quiet_flaml():
    """Keep FLAML's log (nothing is read from it) and scikit-learn's warnings out of the user's terminal."""
    logger = logging.getLogger("flaml.automl.logger")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    logger.handlers = [logging.NullHandler()]
    logger.propagate = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            yield
        finally:
            logger.handlers, level, logger.propagate = saved[0], saved[1], saved[2]
            logger.setLevel(level)


__all__ = ["Measure", "SearchResult", "SearchSettings", "run_search", "usable_learners"]
