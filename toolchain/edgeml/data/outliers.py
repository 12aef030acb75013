"""Regression labels far outside the rest: a handful of them is left out of the build, each one named.

One yearly salary typed as 99,999,999,999 among values from 10,000 to
850,000 decides a squared loss alone: a tree gives it a leaf of its own, and
every new row that falls into that leaf is predicted in the billions; a
holdout that happens to hold it makes every model look worse than the mean.
Such a value is an entry error far more often than a fact, so a regression
build leaves it out (with a notice, and the row and value in the manifest's
``provenance.data.label_outliers``), and ``--keep-label-outliers`` keeps it.

The rule (:func:`find_label_outliers`): Tukey's fences pushed far out, to
:data:`FENCE` interquartile ranges beyond the quartiles. A label that is
never negative is judged on its log scale (``log1p``) as well, and a row is an
outlier only when it lies beyond the fences on every scale judged: a long but
smooth tail (prices, durations) is nothing unusual on a log scale, and keeps
its rows. Outliers are left out only when they are a handful, at most
:data:`MAX_SHARE` of the labelled rows (a tail that heavy is the data, for
the search's log-scale target to learn, not a few typos), and only from
tables of :data:`MIN_ROWS` labelled rows or more (fewer cannot place the
quartiles). A scale whose interquartile range is 0 (a label mostly one value)
is measured by its middle 90 % instead, scaled as for a normal distribution,
and a scale on which that is 0 too flags nothing.

Example:

>>> import pandas as pd
>>> salaries = pd.Series([*np.linspace(40_000, 80_000, 398), 850_000, 99_999_999_999])
>>> find_label_outliers(salaries).tolist()
[399]
>>> print(outlier_note("salary", salaries, find_label_outliers(salaries)))  # doctest: +NORMALIZE_WHITESPACE
left out 1 row whose label 'salary' lies far outside the rest (more than 10 interquartile ranges beyond the
quartiles, on the raw and the log scale): data row 400 (99,999,999,999); the labels' middle half is 50,025 to
70,076. Fix the value, or keep it with --keep-label-outliers
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: How many interquartile ranges beyond the quartiles a label must lie to be an outlier (Tukey's "far out" is 3).
FENCE = 10.0
#: The middle 90 % of a normal distribution over its middle half (3.29 / 1.35 standard deviations).
NORMAL_90_TO_50 = 2.44
#: The largest share of the labelled rows that may be left out as outliers; beyond it none is.
MAX_SHARE = 0.005
#: The fewest labelled rows on which outliers are looked for.
MIN_ROWS = 20
#: Outliers named in a notice (the manifest lists them all).
SHOWN = 5


def find_label_outliers(labels: pd.Series) -> pd.Index:
    """The index of the labels beyond :data:`FENCE` interquartile ranges on every scale judged (see the module
    docstring); empty when there are more than :data:`MAX_SHARE` of them or fewer than :data:`MIN_ROWS` labels.

    >>> import pandas as pd
    >>> find_label_outliers(pd.Series(np.exp(np.linspace(0.0, 7.0, 500)))).tolist()  # a smooth long tail
    []
    >>> find_label_outliers(pd.Series([1.0] * 400 + [9.0] * 100 + [1e9])).tolist()  # IQR 0 on the raw scale
    [500]
    """
    values = labels.to_numpy(np.float64)
    if len(values) < MIN_ROWS:
        return labels.index[:0]
    beyond = _beyond(values)
    if values.min() >= 0:
        beyond &= _beyond(np.log1p(values))
    if beyond.sum() > MAX_SHARE * len(values):
        return labels.index[:0]
    return labels.index[beyond]


def _beyond(values: np.ndarray) -> np.ndarray:
    """True where ``values`` lie more than :data:`FENCE` interquartile ranges beyond the quartiles (the spread of
    the middle 90 % over 2.44 where the interquartile range is 0; nowhere when that is 0 too)."""
    p5, low, high, p95 = np.quantile(values, [0.05, 0.25, 0.75, 0.95])
    spread = (high - low) or (p95 - p5) / NORMAL_90_TO_50
    if spread <= 0:
        return np.zeros(len(values), dtype=bool)
    return (values < low - FENCE * spread) | (values > high + FENCE * spread)


def outlier_note(label: str, labels: pd.Series, outliers: pd.Index) -> str:
    """The notice for leaving ``outliers`` (index values of ``labels``) out: rows (1 = the first data row) and
    values, the labels' middle half, and the fix."""
    n = len(outliers)
    shown = ", ".join(f"data row {row + 1} ({_number(labels[row])})" for row in outliers[:SHOWN])
    more = f" and {n - SHOWN} more (listed in the manifest)" if n > SHOWN else ""
    scales = "the raw and the log scale" if labels.min() >= 0 else "the raw scale"
    low, high = np.quantile(labels.drop(outliers).to_numpy(np.float64), [0.25, 0.75])
    return (f"left out {n} row{'s' if n != 1 else ''} whose label {label!r} lies far outside the rest (more than "
            f"{FENCE:g} interquartile ranges beyond the quartiles, on {scales}): {shown}{more}; the labels' middle "
            f"half is {_number(low)} to {_number(high)}. Fix the value, or keep it with --keep-label-outliers")


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 or float(value).is_integer() else f"{value:,.6g}"


__all__ = ["FENCE", "MAX_SHARE", "MIN_ROWS", "find_label_outliers", "outlier_note"]
