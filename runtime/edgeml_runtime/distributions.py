"""Reference distributions on the device: count values into fixed bins, compare shares.

The pieces a :class:`~edgeml_runtime.drift.DriftMonitor` is made of, and what a
fleet controller reuses on counts summed over windows and devices: the drift
statistics (one registry, keyed by name), and one counter per kind of
reference entry, each with an ``update() -> self`` contract, its counts as
read-only properties and an explicit ``reset()``. numpy and the standard
library only.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

#: PSI floors every share at this before renormalising: an empty bin would make ln(a / e) infinite.
EPSILON = 1e-4

#: Drift statistics by name: ``fn(expected_shares, actual_shares) -> float``, both summing to 1.
STATISTICS: dict[str, Callable[[Sequence[float], Sequence[float]], float]] = {}


def statistic(name: str):
    """Register a drift statistic under ``name``; a name already taken is refused."""

    def register(fn):
        if name in STATISTICS:
            raise ValueError(f"drift statistic {name!r} is already registered ({STATISTICS[name].__name__}); "
                             "register the new one under another name")
        STATISTICS[name] = fn
        return fn

    return register


@statistic("psi")
def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index, Σ (a − e) · ln(a / e), with shares floored at :data:`EPSILON` and renormalised.

    >>> round(psi([0.5, 0.5], [0.5, 0.5]), 6), round(psi([0.9, 0.1], [0.5, 0.5]), 4)
    (0.0, 0.8789)
    """
    total = 0.0
    for e, a in zip(_floored(expected), _floored(actual), strict=False):
        total += (a - e) * math.log(a / e)
    return total


