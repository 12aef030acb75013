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

The trials run in this process, or concurrently on a cluster engine FLAML
drives (``settings.cluster``, :mod:`edgeml.search.cluster`: Spark or Ray);
there the judge's :meth:`~edgeml.search.judge.TrialJudge.shipped` copy judges
each trial in a worker and the record travels back in FLAML's training log,
to be replayed on the driver in FLAML's order: the same trials, judged the
same way, whichever backend ran them.

After the trials, :func:`_check_frontier` refits FLAML's choice on
train+validation and measures it with the measure's ``exact`` (a measure that
*predicts* trial costs, as :class:`edgeml.targets.measure.TrialMeasure` does
for TFLite targets, exports it for real there); if it breaks a budget, the
next frontier candidate by loss is refitted and measured, until one fits:
that one is returned, with the record (:class:`~edgeml.search.trials.FrontierCheck`)
in :attr:`SearchResult.check`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np

from edgeml.errors import SearchError
from edgeml.models.dimensions import offer
from edgeml.models.learners import LEARNERS
from edgeml.search.cluster import ClusterSettings, cluster_fit, read_records
from edgeml.search.judge import Measure, TrialJudge
from edgeml.search.metrics import METRICS, check_metric
from edgeml.search.refit import cores, learner_class, refit
from edgeml.search.trials import (
    Candidate,
    Cost,
    FrontierCheck,
    HardwareBudget,
    Trial,
    candidates,
    failure_message,
    frontier,
    infeasible_message,
)
from edgeml.search.validation import Validation, choose_validation

#: The most frontier candidates exported for real after a search before it gives up (:func:`_check_frontier`).
MAX_CANDIDATES = 10

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
    notes: tuple[str, ...] = ()  #: what the user should know about how the search went, one line each
    validation: Validation | None = None  #: how the trials were scored
    fitted_rows: int = 0  #: the rows the returned model was refitted on (train+validation)
    dimensions: tuple[str, ...] = ()  #: edgeml's search dimensions offered (:mod:`edgeml.models.dimensions`)
    check: FrontierCheck | None = None  #: the frontier candidates exported for real before one shipped

    @property
    def frontier(self) -> list[Trial]:
        return frontier(self.trials)


