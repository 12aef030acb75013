"""The decision threshold of a binary classifier: tuned for the build's metric on validation predictions.

A binary model gives the positive class (the second of ``classes``) a
probability ``p``; its label is positive when ``p > threshold`` (a
probability equal to the threshold is negative). With ``threshold = 0.5``
this is exactly argmax, whose tie also goes to the first class.

The rule (:func:`decide`):

* the metric the threshold serves is the build's metric when that metric
  depends on the cut-off (``accuracy``, ``f1``, ``balanced_accuracy``;
  ``recall`` is served by ``balanced_accuracy``, because recall alone is
  maximised by calling every row positive); for a metric that does not
  (``auto``, ``roc_auc``, ``log_loss``, ``ap``) it is ``f1`` when the
  positive class is under :data:`RARE_SHARE` of the labelled rows, and
  otherwise no tuning happens: the threshold stays 0.5 (argmax) — unless
  argmax calls every validation row one class while both are there (a
  model that ranks well but whose probabilities never cross 0.5, as a
  short, slow-learning boosted model's do): then the threshold is tuned for
  ``accuracy``, argmax's own aim, so the labels use what the ranking knows;
* no tuning happens either when the validation predictions hold fewer than
  :data:`MIN_POSITIVES` positive rows: F1 over a handful of positives moves
  by a whole step per row, so the threshold would fit those rows, not the
  class;
* the candidates are 0.5 and every midpoint between two adjacent distinct
  validation scores (a midpoint leaves room on both sides for float32
  rounding on a device); the best metric wins, a tie goes to the candidate
  nearest 0.5, then to the lower one (:func:`tune`).

:func:`decide` takes scores and labels only, so predictions from a holdout
(today: the host pipeline on the validation split) and out-of-fold
predictions under cross-validation are handled alike.

Example:

>>> import numpy as np
>>> scores = np.array([0.05, 0.1, 0.2, 0.3, 0.35, 0.6, 0.9])
>>> y = np.array([0, 0, 0, 1, 1, 0, 1])
>>> tune(scores, y, "f1")
0.25
>>> positive_labels(scores, 0.25).tolist()
[0, 0, 0, 1, 1, 1, 1]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The positive class's share of the labelled rows under which a threshold-free metric gets an F1 threshold.
RARE_SHARE = 0.20
#: Fewer positive validation rows than this and the threshold stays 0.5.
MIN_POSITIVES = 10
#: The metrics a threshold can be tuned for, and the one each build metric is served by.
SERVED_BY = {"accuracy": "accuracy", "f1": "f1", "balanced_accuracy": "balanced_accuracy",
             "recall": "balanced_accuracy"}


def positive_labels(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Class indices (0 or 1) for positive-class probabilities ``scores``: 1 where ``score > threshold``.

    >>> positive_labels(np.array([0.2, 0.5, 0.7]), 0.5).tolist()
    [0, 0, 1]
    """
    return (np.asarray(scores) > threshold).astype(np.int64)


def score(metric: str, y: np.ndarray, predicted: np.ndarray) -> float:
    """``accuracy``, ``f1`` (of the positive class) or ``balanced_accuracy`` of 0/1 ``predicted`` against ``y``.

    >>> score("balanced_accuracy", np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))
    0.75
    """
    y, predicted = np.asarray(y).astype(bool), np.asarray(predicted).astype(bool)
    tp, fp = int(np.sum(y & predicted)), int(np.sum(~y & predicted))
    fn, tn = int(np.sum(y & ~predicted)), int(np.sum(~y & ~predicted))
    if metric == "accuracy":
        return (tp + tn) / max(len(y), 1)
    if metric == "f1":
        return 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    if metric == "balanced_accuracy":
        return ((tp / (tp + fn) if tp + fn else 0.0) + (tn / (tn + fp) if tn + fp else 0.0)) / 2
    raise ValueError(f"a threshold cannot be tuned for metric {metric!r}; use one of {', '.join(SERVED_BY)}")


def candidates(scores: np.ndarray) -> np.ndarray:
    """0.5 and the midpoints between adjacent distinct ``scores``, ascending.

    >>> candidates(np.array([0.9, 0.1, 0.1, 0.3])).tolist()
    [0.2, 0.5, 0.6]
    """
    s = np.unique(np.asarray(scores, dtype=np.float64))
    return np.unique(np.concatenate([(s[:-1] + s[1:]) / 2, [0.5]]))


def tune(scores: np.ndarray, y: np.ndarray, metric: str) -> float:
    """The threshold among :func:`candidates` with the best ``metric``; ties: nearest 0.5, then the lower.

    >>> tune(np.array([0.1, 0.4, 0.45, 0.8]), np.array([0, 1, 1, 1]), "accuracy")
    0.25
    >>> tune(np.array([0.1, 0.9]), np.array([0, 1]), "f1")  # every cut-off between them is perfect: 0.5 kept
    0.5
    """
    cuts = candidates(scores)
    values = np.array([score(metric, y, positive_labels(scores, t)) for t in cuts])
    best = np.flatnonzero(values >= values.max() - 1e-12)
    order = sorted(best, key=lambda i: (abs(cuts[i] - 0.5), cuts[i]))
    return round(float(cuts[order[0]]), 6)


