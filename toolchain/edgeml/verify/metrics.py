"""Test and validation metrics, computed the same way for the host pipeline and for artifacts."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Metrics for class indices ``y_true``/``y_pred`` and an ``(n, k)`` probability matrix."""
    k = proba.shape[1]
    binary = k == 2
    out = {
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y_true, y_pred),
        "f1": skm.f1_score(y_true, y_pred, average="binary" if binary else "macro", zero_division=0),
    }
    labels = np.arange(k)
    if len(np.unique(y_true)) == k:
        out["roc_auc"] = skm.roc_auc_score(y_true, proba[:, 1] if binary else proba, multi_class="ovr", labels=labels)
    out["log_loss"] = skm.log_loss(y_true, np.clip(proba, 1e-7, 1), labels=labels)
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
