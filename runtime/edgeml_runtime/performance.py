"""Live performance on the device: scored rows that carry their label, counted against what was predicted.

When the records a device scores carry the bundle's label column (the
outcome logged with the reading, or records replayed with their outcomes),
a :class:`PerformanceCounter` counts each one against the runtime's
prediction for it (the label after the manifest's decision threshold, exactly
what the runtime outputs). The state is counts, additive across windows and
devices (:mod:`.protocol.performance` describes them and adds them up):
a confusion matrix ``[true][predicted]`` over the manifest's classes, or, for
regression, the count and the sums from which MAE, RMSE, bias and R² follow.

A label that cannot be read (empty, ``null``, text for a number, a number
that is not finite) is ``unlabelled``: the row's prediction stands, it is not
counted. A label that reads but is not among the classes is ``unknown``.

Example: a binary bundle with classes ``[0, 1]``; CSV gives labels as text.

>>> counter = PerformanceCounter("classification", classes=(0, 1))
>>> counter.update(["0", "1", "1", "", "7", 0], [0, 1, 0, 1, 1, 0]).counts
{'kind': 'classes', 'labelled': 4, 'unknown': 1, 'unlabelled': 1, 'matrix': [[2, 0], [1, 1]]}
>>> counter.reset().counted
0
>>> PerformanceCounter("regression").update([2.0, "4", "n/a"], [2.5, 3.0, 1.0]).counts
{'kind': 'values', 'labelled': 2, 'unlabelled': 1, 'sum_error': -0.5, 'sum_abs_error': 1.5, \
'sum_squared_error': 1.25, 'sum_label': 6.0, 'sum_label_squared': 20.0}
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .errors import BundleError


def _number(value) -> float | None:
    """A label as a finite number, or None when it cannot be read as one."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        x = float(value)
    elif isinstance(value, str):
        try:
            x = float(value.strip())
        except ValueError:
            return None
    else:
        try:
            x = float(value)  # a numpy scalar
        except (TypeError, ValueError):
            return None
    return x if math.isfinite(x) else None


class PerformanceCounter:
    """Counts labelled rows against their predictions: ``update(labels, predicted) -> self``; ``counts``; ``reset()``.

    ``task`` and ``classes`` are the manifest's. Class labels are matched as
    the training data named them, or as their text (CSV gives ``"1"`` for the
    class ``1``; JSON may give ``1`` or ``1.0``); with numeric classes, a
    label that is not a number is unlabelled, a number that is no class
    unknown.
    """

    def __init__(self, task: str, classes: Sequence = ()):
        if task not in ("classification", "regression"):
            raise BundleError(f"task {task!r} is neither classification nor regression; rebuild the bundle")
        self.task, self.classes = task, tuple(classes)
        self.kind = "classes" if task == "classification" else "values"
        self._numeric = all(isinstance(c, int | float) and not isinstance(c, bool) for c in self.classes)
        self._index: dict = {}
        for i, c in enumerate(self.classes):
            self._index.setdefault(c, i)
            self._index.setdefault(str(c), i)
        self._reset()

    def _reset(self) -> None:
        k = len(self.classes)
        self.matrix = [[0] * k for _ in range(k)]
        self.labelled = self.unknown = self.unlabelled = 0
        self._sums = [0.0] * 5

    def reset(self) -> PerformanceCounter:
        """Forget every count (a new window starts)."""
        self._reset()
        return self

    @property
    def counted(self) -> int:
        """Rows that carried a label that could be read (``labelled`` + ``unknown``)."""
        return self.labelled + self.unknown

    @property
    def counts(self) -> dict:
        """The counts as a window carries them (:mod:`.protocol.performance`): a fresh, JSON-ready dict."""
        if self.kind == "classes":
            return {"kind": "classes", "labelled": self.labelled, "unknown": self.unknown,
                    "unlabelled": self.unlabelled, "matrix": [list(r) for r in self.matrix]}
        e, a, s, y, yy = self._sums
        return {"kind": "values", "labelled": self.labelled, "unlabelled": self.unlabelled, "sum_error": e,
                "sum_abs_error": a, "sum_squared_error": s, "sum_label": y, "sum_label_squared": yy}

    def update(self, labels: Sequence, predicted: Sequence) -> PerformanceCounter:
        """Count ``labels`` (as the records carried them) against ``predicted`` (the runtime's labels or values)."""
        if hasattr(predicted, "tolist"):  # a NumPy array: Python values at once, not one NumPy scalar per row
            predicted = predicted.tolist()
        if self.kind == "classes":
            self._update_classes(labels, predicted)
        else:
            self._update_values(labels, predicted)
        return self

    def _class_of(self, label) -> int | None:
        """The label's class index; -1 for a label that is no class; None for one that cannot be read."""
        if label is None or isinstance(label, bool) and self._numeric:
            return None
        try:
            found = self._index.get(label)
        except TypeError:  # not hashable: a list, an object
            return None
        if found is not None:
            return found
        if isinstance(label, str):
            label = label.strip()
            if not label:
                return None
            found = self._index.get(label)
            if found is not None:
                return found
        if self._numeric:
            x = _number(label)
            if x is None:
                return None
            found = self._index.get(int(x) if x.is_integer() else x)
        return -1 if found is None else found

    def _update_classes(self, labels, predicted) -> None:
        index, matrix = self._index, self.matrix
        for label, p in zip(labels, predicted, strict=True):
            true = self._class_of(label)
            if true is None:
                self.unlabelled += 1
            elif true < 0:
                self.unknown += 1
            else:
                matrix[true][index[p]] += 1
                self.labelled += 1

    def _update_values(self, labels, predicted) -> None:
        e, a, s, y, yy = self._sums
        isfinite, unread = math.isfinite, 0
        for label, value in zip(labels, predicted, strict=True):
            try:
                true = float(label)  # a number, or text (float() takes the spaces around it), or a NumPy scalar
            except (TypeError, ValueError):
                unread += 1
                continue
            if type(label) is bool or not isfinite(true) or not isfinite(value):
                unread += 1
                continue
            error = value - true
            e += error
            a += abs(error)
            s += error * error
            y += true
            yy += true * true
        self.unlabelled += unread
        self.labelled += len(predicted) - unread
        self._sums = [e, a, s, y, yy]
