"""Search for the best model with FLAML, within a target's allowed learners and budgets.

Takes the preprocessed training and validation matrices (plain numpy) and
returns the refitted best model with what the search saw. Progress is
reported through a callback; FLAML's own console chatter and scikit-learn's
warnings are kept out of the user's terminal.

The search is hardware-aware. FLAML is given a custom metric that computes
the usual validation loss (FLAML's own computation, so ``metric="auto"``
means what it means in FLAML) and, for the trial's fitted model, the size of
its ONNX export and its one-row latency on the target as the cost model
predicts it (:mod:`edgeml.search.costmodel`, scaled by the profile's
``speed_factor``); for a target that runs TFLite, the size, the tensor
memory (``max_arena_bytes``) and the operators of its TFLite file at the
target's precision, checked against the target's operator set. A trial that breaks a budget is recorded as such and
reported to FLAML as worse than every trial that fits — the further over
budget, the worse — so FLAML's own incumbent is always a model that fits, if
any trial did. The latency is also reported as FLAML's ``pred_time`` and
constrained with ``metric_constraints``, which steers FLAML's local search
away from slow regions. (FLAML 2.7 checks ``metric_constraints`` only
against the top-level keys of a trial's result, among them ``pred_time``,
not against the other values a custom metric logs; the objective's penalty
is what holds every budget.)

Every trial is kept (:class:`~edgeml.search.trials.Trial`: learner, config, loss,
size, latency, feasible), and :func:`~edgeml.search.trials.frontier` picks the ones
no other trial beats on loss, size and latency together.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from edgeml.errors import ExportError, SearchError
from edgeml.models.learners import LEARNERS
from edgeml.search.trials import BUDGETS, INFEASIBLE, HardwareBudget, Trial, frontier, infeasible_message

METRICS = {
    "classification": ("auto", "accuracy", "roc_auc", "roc_auc_ovr", "f1", "log_loss", "ap", "micro_f1", "macro_f1"),
    "regression": ("auto", "r2", "rmse", "mae", "mse", "mape"),
}


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
    model_bytes: int | None = None  # the refitted best model's, measured like a trial's
    latency_ms: float | None = None
    learners: tuple[str, ...] = ()  #: the learners searched

    @property
    def frontier(self) -> list[Trial]:
        return frontier(self.trials)


@dataclass(frozen=True)
class SearchSettings:
    task: str
    learners: tuple[str, ...]
    metric: str = "auto"
    time_budget: float = 60.0
    max_iter: int | None = None
    seed: int = 0
    n_jobs: int = -1


def usable_learners(names, task: str) -> tuple[str, ...]:
    """The learners among ``names`` that serve ``task``, in the given order."""
    unknown = [n for n in names if n not in LEARNERS]
    if unknown:
        raise SearchError(f"unknown learner(s) {', '.join(unknown)}; edgeml knows {', '.join(LEARNERS)}")
    usable = tuple(n for n in names if task in LEARNERS[n].tasks)
    if not usable:
        raise SearchError(
            f"none of the learners {', '.join(names)} can do {task}; add one of "
            f"{', '.join(n for n, learner in LEARNERS.items() if task in learner.tasks)} to the target's estimators"
        )
    return usable


def run_search(X_train: np.ndarray, y_train: np.ndarray, X_valid: np.ndarray, y_valid: np.ndarray,
               settings: SearchSettings, progress: Callable[[Trial], None] | None = None,
               budgets: HardwareBudget | None = None) -> SearchResult:
    """Run FLAML AutoML with a holdout on the given validation split and return the refitted best model.

    Every trial is judged on ``budgets`` as well as on the metric; with no
    budgets, trials are still measured (size, latency at ``speed_factor``
    1) but none is refused. If no trial fits, a :class:`SearchError` says
    which budget each trial broke and what to relax.
    """
    from flaml import AutoML

    if settings.metric not in METRICS[settings.task]:
        raise SearchError(
            f"metric {settings.metric!r} does not apply to {settings.task}; "
            f"use one of {', '.join(METRICS[settings.task])}"
        )
    budget = budgets or HardwareBudget()
    automl = AutoML()
    for name in settings.learners:
        automl.add_learner(name, LEARNERS[name].flaml_class)
    judge = _TrialJudge(settings, budget, X_train, y_train)
    trials: list[Trial] = []

    def record(trial: Trial):
        trials.append(trial)
        if progress is not None:
            progress(trial)

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
        verbose=3,
        log_file_name="",
        retrain_full=True,
        keep_search_state=False,
    )
    if settings.max_iter is not None:
        kwargs["max_iter"] = settings.max_iter
    start = time.monotonic()
    with _quiet_flaml(record, judge):
        try:
            automl.fit(X_train, y_train, X_val=X_valid, y_val=y_valid, **kwargs)
        except (ValueError, TypeError) as exc:
            raise SearchError(f"the model search failed: {exc}") from exc
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
    final_bytes, final_ms, *_ = judge.cost(model, X_train.shape[1])
    return SearchResult(
        learner=automl.best_estimator,
        config=dict(automl.best_config),
        model=model,
        metric=judge.metric_name,
        best_loss=best.loss if best is not None else float(automl.best_loss),
        trials=tuple(trials),
        seconds=time.monotonic() - start,
        budget=budget,
        model_bytes=final_bytes,
        latency_ms=final_ms,
        learners=tuple(settings.learners),
    )


class _TrialJudge:
    """FLAML's custom metric: the validation loss FLAML would compute, plus the model's size and target latency.

    FLAML calls it once per trial with the trial's fitted estimator. It
    returns FLAML's objective (the loss, or beyond every loss when a budget
    is broken) and the values to log, among them ``pred_time`` (the predicted
    device latency in seconds, which FLAML's ``metric_constraints`` can see).
    The last trial's numbers wait in :attr:`last` for the log handler.
    """

    def __init__(self, settings: SearchSettings, budget: HardwareBudget, X_train, y_train):
        from flaml.automl.task.factory import task_factory

        from edgeml.search.costmodel import load_cost_model

        if settings.task == "classification":
            name = "binary" if len(np.unique(y_train)) == 2 else "multiclass"
        else:
            name = "regression"
        self.flaml_task = task_factory(name, X_train, y_train)
        self.task = settings.task
        self.metric_name = self.flaml_task.default_metric(settings.metric)
        self.budget = budget
        self.X_train = X_train
        self.costs = load_cost_model()
        self.last: dict | None = None

    def __call__(self, X_val, y_val, estimator, labels, X_train, y_train, weight_val=None, weight_train=None,
                 config=None, *args):
        from flaml.automl.ml import get_y_pred, metric_loss_score

        y_pred = get_y_pred(estimator, X_val, self.metric_name, self.flaml_task)
        try:
            loss = float(metric_loss_score(self.metric_name, y_pred, y_val, labels, weight_val))
        except ValueError:  # a model that predicts inf or NaN, as FLAML treats it
            loss = float("inf")
        cost = self.cost(estimator.estimator, X_val.shape[1])
        broken = self.budget.broken(*cost)
        objective = INFEASIBLE * (1 + self.budget.excess(*cost)) + loss if broken else loss
        model_bytes, latency_ms, arena_bytes, unmapped = cost
        self.last = {"config": dict(config or {}), "loss": loss, "model_bytes": model_bytes,
                     "latency_ms": latency_ms, "broken": broken, "arena_bytes": arena_bytes, "unmapped": unmapped}
        return objective, {"val_loss": loss, "pred_time": latency_ms / 1000.0, "model_bytes": model_bytes,
                           "latency_ms": latency_ms, "feasible": not broken}

    def cost(self, model, n_features: int) -> tuple[int, float, int | None, tuple[str, ...]]:
        """The model's size, predicted target latency, TFLite tensor memory and what keeps it off the operator set.

        The size is the model's ONNX export, or, for a target that runs
        TFLite, its TFLite file at the first of the target's precisions it
        exports at (estimated when it cannot be exported at all).
        """
        from edgeml.search.costmodel import exported_bytes, structure_of

        structure = structure_of(model)
        n_inputs = self.budget.n_inputs or n_features
        latency = self.costs.predict_ms(structure, n_inputs, self.budget.speed_factor)
        if self.budget.tflite_precisions:
            return self._tflite_cost(model, n_features, structure, latency)
        try:
            size = exported_bytes(model, n_features, self.task)
        except ExportError:
            size = self.costs.predict_bytes(structure)
        return size, latency, None, ()

    def _tflite_cost(self, model, n_features: int, structure, latency: float):
        from edgeml.export.tflite.pipeline import estimator_tflite
        from edgeml.models.learners import model_steps
        from edgeml.targets.opsets import load_op_set, problems

        reasons, first = [], None
        overhead = dict(self.budget.tflite_overhead_bytes)
        for precision in self.budget.tflite_precisions:
            try:
                exp = estimator_tflite(model_steps(model), n_features, self.task, precision, self.X_train)
            except ExportError as exc:
                reasons.append(f"{precision}: {exc}")
                continue
            unmapped, arena = (), exp.details["planned_bytes"]
            if self.budget.tflite_ops:
                op_set = load_op_set(self.budget.tflite_ops)
                unmapped = tuple(problems(exp.ops, exp.tensor_types, op_set))
                over = self.budget.max_arena_bytes is not None and arena > self.budget.max_arena_bytes
                if not unmapped and not over and op_set.verify_with == "tflite-micro":  # over: refused anyway
                    unmapped, arena = _tflm_cost(exp, arena)
            cost = (len(exp.data) + overhead.get(precision, 0), latency, arena, unmapped)
            if not unmapped:
                return cost
            first = first or cost  # the next precision may map
        if first is not None:
            return first
        return self.costs.predict_bytes(structure), latency, None, tuple(reasons)


def _tflm_cost(exp, planned: int) -> tuple[tuple[str, ...], int]:
    """Why TFLite Micro's own interpreter cannot run the trial's file (empty when it can), and the arena it needs.

    The arena is TFLM's measured head and tail; where the package does not
    import, the planned tensor memory stands in.
    """
    from edgeml.export.tflite import micro as tflm

    if not tflm.available():
        return (), planned
    width = exp.details["input_width"]
    try:
        used = tflm.run(exp.data, np.zeros((1, width), np.int8 if exp.precision == "int8" else np.float32), planned)
    except ExportError as exc:
        return (str(exc),), planned
    return (), used.arena_bytes


_ITER = re.compile(r"iteration (\d+), current learner (\w+)")
_BEST = re.compile(r"at ([\d.]+)s,\s*estimator (\w+)'s best error=([-+\d.einf]+),"
                   r"\s*best estimator (\w+)'s best error=([-+\d.einf]+)")


class _TrialHandler(logging.Handler):
    """Turns FLAML's log lines, with the judge's numbers for the same trial, into :class:`Trial` records."""

    def __init__(self, sink, judge: _TrialJudge):
        super().__init__(logging.INFO)
        self.sink = sink
        self.judge = judge
        self.current: tuple[int, str] | None = None
        self.best: tuple[float, str] | None = None

    def emit(self, record):
        msg = record.getMessage()
        m = _ITER.search(msg)
        if m:
            self.current = (int(m.group(1)), m.group(2))
            self.judge.last = None
            return
        m = _BEST.search(msg)
        if m and self.current is not None:
            iteration, learner = self.current
            seen, self.judge.last, self.current = self.judge.last, None, None
            if seen is None:  # the trial failed before the metric ran
                return
            feasible = not seen["broken"]
            if feasible and np.isfinite(seen["loss"]) and (self.best is None or seen["loss"] < self.best[0]):
                self.best = (seen["loss"], learner)
            self.sink(Trial(iteration, learner, float(m.group(1)),
                            self.best[0] if self.best else None, self.best[1] if self.best else None,
                            config=seen["config"], loss=seen["loss"], model_bytes=seen["model_bytes"],
                            latency_ms=seen["latency_ms"], feasible=feasible, broken=seen["broken"],
                            arena_bytes=seen["arena_bytes"], unmapped=seen["unmapped"]))


@contextmanager
def _quiet_flaml(sink, judge: _TrialJudge):
    """Capture FLAML's progress into ``sink``; silence its console handler and scikit-learn's warnings."""
    logger = logging.getLogger("flaml.automl.logger")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    handler = _TrialHandler(sink, judge)
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
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


__all__ = [
    "BUDGETS", "INFEASIBLE", "METRICS", "HardwareBudget", "SearchResult", "SearchSettings", "Trial", "frontier",
    "infeasible_message", "run_search", "usable_learners",
]
