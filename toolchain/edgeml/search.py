"""Search for the best model with FLAML, within a target's allowed learners.

Takes the preprocessed training and validation matrices (plain numpy) and
returns the refitted best model with what the search saw. Progress is
reported through a callback; FLAML's own console chatter and scikit-learn's
warnings are kept out of the user's terminal.
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

from .errors import SearchError
from .learners import LEARNERS

METRICS = {
    "classification": ("auto", "accuracy", "roc_auc", "roc_auc_ovr", "f1", "log_loss", "ap", "micro_f1", "macro_f1"),
    "regression": ("auto", "r2", "rmse", "mae", "mse", "mape"),
}


@dataclass(frozen=True)
class Trial:
    """One step of the search as FLAML logged it."""

    iteration: int
    learner: str
    elapsed: float
    best_loss: float | None
    best_learner: str | None


@dataclass(frozen=True)
class SearchResult:
    learner: str
    config: dict
    model: object
    metric: str
    best_loss: float
    trials: tuple[Trial, ...]
    seconds: float


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
            f"{', '.join(n for n, l in LEARNERS.items() if task in l.tasks)} to the target's estimators"
        )
    return usable


def run_search(X_train: np.ndarray, y_train: np.ndarray, X_valid: np.ndarray, y_valid: np.ndarray,
               settings: SearchSettings, progress: Callable[[Trial], None] | None = None) -> SearchResult:
    """Run FLAML AutoML with a holdout on the given validation split and return the refitted best model."""
    from flaml import AutoML

    if settings.metric not in METRICS[settings.task]:
        raise SearchError(
            f"metric {settings.metric!r} does not apply to {settings.task}; use one of {', '.join(METRICS[settings.task])}"
        )
    automl = AutoML()
    for name in settings.learners:
        automl.add_learner(name, LEARNERS[name].flaml_class)
    trials: list[Trial] = []

    def record(trial: Trial):
        trials.append(trial)
        if progress is not None:
            progress(trial)

    kwargs = dict(
        task=settings.task,
        estimator_list=list(settings.learners),
        metric=settings.metric,
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
    with _quiet_flaml(record):
        try:
            automl.fit(X_train, y_train, X_val=X_valid, y_val=y_valid, **kwargs)
        except (ValueError, TypeError) as exc:
            raise SearchError(f"the model search failed: {exc}") from exc
    if automl.model is None:
        raise SearchError(
            "the search finished without a model; give it more time with --time-budget "
            "or allow more estimators in the target profile"
        )
    return SearchResult(
        learner=automl.best_estimator,
        config=dict(automl.best_config),
        model=automl.model.estimator,
        metric=automl._state.metric if isinstance(automl._state.metric, str) else settings.metric,
        best_loss=float(automl.best_loss),
        trials=tuple(trials),
        seconds=time.monotonic() - start,
    )


_ITER = re.compile(r"iteration (\d+), current learner (\w+)")
_BEST = re.compile(r"at ([\d.]+)s,\s*estimator (\w+)'s best error=([-\d.einf]+),\s*best estimator (\w+)'s best error=([-\d.einf]+)")


class _TrialHandler(logging.Handler):
    """Turns FLAML's log lines into :class:`Trial` records."""

    def __init__(self, sink):
        super().__init__(logging.INFO)
        self.sink = sink
        self.current: tuple[int, str] | None = None

    def emit(self, record):
        msg = record.getMessage()
        m = _ITER.search(msg)
        if m:
            self.current = (int(m.group(1)), m.group(2))
            return
        m = _BEST.search(msg)
        if m and self.current is not None:
            self.sink(Trial(self.current[0], self.current[1], float(m.group(1)), float(m.group(5)), m.group(4)))
            self.current = None


@contextmanager
def _quiet_flaml(sink):
    """Capture FLAML's progress into ``sink``; silence its console handler and scikit-learn's warnings."""
    logger = logging.getLogger("flaml.automl.logger")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    handler = _TrialHandler(sink)
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