@dataclass(frozen=True)
class Decision:
    """How a binary classifier's label is chosen: ``threshold`` on the positive probability, and why.

    ``metric`` is the metric the threshold was tuned for (``None`` when it was
    not tuned), ``valid`` and ``argmax`` that metric's validation value at the
    tuned threshold and at 0.5.
    """

    threshold: float
    metric: str | None
    reason: str
    positives: int
    rows: int
    valid: float | None = None
    argmax: float | None = None

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "metric": self.metric, "reason": self.reason,
                "positives": self.positives, "rows": self.rows, "valid": self.valid, "argmax": self.argmax}


def decide(scores: np.ndarray, y: np.ndarray, build_metric: str, positive_share: float) -> Decision:
    """The :class:`Decision` for validation ``scores`` (positive probabilities), their 0/1 ``y``, the build's
    metric and the positive class's share of the labelled rows (the rule in the module docstring).

    >>> rng = np.random.default_rng(0)
    >>> d = decide(rng.random(50), np.arange(50) % 2, "roc_auc", 0.5)
    >>> d.threshold, d.metric
    (0.5, None)
    >>> squashed = np.concatenate([np.full(20, 0.2), np.full(20, 0.4)])  # ranks perfectly, never above 0.5
    >>> d = decide(squashed, np.repeat([0, 1], 20), "roc_auc", 0.5)
    >>> d.threshold, d.metric, d.argmax, d.valid
    (0.3, 'accuracy', 0.5, 1.0)
    >>> decide(rng.random(50), (np.arange(50) < 4).astype(int), "f1", 0.08).reason
    'the validation predictions hold 4 positive rows, fewer than 10: the threshold stays 0.5 (argmax)'
    """
    scores, y = np.asarray(scores, dtype=np.float64), np.asarray(y).astype(np.int64)
    positives, rows = int(y.sum()), len(y)
    metric = SERVED_BY.get(build_metric)
    if metric is None and positive_share < RARE_SHARE:
        metric, why = "f1", (f"the positive class is {positive_share:.1%} of the labelled rows (under "
                             f"{RARE_SHARE:.0%}) and the metric {build_metric} does not depend on the threshold")
    elif metric is None and 0 < positives < rows and len(np.unique(positive_labels(scores, 0.5))) == 1:
        called = "positive" if positive_labels(scores[:1], 0.5)[0] else "negative"
        metric, why = "accuracy", (f"argmax (0.5) calls every validation row {called}, though both classes are "
                                   f"there, and the metric {build_metric} does not depend on the threshold")
    elif metric is None:
        return Decision(0.5, None, f"the metric {build_metric} does not depend on the threshold and the positive "
                                   f"class is {positive_share:.1%} of the labelled rows: argmax (0.5)",
                        positives, rows)
    else:
        why = f"the build's metric is {build_metric}"
    if positives < MIN_POSITIVES:
        return Decision(0.5, None, f"the validation predictions hold {positives} positive rows, fewer than "
                                   f"{MIN_POSITIVES}: the threshold stays 0.5 (argmax)", positives, rows)
    threshold = tune(scores, y, metric)
    return Decision(threshold, metric, f"tuned for {metric} on the validation predictions: {why}", positives, rows,
                    round(score(metric, y, positive_labels(scores, threshold)), 6),
                    round(score(metric, y, positive_labels(scores, 0.5)), 6))


def decision_for(probabilities: np.ndarray, y_valid: np.ndarray, y_labelled: np.ndarray,
                 build_metric: str) -> Decision | None:
    """The :class:`Decision` of a binary classifier from its validation ``probabilities`` (``(n, 2)``: a
    holdout's, or out-of-fold predictions under cross-validation) and class indices ``y_valid``; ``y_labelled``
    are every labelled row's class indices (the positive share). ``None`` for more than two classes.

    >>> p = np.array([[0.9, 0.1], [0.6, 0.4]] * 10)
    >>> decision_for(p, np.array([0, 1] * 10), np.array([0] * 90 + [1] * 10), "roc_auc").threshold
    0.25
    """
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 2 or probabilities.shape[1] != 2:
        return None
    share = float(np.mean(np.asarray(y_labelled) == 1)) if len(y_labelled) else 0.0
    return decide(probabilities[:, 1], y_valid, build_metric, share)


__all__ = ["MIN_POSITIVES", "RARE_SHARE", "SERVED_BY", "Decision", "candidates", "decide", "decision_for",
           "positive_labels", "score", "tune"]