@dataclass(frozen=True)
class SearchSettings:
    """What to search: the task, the learners (registered ones that serve it), the metric and how long.

    ``dimensions``: edgeml's search dimensions (:mod:`edgeml.models.dimensions`) to add to every learner's
    space; ``None`` offers those whose rule the labels meet, ``()`` none (FLAML's own spaces). ``cluster``: where
    the trials run (:mod:`edgeml.search.cluster`; in this process by default).

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
    n_jobs: int = field(default_factory=cores)
    dimensions: tuple[str, ...] | None = None
    cluster: ClusterSettings = ClusterSettings()

    def __post_init__(self):
        if self.task not in METRICS:
            raise SearchError(f"task {self.task!r} is not one of {', '.join(METRICS)}")
        if problem := check_metric(self.task, self.metric):
            raise SearchError(problem)
        unfit = [n for n in self.learners if n not in LEARNERS or self.task not in LEARNERS[n].tasks]
        if unfit or not self.learners:
            raise SearchError(f"learner(s) {', '.join(unfit) or '(none)'} cannot search for {self.task}; use "
                              f"registered learners that serve it ({', '.join(_serving(self.task))})")

    @property
    def seconds(self) -> float | None:
        """The time budget the search runs under, ``None`` when a trial count (``max_iter``) bounds it."""
        return self.time_budget if self.max_iter is None else None


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
               budgets: HardwareBudget | None = None, measure: Measure | None = None,
               validation: Validation | None = None) -> SearchResult:
    """Run FLAML AutoML, validating as ``validation`` says, and return the best model refitted on train+validation.

    ``validation`` defaults to edgeml's rule (:func:`~edgeml.search.validation.choose_validation`):
    cross-validation over the training and validation rows together for a
    small table, a holdout on the validation split for a large one. Either
    way the chosen configuration is refitted on train+validation
    (:attr:`SearchResult.fitted_rows` says how many rows).

    Every learner's space also holds edgeml's search dimensions whose rule the
    train+validation labels meet (or ``settings.dimensions``):
    ``target_transform`` for a skewed regression label, ``class_weight`` for
    imbalanced classes (:mod:`edgeml.models.dimensions`); the notes say which
    and why, :attr:`SearchResult.dimensions` names them.

    Every trial's model is measured by ``measure`` and judged on ``budgets``
    as well as on the metric; with no budgets, trials are still measured but
    none is refused; with no measure, trials carry no cost and budgets that
    limit something are refused. If no trial fits, a :class:`SearchError`
    says which budget each trial broke and what to relax. Under
    cross-validation a trial is its configuration scored on every fold: one
    record, its loss the folds' mean, its cost measured once.

    A trial whose learner cannot fit the data, or whose model cannot be scored
    (its loss is not a finite number), is recorded with its failure and the
    search goes on; when every trial failed, the :class:`SearchError` carries
    the first failure. For classification, every validation class must have
    training rows; the validation rows may lack some training classes
    (:mod:`edgeml.search.loss`).
    """
    from flaml import AutoML

    budget = budgets or HardwareBudget()
    if measure is None and budget.limits:
        raise SearchError(f"the budgets {', '.join(budget.limits)} can only be judged on measured trials; pass "
                          "measure= (edgeml.targets.measure.TrialMeasure) to run_search")
    if settings.task == "classification" and (unseen := np.setdiff1d(y_valid, y_train)).size:
        raise SearchError(f"the validation split holds class(es) {', '.join(map(str, unseen[:5]))} that the "
                          "training split lacks, which no model can learn; split so that every class has training "
                          "rows (edgeml.data.preprocess.split_frame does)")
    X_all, y_all = np.concatenate([X_train, X_valid]), np.concatenate([y_train, y_valid])
    validation = validation or choose_validation(len(y_all), settings.task, valid_rows=len(y_valid),
                                                 columns=X_all.shape[1], time_budget=settings.seconds)
    offers = offer(settings.task, y_all, settings.dimensions)
    automl = AutoML()
    for name in settings.learners:
        automl.add_learner(name, learner_class(name, tuple(o.name for o in offers)))
    judge = TrialJudge(settings, budget, measure, y_all, progress, y_valid=y_all if validation.is_cv else y_valid,
                        folds=validation.folds if validation.is_cv else 0)
    metric = judge if settings.cluster.is_local else judge.shipped()
    with _quiet_flaml(), cluster_fit(settings.cluster) as (where, log):
        judge.start()
        kwargs = {**_flaml_kwargs(settings, budget, metric), **where}
        try:
            if validation.is_cv:
                automl.fit(X_all, y_all, **kwargs, eval_method="cv", n_splits=validation.folds,
                           cv_score_agg_func=metric.aggregate,
                           split_type="stratified" if validation.stratified else "uniform")
            else:
                automl.fit(X_train, y_train, X_val=X_valid, y_val=y_valid, **kwargs, eval_method="holdout")
        except (ValueError, TypeError) as exc:
            raise SearchError(f"the model search failed: {exc}") from exc
        if log is not None:  # the trials were judged on the cluster: their records came back in FLAML's log
            judge.replay(read_records(log))
        result = _result(automl, judge, settings, budget, measure, validation, _refit(automl, X_all, y_all, settings),
                         (X_all, y_all))
    return replace(result, dimensions=tuple(o.name for o in offers),
                   notes=tuple(o.reason for o in offers) + result.notes)


def _flaml_kwargs(settings: SearchSettings, budget: HardwareBudget, judge: TrialJudge) -> dict:
    """What every search hands FLAML whatever the validation: the judge as metric, the budgets, time or trials."""
    constraints = [("pred_time", "<=", budget.latency_budget_ms / 1000.0)] if budget.latency_budget_ms else []
    if budget.max_model_bytes:
        constraints.append(("model_bytes", "<=", budget.max_model_bytes))
    kwargs = dict(task=settings.task, estimator_list=list(settings.learners), metric=judge,
                  metric_constraints=constraints,
                  time_budget=settings.time_budget if settings.max_iter is None else -1, seed=settings.seed,
                  n_jobs=settings.n_jobs, verbose=0, log_file_name="", retrain_full=False, keep_search_state=False)
    if settings.max_iter is not None:
        kwargs["max_iter"] = settings.max_iter
    return kwargs


def _refit(automl, X: np.ndarray, y: np.ndarray, settings: SearchSettings):
    """The search's best configuration refitted on ``X``, ``y`` (train+validation); None when nothing was chosen."""
    if automl.best_estimator is None or automl.best_config is None:
        return None
    return refit(automl.best_estimator, automl.best_config, X, y, settings.task, settings.n_jobs)


