"""What a classifier's test metrics mean: the majority-class baseline beside them, the confusion matrix, and
whether the model predicts one class for the whole test split.

A model on a table with 3 % failures reaches accuracy 0.97 by never predicting
a failure; the summary shows that baseline next to the model's metrics, the
confusion matrix (rows: the true class, columns: the predicted one), and a
warning when every test row gets one label.

Example:

>>> r = report_split(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0]), np.array([0, 0, 1]), ("ok", "fail"))
>>> r.baseline["accuracy"], r.confusion, r.one_class
(0.75, ((3, 0), (1, 0)), 'ok')
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


def describe(report: SplitReport) -> list[str]:
    """The summary's lines for ``report``: the baseline and the confusion matrix (the warning is the caller's).

    >>> r = report_split(np.array([0, 1, 1]), np.array([0, 1, 0]), np.array([0, 1, 1]), ("no", "yes"))
    >>> print("\\n".join(describe(r)))
    majority class 'yes' (the baseline): accuracy 0.6667 · balanced_accuracy 0.5 · f1 0.8
    confusion (rows true, columns predicted):
               no    yes
        no      1      0
       yes      1      1
    """
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


__all__ = ["MAX_CONFUSION_CLASSES", "SplitReport", "describe", "majority_metrics", "report_split"]
