"""The validation loss of one trial, defined whatever classes the validation split lacks.

FLAML computes a classifier's loss from the classes it finds in the
validation rows. A class too rare to stratify has no rows there
(:func:`edgeml.data.preprocess.split_frame` keeps it in training), and then
FLAML's ``log_loss`` refuses probabilities with more columns than the classes
it sees, and its ROC AUC refuses a multiclass matrix: every trial would score
``inf`` and the search would end without a model. Here the classes are the
training split's (the model's probability columns), ``log_loss`` is told
them, ROC AUC one-vs-rest averages over the classes the validation rows hold,
and a metric that ranks or balances classes falls back to ``log_loss`` when
the validation rows hold one class only (:func:`metric_for`). Every other
metric is FLAML's own.

Example:

>>> import numpy as np
>>> proba = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.6, 0.3, 0.1]])
>>> y = np.array([0, 1, 0, 1])  # class 2 has no validation row
>>> round(validation_loss("log_loss", proba, y, np.arange(3)), 4)
0.7469
>>> round(ovr_roc_auc(y, proba, np.arange(3)), 4)
0.8125
>>> metric_for("roc_auc", np.array([1, 1, 1]))
('log_loss', 'the validation split holds one class only (1), so roc_auc cannot be computed; the search minimises \
log_loss instead')
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score, log_loss, recall_score, roc_auc_score

#: Metrics that compare classes (ranking or balancing them): undefined on validation rows of one class.
NEEDS_TWO_CLASSES = ("roc_auc", "roc_auc_ovr", "ap", "f1", "recall")


def metric_for(metric: str, y_valid: np.ndarray) -> tuple[str, str | None]:
    """The metric the search can minimise on ``y_valid`` when asked for ``metric``, and why it differs (or None).

    >>> metric_for("roc_auc", np.array([0, 1]))
    ('roc_auc', None)
    """
    present = np.unique(y_valid)
    if metric in NEEDS_TWO_CLASSES and len(present) < 2:
        return "log_loss", (f"the validation split holds one class only ({', '.join(map(str, present))}), so "
                            f"{metric} cannot be computed; the search minimises log_loss instead")
    return metric, None


def validation_loss(metric: str, y_pred: np.ndarray, y_true: np.ndarray, labels: np.ndarray) -> float:
    """FLAML's loss for ``metric`` (lower is better), with ``labels`` the classes of the probability columns.

    ``y_pred`` is what :func:`flaml.automl.ml.get_y_pred` gives for the
    metric: probabilities (one column per label, or the positive class's for a
    binary ``roc_auc``/``ap``), or predicted labels or values. Raises
    ``ValueError`` where the metric cannot be computed (predictions that are
    not finite, say).
    """
    if labels is not None and metric in LABEL_METRICS and np.ndim(y_pred) == 1:
        return 1.0 - label_metric(metric, y_true, y_pred, labels)
    if labels is not None and np.ndim(y_pred) == 2:
        if metric == "log_loss":
            return float(log_loss(y_true, y_pred, labels=labels))
        if metric in ("roc_auc", "roc_auc_ovr"):
            return 1.0 - ovr_roc_auc(y_true, y_pred, labels)
    from flaml.automl.ml import sklearn_metric_loss_score

    return float(sklearn_metric_loss_score(metric, y_pred, y_true, labels))


#: Metrics on predicted labels that edgeml computes itself: FLAML lacks ``recall`` and ``balanced_accuracy``,
#: and its ``f1`` is the binary one, refused for more than two classes.
LABEL_METRICS = ("recall", "balanced_accuracy", "f1")


def label_metric(metric: str, y_true: np.ndarray, y_pred: np.ndarray, labels: np.ndarray) -> float:
    """``recall`` (of the positive class, ``labels[1]``; macro over classes for more than two),
    ``balanced_accuracy`` (recall averaged over the classes ``y_true`` holds) or ``f1`` (binary, else macro).

    >>> y, p = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 0])
    >>> label_metric("recall", y, p, np.arange(2)), label_metric("balanced_accuracy", y, p, np.arange(2))
    (0.5, 0.5)
    """
    binary = len(labels) == 2
    if metric == "balanced_accuracy":
        return float(recall_score(y_true, y_pred, labels=np.unique(y_true), average="macro", zero_division=0))
    score = recall_score if metric == "recall" else f1_score
    if binary:
        return float(score(y_true, y_pred, pos_label=labels[1], average="binary", zero_division=0))
    return float(score(y_true, y_pred, labels=labels, average="macro", zero_division=0))


def ovr_roc_auc(y_true: np.ndarray, proba: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC one-vs-rest, macro-averaged over the classes ``y_true`` holds (``proba``'s columns are ``labels``).

    With every class present it is scikit-learn's ``roc_auc_score(..., multi_class="ovr")``; a class without
    rows has no AUC and is left out of the average. ``ValueError`` when ``y_true`` holds fewer than two classes.

    >>> y, p = np.array([0, 1, 2, 2]), np.array([[.7, .2, .1], [.1, .8, .1], [.2, .2, .6], [.5, .1, .4]])
    >>> ovr_roc_auc(y, p, np.arange(3)) == roc_auc_score(y, p, multi_class="ovr")
    True
    """
    labels = list(labels)
    present = [c for c in np.unique(y_true) if c in labels]
    if len(present) < 2:
        raise ValueError(f"ROC AUC needs two classes in the true labels; they hold {len(present)}")
    if proba.shape[1] == 2 and len(labels) == 2:
        return float(roc_auc_score(y_true == labels[1], proba[:, 1]))
    return float(np.mean([roc_auc_score(y_true == c, proba[:, labels.index(c)]) for c in present]))


__all__ = ["LABEL_METRICS", "NEEDS_TWO_CLASSES", "label_metric", "metric_for", "ovr_roc_auc", "validation_loss"]