def _result(automl, judge: TrialJudge, settings: SearchSettings, budget: HardwareBudget,
            measure: Measure | None, validation: Validation, refitted, rows=None) -> SearchResult:
    trials = tuple(judge.trials)
    scored = [t for t in trials if t.failure is None]
    if trials and not scored:
        raise SearchError(failure_message(trials))
    if scored and not any(t.feasible for t in scored):
        raise SearchError(infeasible_message(scored, budget))
    if refitted is None:
        raise SearchError(
            "the search finished without a model: no trial was judged in the time given; give it more time "
            "with --time-budget, or allow more estimators in the target profile"
        )
    model, learner, config = refitted.estimator, automl.best_estimator, dict(automl.best_config)
    best = min((t for t in trials if t.feasible and t.learner == automl.best_estimator and t.loss is not None),
               key=lambda t: t.loss, default=None)
    cost, check, notes = None, None, judge.notes()
    if measure is not None and best is not None and rows is not None:
        check, model = _check_frontier(best, model, trials, budget, measure, settings, rows)
        best, cost = check.shipped.trial, check.shipped.measured
        if check.trial_costs == "predicted" or check.fallback:  # an ONNX target's trials were measured: no news
            notes = (*notes, check.summary())
        learner, config = best.learner, (config if best is check.candidates[0].trial else dict(best.config or {}))
    elif measure is not None:
        cost = measure(model)
    return SearchResult(
        learner=learner,
        config=config,
        model=model,
        metric=judge.metric_name,
        best_loss=best.loss if best is not None else float(automl.best_loss),
        trials=trials,
        seconds=judge.elapsed(),
        budget=budget,
        learners=tuple(settings.learners),
        cost=cost,
        notes=notes,
        validation=validation,
        fitted_rows=judge.rows,
        check=check,
    )


def _check_frontier(best: Trial, model, trials, budget: HardwareBudget, measure: Measure, settings: SearchSettings,
                    rows) -> tuple[FrontierCheck, object]:
    """Export the frontier candidates for real, best first, until one fits every budget: the one that ships.

    ``best`` is FLAML's choice, ``model`` its configuration refitted on train+validation (``rows``); each other
    candidate (:func:`~edgeml.search.trials.candidates`) is refitted the same way when its turn comes. Each is
    measured by the measure's ``exact`` (the measure itself when it has none) and, when the measure predicts, also
    predicted: the two are the predictor's error on the frontier. Returns the check and the refitted model that
    ships; no candidate fitting is a :class:`SearchError`.
    """
    exact, predicts = getattr(measure, "exact", measure), bool(getattr(measure, "predicts", False))
    order = [best, *(t for t in candidates(trials) if t is not best)][:MAX_CANDIDATES]
    checked = []
    for trial in order:
        fitted = model if trial is best else refit(trial.learner, dict(trial.config or {}), *rows, settings.task,
                                                    settings.n_jobs).estimator
        measured = exact(fitted)
        checked.append(Candidate(trial, measured, measure(fitted) if predicts else None, budget.broken(measured)))
        if not checked[-1].broken:
            return FrontierCheck("predicted" if predicts else "measured", tuple(checked)), fitted
    broke = "; ".join(f"trial {c.trial.iteration + 1} ({c.trial.learner}) {c.measured.model_bytes:,} bytes"
                      + (f", arena {c.measured.arena_bytes:,}" if c.measured.arena_bytes is not None else "")
                      + f": {', '.join(c.broken)}" for c in checked)
    raise SearchError(f"no model fits the target's budgets once exported: the {len(checked)} best candidate(s) of "
                      f"the frontier, refitted on train+validation, all break one ({broke}); relax that budget, or "
                      "give the search more time (--time-budget) so that it finds smaller models")


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
