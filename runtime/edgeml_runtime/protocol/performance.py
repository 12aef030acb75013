"""A drift window's ``performance``: the additive metric counts of its labelled rows, checked and added up.

When scored records carry the bundle's label column, the device counts each
labelled row against what it predicted for it
(:class:`edgeml_runtime.performance.PerformanceCounter`) and the window
carries the counts (protocol ``format_version`` 5). They are sums, so they
add up across windows and devices (:func:`add_performance`) and every metric
follows from the total:

* ``kind: "classes"`` (classification): ``matrix[true][predicted]`` over the
  manifest's ``classes``, in their order; ``labelled`` (the matrix's sum);
  ``unknown``, labels that are not among the classes;
* ``kind: "values"`` (regression): ``labelled`` and the sums over those rows of
  the error (predicted − true), its absolute value, its square, the label and
  the label squared (``sum_error``, ``sum_abs_error``, ``sum_squared_error``,
  ``sum_label``, ``sum_label_squared``): MAE, RMSE, bias and R² follow;
* both: ``unlabelled``, rows whose label was there but could not be read
  (empty, or text for a number): their predictions stand, they are not counted.

>>> a = {"kind": "classes", "labelled": 3, "unknown": 0, "unlabelled": 1, "matrix": [[2, 0], [1, 0]]}
>>> b = {"kind": "classes", "labelled": 2, "unknown": 1, "unlabelled": 0, "matrix": [[0, 1], [0, 1]]}
>>> add_performance([a, b])
{'kind': 'classes', 'labelled': 5, 'unknown': 1, 'unlabelled': 1, 'matrix': [[2, 1], [1, 1]]}
>>> check_performance({**a, "labelled": 4}, "edgeml/plant-a/pi-07/drift")
Traceback (most recent call last):
...
edgeml_runtime.errors.ProtocolError: edgeml/plant-a/pi-07/drift: performance.labelled is 4, but the matrix counts 3 \
rows; labelled is the sum of performance.matrix
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from ..errors import ProtocolError

#: The kinds of performance counts: classification's confusion matrix, regression's sums.
PERFORMANCE_KINDS = ("classes", "values")
#: The whole-number counts of each kind (every one required).
PERFORMANCE_COUNTS = {"classes": ("labelled", "unknown", "unlabelled"), "values": ("labelled", "unlabelled")}
#: The sums of regression counts (finite numbers; those of absolute values and squares at least 0).
PERFORMANCE_SUMS = ("sum_error", "sum_abs_error", "sum_squared_error", "sum_label", "sum_label_squared")
_POSITIVE = frozenset(("sum_abs_error", "sum_squared_error", "sum_label_squared"))
_INT64 = 2**63 - 1


def _whole(value, key: str, where: str) -> int:
    if type(value) is not int or not 0 <= value <= _INT64:
        raise ProtocolError(f"{where}: {key} is {value!r:.40}; it must be a whole number from 0 to {_INT64}")
    return value


def check_performance(performance, where: str, classes: int | None = None) -> dict:
    """``performance`` checked key by key (a copy of it, with exactly its kind's keys); ProtocolError naming the key.

    ``classes``: the number of classes the matrix must span (its bundle's), if known.
    """
    if not isinstance(performance, Mapping):
        raise ProtocolError(f"{where}: performance is {type(performance).__name__}, not a JSON object")
    kind = performance.get("kind")
    if kind not in PERFORMANCE_KINDS:
        raise ProtocolError(f"{where}: performance.kind is {kind!r:.40}; it must be one of "
                            f"{', '.join(PERFORMANCE_KINDS)}")
    keys = ("kind", *PERFORMANCE_COUNTS[kind], *(("matrix",) if kind == "classes" else PERFORMANCE_SUMS))
    extra = sorted(set(performance) - set(keys), key=str)
    if extra:
        raise ProtocolError(f"{where}: performance.{extra[0]} is not a key of {kind} counts; they are "
                            f"{', '.join(keys)}")
    out = {"kind": kind}
    for key in PERFORMANCE_COUNTS[kind]:
        out[key] = _whole(performance.get(key), f"performance.{key}", where)
    if kind == "classes":
        out["matrix"] = _matrix(performance.get("matrix"), where, classes)
        total = sum(map(sum, out["matrix"]))
        if total != out["labelled"]:
            raise ProtocolError(f"{where}: performance.labelled is {out['labelled']}, but the matrix counts {total} "
                                "rows; labelled is the sum of performance.matrix")
        return out
    for key in PERFORMANCE_SUMS:
        value = performance.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or (
                key in _POSITIVE and value < 0):
            low = "at least 0" if key in _POSITIVE else "finite"
            raise ProtocolError(f"{where}: performance.{key} is {value!r:.40}; it must be a number, {low}")
        out[key] = float(value)
    if not out["labelled"] and any(out[k] for k in PERFORMANCE_SUMS):
        raise ProtocolError(f"{where}: performance.labelled is 0, but its sums are not: no labelled row, no sums")
    return out


def _matrix(matrix, where: str, classes: int | None) -> list[list[int]]:
    if type(matrix) is not list or not matrix or (classes is not None and len(matrix) != classes):
        size = f"{classes} × {classes}" if classes is not None else "k × k, k the bundle's classes,"
        raise ProtocolError(f"{where}: performance.matrix is {matrix!r:.40}, not a {size} list of lists of counts")
    k = len(matrix)
    for i, row in enumerate(matrix):
        if type(row) is not list or len(row) != k:
            raise ProtocolError(f"{where}: performance.matrix[{i}] is {row!r:.40}, not a list of {k} counts (the "
                                "matrix is square: [true][predicted] over the classes)")
        for j, n in enumerate(row):
            _whole(n, f"performance.matrix[{i}][{j}]", where)
    return [list(row) for row in matrix]


def add_performance(counts: Iterable[Mapping]) -> dict:
    """The performance counts of several windows (of one bundle) added up: the counts of all their rows.

    Regression's sums are added in the order given. ProtocolError for counts of another kind or matrix size
    (windows of different bundles), or for none.
    """
    total: dict | None = None
    for c in counts:
        if total is None:
            total = {k: ([[0] * len(r) for r in v] if k == "matrix" else (v if k == "kind" else 0 * v))
                     for k, v in c.items()}
        if c.get("kind") != total["kind"] or len(c.get("matrix", ())) != len(total.get("matrix", ())):
            raise ProtocolError(f"{c.get('kind')} performance counts cannot be added to {total['kind']} counts "
                                "of another shape: add only windows of the same bundle")
        for key, value in c.items():
            if key == "matrix":
                total[key] = [[a + b for a, b in zip(ra, rb, strict=True)]
                              for ra, rb in zip(total[key], value, strict=True)]
            elif key != "kind":
                total[key] += value
    if total is None:
        raise ProtocolError("no performance counts to add")
    return total
