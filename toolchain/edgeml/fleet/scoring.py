"""Champion and challenger on the same rows: which rows are the most recent, and what a bundle scores on them.

:func:`recent_split` holds out the last share of a source's *labelled* rows
(by its time column, else by file order; a row without a label is neither
recent nor older); :func:`score_bundle` scores a bundle on those rows through
:class:`edgeml_runtime.Model`, from their raw values as a device reads them,
with the metric functions the build's verification uses
(:mod:`edgeml.verify.metrics`). A row the bundle cannot score counts against
it: a classifier is taken to have given it a wrong class with certainty, a
regressor the recent label farthest from its true value.

>>> import pandas as pd
>>> frame = pd.DataFrame({"t": [3, 1, 4, 2, 5], "y": [0, 1, None, 1, 0]})
>>> split = recent_split(frame, "y", 0.5, "t")
>>> split.recent.index.tolist(), split.older.index.tolist(), (split.by, split.first, split.last), split.unlabelled
([0, 4], [1, 3], ('t', 3, 5), 1)
>>> recent_split(frame, "y", 0.5, None).recent.index.tolist()  # file order: the last two labelled rows
[3, 4]
>>> better(Score("rmse", 2.0, 10), Score("rmse", 2.5, 10), margin=0.4), better(Score("r2", .8, 9), None, 0.0)
((True, 0.5), (True, None))
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from edgeml.errors import DataError, EdgeMLError, FleetError
from edgeml.verify.metrics import task_metrics
from edgeml.verify.samples import json_value

#: The metrics champion and challenger can be compared on, per task, and whether higher is better.
METRICS = {"classification": {"accuracy": True, "balanced_accuracy": True, "f1": True, "roc_auc": True,
                              "log_loss": False},
           "regression": {"r2": True, "mae": False, "rmse": False}}
#: A build's search metric (FLAML's name) as the comparable metric it ranks models the same way as.
SAME_RANKING = {"roc_auc_ovr": "roc_auc", "mse": "rmse", "micro_f1": "accuracy"}
#: The metric used when the champion's search metric is none of those (ap, recall, mape, macro_f1).
FALLBACK = {"classification": "roc_auc", "regression": "r2"}
#: Reasons of rows a bundle could not score kept in a score (the rest are counted).
REASONS_KEPT = 3


@dataclass(frozen=True, eq=False)
class RecentSplit:
    """A source's labelled rows cut in two: ``recent`` (held out, compared on) and ``older`` (trained on)."""

    recent: pd.DataFrame
    older: pd.DataFrame
    by: str  #: the time column, or ``"file order"``
    first: object  #: the recent rows' first time value (JSON), or row number (1 = the source's first data row)
    last: object
    unlabelled: int  #: rows left out for having no label
    untimed: int = 0  #: labelled rows without a time value: counted as the oldest

    def to_dict(self) -> dict:
        return {"recent": len(self.recent), "older": len(self.older), "by": self.by, "first": self.first,
                "last": self.last}


def recent_split(frame: pd.DataFrame, label: str, share: float, time_column: str | None) -> RecentSplit:
    """The last ``share`` of ``frame``'s labelled rows (at least one, and at least one older row left), by
    ``time_column`` (numbers, or text and datetimes read as times; ties in file order) or else by file order."""
    for name, what in ((label, "label"), (time_column, "time_column")):
        if name is not None and name not in frame.columns:
            raise DataError(f"[retrain] {what} = {name!r} is not a column of the source; its columns are "
                            f"{', '.join(map(str, list(frame.columns)[:8]))}{' …' if frame.shape[1] > 8 else ''}")
    labelled = frame[frame[label].notna()]
    n = len(labelled)
    k = min(max(1, round(share * n)), n - 1)
    if n < 2:
        raise DataError(f"the source has {n} labelled row(s) in column {label!r}: a challenger needs older rows to "
                        "learn from and recent ones to be compared on; give more labelled rows")
    untimed = 0
    if time_column is None:
        order = labelled
    else:
        times = _times(labelled[time_column], time_column)
        untimed = int(times.isna().sum())
        positions = times.reset_index(drop=True).sort_values(kind="stable", na_position="first").index
        order = labelled.iloc[positions.to_numpy()]  # ties, and rows without a time (the oldest), in file order
    recent, older = order.iloc[n - k:], order.iloc[:n - k]
    if time_column is None:
        first, last = int(frame.index.get_loc(recent.index[0])) + 1, int(frame.index.get_loc(recent.index[-1])) + 1
    else:
        first, last = json_value(recent[time_column].iloc[0]), json_value(recent[time_column].iloc[-1])
    return RecentSplit(recent, older, time_column or "file order", first, last, len(frame) - n, untimed)


def _times(values: pd.Series, column: str) -> pd.Series:
    """``values`` as numbers or times that sort (missing stays missing); DataError naming an unreadable value."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype("float64")
    if pd.api.types.is_datetime64_any_dtype(values):
        return values
    read = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
    bad = values[read.isna() & values.notna()]
    if len(bad):
        raise DataError(f"[retrain] time_column {column!r}: {len(bad)} value(s) are not times, e.g. "
                        f"{bad.iloc[0]!r}; give ISO 8601 times or numbers, or leave time_column out to use file order")
    return read


@dataclass(frozen=True)
class Score:
    """A bundle's ``metric`` on ``rows`` rows, ``failed`` of which it could not score (counted against it)."""

    metric: str
    value: float
    rows: int
    failed: int = 0
    reasons: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict:
        return {"score": self.value, "rows": self.rows, "failed_rows": self.failed, "failures": list(self.reasons)}