@statistic("js")
def js_distance(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Jensen–Shannon distance with base-2 logarithms (0 = same, 1 = disjoint); empty bins need no smoothing.

    >>> js_distance([0.5, 0.5], [0.5, 0.5]), js_distance([1.0, 0.0], [0.0, 1.0])
    (0.0, 1.0)
    """
    total = 0.0
    for e, a in zip(expected, actual, strict=False):
        m = (e + a) / 2
        if e > 0:
            total += e * math.log2(e / m)
        if a > 0:
            total += a * math.log2(a / m)
    return math.sqrt(max(total / 2, 0.0))


def _floored(shares: Sequence[float]) -> list[float]:
    floored = [s if s > EPSILON else EPSILON for s in shares]
    scale = 1.0 / sum(floored)
    return [s * scale for s in floored]


def expected_shares(entry: Mapping) -> list[float]:
    """A reference entry's distribution over its bins, then (inputs only) one more bin for missing values."""
    shares = [float(s) for s in entry["shares"]]
    if "missing_rate" not in entry:
        return shares
    present = 1.0 - entry["missing_rate"]
    return [s * present for s in shares] + [float(entry["missing_rate"])]


def statistics_from_counts(entry: Mapping, counts: Sequence[int], missing: int = 0) -> dict:
    """Every statistic in :data:`STATISTICS` for raw ``counts`` (and ``missing``) against a reference entry.

    Counts from many windows or devices add up, so a fleet gets its exact
    statistics by summing them bin by bin and calling this once. No rows
    gives ``None`` for each statistic.

    >>> entry = {"kind": "boolean", "shares": [0.5, 0.5], "missing_rate": 0.0}
    >>> statistics_from_counts(entry, [50, 50]), statistics_from_counts(entry, [0, 0])
    ({'psi': 0.0, 'js': 0.0}, {'psi': None, 'js': None})
    """
    expected = expected_shares(entry)
    with_missing = "missing_rate" in entry
    if len(counts) + with_missing != len(expected) or (missing and not with_missing):
        raise ValueError(f"{len(counts)} counts (missing {missing}) do not fit a reference of "
                         f"{len(entry['shares'])} bins{'' if with_missing else ' without a missing bin'}")
    return compare(expected, [*counts, missing] if with_missing else list(counts))


def compare(expected: list[float], counts: list[int]) -> dict:
    total = sum(counts)
    if not total:
        return dict.fromkeys(STATISTICS)
    scale = 1.0 / total
    actual = [c * scale for c in counts]
    return {name: round(fn(expected, actual), 6) for name, fn in STATISTICS.items()}


# --- counters ---------------------------------------------------------------------------------

class BinCounter:
    """Counts numbers in right-closed bins ``(-inf, e1], (e1, e2], …, (ek, +inf)``; NaN counts as missing.

    ``low`` and ``high`` (the training range) also count the values outside
    it. The state is how many values are ≤ each edge (the range ends and +inf
    are edges too) and how many were seen; an update sorts its values and
    looks every edge up in them with ``np.searchsorted(side="right")`` — the
    same right-closed bins as ``np.searchsorted(edges, v, side="left")`` per
    value, at a fraction of the cost. NaN sorts after +inf.

    >>> c = BinCounter([1.0, 2.0], low=0.0, high=3.0).update(np.array([0.5, 1.0, 1.5, 7.0, np.nan]))
    >>> c.counts, c.missing, c.below_range, c.above_range
    ([2, 1, 1], 1, 0, 1)
    """

    def __init__(self, edges: Iterable[float], low: float | None = None, high: float | None = None):
        self.edges = [float(e) for e in edges]
        self._ranged = low is not None
        # x < low  <=>  x <= the float just below low: right-closed like every other edge.
        outer = [math.nextafter(low, -math.inf), *self.edges, high] if self._ranged else self.edges
        self._outer = np.array([*outer, math.inf], dtype=np.float64)
        self.reset()

    def reset(self) -> BinCounter:
        self._at_most = np.zeros(len(self._outer), dtype=np.int64)
        self._seen = 0
        return self

    def update(self, values) -> BinCounter:
        x = np.sort(np.asarray(values).ravel())
        if x.size:
            self._at_most += np.searchsorted(x, self._outer, side="right")
            self._seen += x.size
        return self

    def _raw(self) -> list[int]:
        """Values per gap between consecutive edges, then the missing ones."""
        at_most = self._at_most.tolist()
        return [b - a for a, b in zip([0, *at_most], at_most, strict=False)] + [self._seen - at_most[-1]]

    @property
    def counts(self) -> list[int]:
        """Values per bin (missing ones excluded)."""
        raw = self._raw()
        if not self._ranged:
            return raw[:-1]
        counts = raw[1:-2]
        counts[0] += raw[0]
        counts[-1] += raw[-2]
        return counts

    missing = property(lambda self: self._seen - int(self._at_most[-1]))
    below_range = property(lambda self: int(self._at_most[0]) if self._ranged else 0)
    above_range = property(lambda self: self._raw()[-2] if self._ranged else 0)


class IndexCounter:
    """Counts class indices 0…k−1 (what a classifier's label output holds).

    >>> IndexCounter(3).update(np.array([2, 0, 2])).counts
    [1, 0, 2]
    """

    def __init__(self, k: int):
        self.k = k
        self.reset()

    def reset(self) -> IndexCounter:
        self._counts = np.zeros(self.k, dtype=np.int64)
        return self

    def update(self, values) -> IndexCounter:
        x = np.asarray(values, dtype=np.int64).ravel()
        if x.size:
            self._counts += np.bincount(x, minlength=self.k)
        return self

    counts = property(lambda self: self._counts.tolist(), doc="Rows per class index.")


class CategoryCounter:
    """Counts text per known category, then one "other" bin for the rest; ``""`` counts as missing.

    >>> c = CategoryCounter(["H", "L"]).update(["L", "L", "X", ""])
    >>> c.counts, c.missing
    ([0, 2, 1], 1)
    """

    def __init__(self, categories: Iterable[str]):
        self.categories = tuple(categories)
        self._index = {c: i for i, c in enumerate(self.categories)}
        self.reset()

    def reset(self) -> CategoryCounter:
        self._counts = [0] * (len(self.categories) + 1)
        self._missing = 0
        return self

    def update(self, values) -> CategoryCounter:
        if isinstance(values, np.ndarray):
            values = values.ravel().tolist()
        other = len(self.categories)
        for value, n in Counter(values).items():
            if value == "":
                self._missing += n
            else:
                self._counts[self._index.get(value, other)] += n
        return self

    counts = property(lambda self: list(self._counts), doc="Values per category, then other (missing excluded).")
    missing = property(lambda self: self._missing)


#: How each kind of reference entry is counted.
COUNTERS: dict[str, Callable[[Mapping], BinCounter | CategoryCounter | IndexCounter]] = {
    "numeric": lambda e: BinCounter(e["edges"], *(e.get("range") or (None, None))),
    "boolean": lambda e: BinCounter([0.0]),
    "categorical": lambda e: CategoryCounter(e["categories"]),
    "classes": lambda e: IndexCounter(len(e["classes"])),
}
