"""What a model's test metrics mean: for a classifier the majority-class baseline beside them, the confusion matrix,
and whether the model predicts one class for the whole test split; for a regressor the error of predicting the
training labels' median, and the median absolute error beside R².

A model on a table with 3 % failures reaches accuracy 0.97 by never predicting
a failure; the summary shows that baseline next to the model's metrics, the
confusion matrix (rows: the true class, columns: the predicted one), and a
warning when every test row gets one label.

Example:

>>> r = report_split(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0]), np.array([0, 0, 1]), ("ok", "fail"))
>>> r.baseline["accuracy"], r.confusion, r.one_class
(0.75, ((3, 0), (1, 0)), 'ok')

A regressor that a few huge rows pushed off course can still show a fair R²
(or a poor one decided by those rows alone); the median absolute error is what
most rows see, and the median baseline says what no model at all would reach:

>>> r = report_regression(np.array([1.0, 2.0, 3.0, 100.0]), np.array([1.5, 2.0, 3.5, 60.0]), np.array([1.0, 2, 3]))
>>> r.median, r.baseline["mae"], r.model["median_ae"]
(2.0, 25.0, 0.5)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Confusion matrices are shown for at most this many classes.
MAX_CONFUSION_CLASSES = 6


@dataclass(frozen=True)
class SplitReport:
    """A classifier's test split seen whole: the majority class's metrics, the confusion matrix (``None``
    beyond :data:`MAX_CONFUSION_CLASSES`), and the one class predicted for every row (``None`` if several)."""

    classes: tuple
    majority: object
    baseline: dict
    confusion: tuple | None
    one_class: object | None


def majority_metrics(y_test: np.ndarray, majority: int) -> dict[str, float]:
    """Accuracy, balanced accuracy and F1 (of class 1; macro for more classes) of predicting ``majority``.

    >>> majority_metrics(np.array([0, 0, 0, 1]), 0)
    {'accuracy': 0.75, 'balanced_accuracy': 0.5, 'f1': 0.0}
    """
    y = np.asarray(y_test)
    present = np.unique(y)
    accuracy = float(np.mean(y == majority)) if len(y) else 0.0
    balanced = 1.0 / len(present) if majority in present else 0.0
    if len(present) <= 2:
        f1 = 2 * accuracy / (1 + accuracy) if majority == 1 and len(y) else 0.0
    else:  # only the majority class has an F1 above 0: 2·share/(1 + share), averaged over the classes present
        f1 = 2 * accuracy / (1 + accuracy) / len(present) if majority in present else 0.0
    return {"accuracy": round(accuracy, 6), "balanced_accuracy": round(balanced, 6), "f1": round(f1, 6)}


def report_split(y_test: np.ndarray, predicted: np.ndarray, y_train: np.ndarray, classes: tuple) -> SplitReport:
    """The :class:`SplitReport` of class indices ``predicted`` against ``y_test``; the majority class is the
    training split's most frequent one (the lowest index among equals)."""
    k = len(classes)
    majority = int(np.bincount(np.asarray(y_train, dtype=np.int64), minlength=k).argmax())
    y, p = np.asarray(y_test, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    confusion = None
    if k <= MAX_CONFUSION_CLASSES:
        counts = np.zeros((k, k), dtype=np.int64)
        np.add.at(counts, (y, p), 1)
        confusion = tuple(tuple(int(v) for v in row) for row in counts)
    distinct = np.unique(p)
    one = classes[int(distinct[0])] if len(distinct) == 1 and len(p) else None
    return SplitReport(tuple(classes), classes[majority], majority_metrics(y, majority), confusion, one)


def regression_metrics(y: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """MAE, R² and the median absolute error of ``predicted`` against ``y`` (R² 0 for a constant ``y``).

    >>> regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 2.0]))
    {'mae': 0.666667, 'r2': 0.0, 'median_ae': 1.0}
    """
    y, p = np.asarray(y, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    if not len(y):
        return {"mae": 0.0, "r2": 0.0, "median_ae": 0.0}
    error = np.abs(y - p)
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(error ** 2)) / total if total > 0 else 0.0
    return {"mae": round(float(error.mean()), 6), "r2": round(r2, 6), "median_ae": round(float(np.median(error)), 6)}


@dataclass(frozen=True)
class RegressionReport:
    """A regressor's test split seen whole: the training labels' ``median``, the ``baseline`` metrics of
    predicting it for every row and the ``model``'s (:func:`regression_metrics`, on the same rows)."""

    median: float
    baseline: dict
    model: dict


def report_regression(y_test: np.ndarray, predicted: np.ndarray, y_train: np.ndarray) -> RegressionReport:
    """The :class:`RegressionReport` of ``predicted`` against ``y_test``; the median is ``y_train``'s (the rows
    the model learnt from)."""
    median = float(np.median(np.asarray(y_train, dtype=np.float64)))
    y = np.asarray(y_test, dtype=np.float64)
    return RegressionReport(median, regression_metrics(y, np.full(len(y), median)), regression_metrics(y, predicted))


def describe(report: SplitReport | RegressionReport) -> list[str]:
    """The summary's lines for ``report``: the baseline and the confusion matrix (the warning is the caller's).

    >>> r = report_split(np.array([0, 1, 1]), np.array([0, 1, 0]), np.array([0, 1, 1]), ("no", "yes"))
    >>> print("\\n".join(describe(r)))
    majority class 'yes' (the baseline): accuracy 0.6667 · balanced_accuracy 0.5 · f1 0.8
    confusion (rows true, columns predicted):
               no    yes
        no      1      0
       yes      1      1
    >>> print("\\n".join(describe(report_regression(np.array([1.0, 2, 9]), np.array([1.0, 2, 6]), np.ones(3)))))
    median 1 of the training labels (the baseline): mae 3 · r2 -0.7105 · median_ae 1
    median absolute error 0 (what most rows see, beside mae 1 · r2 0.7632)
    """
    if isinstance(report, RegressionReport):
        b, m = report.baseline, report.model
        return [f"median {report.median:.4g} of the training labels (the baseline): "
                + " · ".join(f"{k} {v:.4g}" for k, v in b.items()),
                f"median absolute error {m['median_ae']:.4g} (what most rows see, beside mae {m['mae']:.4g} · "
                f"r2 {m['r2']:.4g})"]
    b = report.baseline
    lines = [f"majority class {report.majority!r} (the baseline): "
             + " · ".join(f"{k} {v:.4g}" for k, v in b.items())]
    if report.confusion is not None:
        names = [str(c)[:8] for c in report.classes]
        width = max(6, *map(len, names))
        lines.append("confusion (rows true, columns predicted):")
        lines.append(" " * (width + 1) + " ".join(f"{n:>{width}}" for n in names))
        for name, row in zip(names, report.confusion, strict=True):
            lines.append(f"{name:>{width}} " + " ".join(f"{v:>{width}}" for v in row))
    return lines


__all__ = ["MAX_CONFUSION_CLASSES", "RegressionReport", "SplitReport", "describe", "majority_metrics",
           "regression_metrics", "report_regression", "report_split"]