def comparison_metric(task: str, wanted: str | None, champion: str | None) -> tuple[str, str]:
    """The metric to compare on and where it came from: ``wanted`` ([promotion] metric), else the champion's
    search metric (a metric ranking the same way where it is not comparable as it is, else the task's default).

    >>> comparison_metric("classification", None, "roc_auc"), comparison_metric("regression", None, "mse")
    (('roc_auc', "the champion's metric"), ('rmse', "the champion's metric mse, ranked the same way"))
    """
    known = METRICS[task]
    if wanted is not None:
        if wanted not in known:
            raise FleetError(f"[promotion] metric = {wanted!r} does not apply to {task}; use one of "
                             f"{', '.join(known)}")
        return wanted, "[promotion] metric"
    if champion in known:
        return champion, "the champion's metric"
    if champion in SAME_RANKING and SAME_RANKING[champion] in known:
        return SAME_RANKING[champion], f"the champion's metric {champion}, ranked the same way"
    return FALLBACK[task], (f"{FALLBACK[task]}: the champion's metric {champion} is not comparable here"
                            if champion else f"{FALLBACK[task]}, the default for {task}")


def better(challenger: Score, champion: Score | None, margin: float) -> tuple[bool, float | None]:
    """Whether the challenger beats the champion by more than ``margin``, and by how much (in the metric's
    units, positive when better); with no champion, True and None."""
    if champion is None:
        return True, None
    gain = challenger.value - champion.value
    if not METRICS_HIGHER[challenger.metric]:
        gain = -gain
    return gain > margin, round(gain, 6)


METRICS_HIGHER = {name: higher for task in METRICS.values() for name, higher in task.items()}


def score_bundle(model, recent: pd.DataFrame, label: str, metric: str, classes: tuple = ()) -> Score:
    """``model`` (a loaded :class:`edgeml_runtime.Model`) scored on ``recent``'s raw values with ``metric``;
    ``classes`` the labels both bundles are compared over (classification: its own first)."""
    names = [n for n in model.manifest.schema.names if n in recent.columns]
    columns = {n: [json_value(v) for v in recent[n].tolist()] for n in names}
    n = len(recent)
    try:
        out = model.predict(columns, on_error="skip")
        scored, reasons = out.rows, [str(e) for e in out.errors]
        failed = n - len(scored)
    except EdgeMLError as exc:  # a bundle that cannot score the batch (a column missing) loses every row of it
        out, scored, reasons, failed = None, np.empty(0, dtype=np.int64), [f"{type(exc).__name__}: {exc}"], n
    truth = recent[label].tolist()
    if model.task == "classification":
        value = _classified(metric, truth, out, scored, classes or tuple(model.classes))
    else:
        value = _regressed(metric, np.asarray(truth, dtype=np.float64), out, scored)
    return Score(metric, value, n, failed, tuple(reasons[:REASONS_KEPT]))


def _classified(metric: str, truth: list, out, scored: np.ndarray, classes: tuple) -> float:
    index = {json_value(c): i for i, c in enumerate(classes)}
    unknown = sorted({json_value(v) for v in truth} - set(index), key=str)
    index.update({v: len(index) + i for i, v in enumerate(unknown)})  # labels neither bundle knows: never right
    k = len(index)
    y = np.array([index[json_value(v)] for v in truth])
    wrong = (y + 1) % k
    predicted, proba = wrong.copy(), np.zeros((len(y), k))
    proba[np.arange(len(y)), wrong] = 1.0  # a row that could not be scored: a wrong class, with certainty
    if out is not None and len(scored):
        own = [index[json_value(c)] for c in out.classes]
        predicted[scored] = [index[json_value(v)] for v in out.labels]
        rows = np.zeros((len(scored), k))
        rows[:, own] = np.asarray(out.probabilities, dtype=np.float64)
        proba[scored] = rows
    values = task_metrics("classification", y, predicted, proba)
    if metric not in values:
        raise DataError(f"the recent rows hold one class only ({classes[y[0]]!r}), so {metric} cannot compare "
                        "champion and challenger; hold out more rows ([promotion] recent_share) or set "
                        "[promotion] metric = \"accuracy\"")
    return values[metric]


def _regressed(metric: str, y: np.ndarray, out, scored: np.ndarray) -> float:
    # A row that could not be scored: the recent label farthest from its own value.
    low, high = float(np.min(y)), float(np.max(y))
    predicted = np.where(y - low > high - y, low, high)
    if out is not None and len(scored):
        predicted[scored] = np.asarray(out.labels, dtype=np.float64)
    return task_metrics("regression", y, predicted, None)[metric]


__all__ = ["METRICS", "RecentSplit", "Score", "better", "comparison_metric", "recent_split", "score_bundle"]
