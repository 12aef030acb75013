"""The metrics the search optimises, per task (FLAML's names), and what ``"auto"`` means for each.

Imported by the build settings (:mod:`edgeml.config`) to refuse a metric early,
without importing FLAML.

>>> describe_metric("regression", "auto")
'auto (r2)'
>>> describe_metric("classification", "log_loss")
'log_loss'
>>> print(check_metric("regression", "accuracy"))
metric 'accuracy' does not apply to regression; use one of auto, r2, rmse, mae, mse, mape
"""

from __future__ import annotations

#: The metrics the search optimises for each task ("auto": FLAML's own choice, :data:`AUTO_METRIC`). ``f1`` and
#: ``recall`` are the positive class's for two classes (macro-averaged for more), ``balanced_accuracy`` the mean
#: recall over the classes (:func:`edgeml.search.loss.label_metric`); a binary build then tunes its decision
#: threshold for the metric (:mod:`edgeml.search.threshold`).
METRICS = {
    "classification": ("auto", "accuracy", "balanced_accuracy", "f1", "recall", "roc_auc", "roc_auc_ovr", "log_loss",
                       "ap", "micro_f1", "macro_f1"),
    "regression": ("auto", "r2", "rmse", "mae", "mse", "mape"),
}
#: What FLAML optimises for metric "auto".
AUTO_METRIC = {"classification": "roc_auc for two classes, log_loss for more", "regression": "r2"}


def check_metric(task: str, metric: str) -> str:
    """Why ``metric`` cannot be optimised for ``task`` (``""`` when it can), with the metrics that can."""
    if metric in METRICS[task]:
        return ""
    return f"metric {metric!r} does not apply to {task}; use one of {', '.join(METRICS[task])}"


def describe_metric(task: str, metric: str) -> str:
    """``metric`` as the build shows it: ``"auto"`` with what FLAML optimises for ``task``."""
    return f"auto ({AUTO_METRIC[task]})" if metric == "auto" else metric


__all__ = ["AUTO_METRIC", "METRICS", "check_metric", "describe_metric"]
