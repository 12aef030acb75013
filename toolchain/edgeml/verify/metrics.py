"""Test and validation metrics, computed the same way for the host pipeline and for artifacts, and the rule that
judges what a reduced-precision artifact may lose against fp32."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from edgeml.search.loss import ovr_roc_auc


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Metrics for class indices ``y_true``/``y_pred`` and an ``(n, k)`` probability matrix.

    A class the rows lack (one too rare to be tested, kept in training) is
    left out where it has no meaning: balanced accuracy averages the recall
    of the classes present, ROC AUC is one-vs-rest over them
    (:func:`edgeml.search.loss.ovr_roc_auc`; absent with fewer than two).

    >>> y, p = np.array([0, 1, 1, 0]), np.array([[.9, .05, .05], [.2, .7, .1], [.3, .6, .1], [.2, .3, .5]])
    >>> m = classification_metrics(y, p.argmax(axis=1), p)
    >>> m["accuracy"], m["balanced_accuracy"], m["roc_auc"]
    (0.75, 0.75, 0.8125)
    """
    k = proba.shape[1]
    binary = k == 2
    labels = np.arange(k)
    present = np.unique(y_true)
    out = {
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "balanced_accuracy": skm.recall_score(y_true, y_pred, labels=present, average="macro", zero_division=0),
        "f1": skm.f1_score(y_true, y_pred, average="binary" if binary else "macro", zero_division=0),
    }
    if len(present) >= 2:
        out["roc_auc"] = ovr_roc_auc(y_true, proba, labels)
    clipped = np.clip(np.asarray(proba, dtype=np.float64), 1e-7, 1)  # float32 rows sum to 1 only nearly
    out["log_loss"] = skm.log_loss(y_true, clipped / clipped.sum(axis=1, keepdims=True), labels=labels)
    return {name: round(float(v), 6) for name, v in out.items()}


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    out = {
        "rmse": float(np.sqrt(skm.mean_squared_error(y_true, y_pred))),
        "mae": skm.mean_absolute_error(y_true, y_pred),
        "r2": skm.r2_score(y_true, y_pred),
    }
    return {name: round(float(v), 6) for name, v in out.items()}


#: The headline metric shown in summaries, per task.
HEADLINE = {"classification": ("accuracy", "f1", "roc_auc"), "regression": ("rmse", "mae", "r2")}


def task_metrics(task: str, y: np.ndarray, labels: np.ndarray, probabilities: np.ndarray | None) -> dict[str, float]:
    """:func:`classification_metrics` (class indices and probabilities) or :func:`regression_metrics` (values).

    >>> task_metrics("regression", np.array([1.0, 3.0]), np.array([1.0, 2.0]), None)["mae"]
    0.5
    """
    if task == "classification":
        return classification_metrics(y, labels, probabilities)
    return regression_metrics(y, labels)


def host_output(pipeline, features: pd.DataFrame, task: str) -> np.ndarray:
    """The host pipeline's probabilities (classification) or values (regression) on ``features``."""
    return pipeline.predict_proba(features) if task == "classification" else pipeline.predict(features)


def labels_of(task: str, output: np.ndarray, threshold: float | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """A host output's labels (class indices, or the values themselves) and probabilities (``None`` for regression).

    ``threshold`` is a binary bundle's decision threshold (the manifest's ``decision``): class 1 where its
    probability is above it, as the runtime labels; without one, argmax.

    >>> labels_of("classification", np.array([[0.2, 0.8], [0.9, 0.1]]))[0].tolist()
    [1, 0]
    >>> labels_of("classification", np.array([[0.7, 0.3], [0.9, 0.1]]), threshold=0.25)[0].tolist()
    [1, 0]
    """
    if task == "classification" and threshold is not None and output.shape[1] == 2:
        return (output[:, 1] > threshold).astype(np.int64), output
    if task == "classification":
        return np.argmax(output, axis=1), output
    return output, None


def metric_drop(task: str, reference: Mapping[str, float], candidate: Mapping[str, float], budgets) -> dict:
    """How much a reduced-precision artifact loses against fp32 on the test split, and whether that is allowed.

    Classification compares accuracy (absolute points, ``max_accuracy_drop``);
    regression compares RMSE (relative increase, ``max_rmse_increase``).

    >>> from edgeml.targets.profiles import Budgets
    >>> metric_drop("classification", {"accuracy": 0.97}, {"accuracy": 0.965}, Budgets())["within"]
    True
    >>> metric_drop("regression", {"rmse": 4.0}, {"rmse": 4.2}, Budgets())["within"]
    False
    """
    if task == "classification":
        drop = float(reference["accuracy"]) - float(candidate["accuracy"])
        allowed = budgets.max_accuracy_drop
        return {"metric": "accuracy", "fp32": float(reference["accuracy"]), "value": float(candidate["accuracy"]),
                "drop": drop, "allowed": allowed, "within": drop <= allowed + 1e-12}
    increase = float(candidate["rmse"]) / float(reference["rmse"]) - 1 if reference["rmse"] else 0.0
    allowed = budgets.max_rmse_increase
    return {"metric": "rmse", "fp32": float(reference["rmse"]), "value": float(candidate["rmse"]),
            "drop": increase, "allowed": allowed, "within": increase <= allowed + 1e-12}
