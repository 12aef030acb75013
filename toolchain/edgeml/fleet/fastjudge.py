"""Counts as numpy arrays, and the window verdict of many devices at once, equal to ``judge_window``'s.

A window's counts (``columns`` name → ``counts`` and ``missing``, then the
output's ``counts``) become one flat row of integers, the cells in the order
of a :class:`Layout`; the windows of a fleet become a matrix, and a sum over
its rows is :func:`~edgeml_runtime.protocol.add_counts` of those windows (whole
numbers add exactly). :meth:`Layout.counts` turns a row back into the counts
``judge_window`` takes.

:func:`device_verdicts` gives the verdict status (``drift``, ``ok`` or None
for too few rows) of many count rows, the same as
``judge_window(reference, counts, rule)["verdict"]["status"]`` for each, in
a fraction of the time: PSI and the χ² test's p-value (the same cells,
pooled the same way, :func:`p_values`) are computed for every row and column
at once with numpy and scipy; only a column whose PSI or p-value is within
a margin of its threshold (:data:`MARGIN`, :data:`P_MARGIN`, far above the
protocol's rounding and the two χ² functions' disagreement) is judged by the
protocol's own functions (the χ² test and :meth:`VerdictRule.status`), one
by one, so the verdicts are the protocol's exactly.

>>> reference = {"rows": {"train": 1000, "valid": 200},
...              "columns": {"t": {"kind": "numeric", "edges": [20.0], "shares": [0.5, 0.5], "missing_rate": 0.0}},
...              "output": {"kind": "classes", "classes": [0, 1], "shares": [0.5, 0.5], "split": "valid"}}
>>> layout = Layout(reference)
>>> rows = layout.matrix([{"rows": 20, "columns": {"t": {"counts": [0, 20], "missing": 0}},
...                        "output": {"counts": [10, 10]}}] * 2)
>>> rows.tolist(), layout.counts(rows.sum(axis=0))["columns"]["t"]
([[0, 20, 0, 10, 10], [0, 20, 0, 10, 10]], {'kind': 'numeric', 'counts': [0, 40], 'missing': 0})
>>> from edgeml_runtime.protocol import VerdictRule
>>> device_verdicts(layout, rows, VerdictRule(min_rows=10)), device_verdicts(layout, rows, VerdictRule(min_rows=30))
(['drift', 'drift'], [None, None])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from edgeml_runtime.distributions import EPSILON, expected_shares
from edgeml_runtime.errors import ProtocolError
from edgeml_runtime.protocol import VerdictRule
from edgeml_runtime.protocol.stats import MIN_EXPECTED
from edgeml_runtime.protocol.verdict import _reference_rows, _tested

#: How far below ``psi_significant`` a PSI computed here may be and still be judged one by one (the protocol
#: rounds PSI to 6 decimals; numpy's sums differ from Python's by a few ulps: 1e-5 is far above both).
MARGIN = 1e-5
#: How close to the level (relatively) a p-value computed here may be and still be judged one by one: the protocol
#: rounds p-values to 6 significant digits (5e-7 relatively) and its χ² survival function agrees with scipy's to 1e-10.
P_MARGIN = 1e-4


class Layout:
    """Where each column's cells sit in a flat row of counts, for one bundle's reference."""

    def __init__(self, reference: Mapping):
        self.reference = reference
        entries = reference.get("columns") or {}
        self.names = [n for n, e in entries.items() if e.get("monitored", True)]
        self.slices: dict[str, slice] = {}
        self.missing: dict[str, bool] = {}
        start = 0
        for name in self.names:
            entry = entries[name]
            width = len(entry["shares"]) + ("missing_rate" in entry)
            self.slices[name], self.missing[name] = slice(start, start + width), "missing_rate" in entry
            start += width
        self.kinds = {name: entries[name].get("kind") for name in self.names}
        self.output = slice(start, start + len(reference["output"]["shares"]))
        self.width = self.output.stop
        self.expected = {name: np.asarray(expected_shares(entries[name]), dtype=float) for name in self.names}

    def row(self, counts: Mapping) -> list[int]:
        """One window's counts as a flat list of cells."""
        columns = counts.get("columns") or {}
        if set(columns) != set(self.names):
            raise ProtocolError(f"the counts' columns {sorted(columns)[:5]} are not the reference's monitored "
                                f"columns {self.names[:5]}: judge a window only against its own bundle's reference")
        cells: list[int] = []
        for name in self.names:
            c = columns[name]
            cells.extend(c["counts"])
            if self.missing[name]:
                cells.append(c.get("missing", 0))
            if len(cells) != self.slices[name].stop:
                raise ProtocolError(f"{name}: {len(c['counts'])} counts do not fit the reference's "
                                    f"{len(self.reference['columns'][name]['shares'])} bins")
        cells.extend(counts["output"]["counts"])
        if len(cells) != self.width:
            raise ProtocolError("output: the counts do not fit the reference's classes or bins")
        return cells

    def matrix(self, windows: Sequence[Mapping]) -> np.ndarray:
        """The counts of many windows, one row each (int64)."""
        return np.array([self.row(w) for w in windows], dtype=np.int64).reshape(len(windows), self.width)

    def counts(self, row: np.ndarray, rows: int | None = None) -> dict:
        """A flat row back into the counts ``judge_window`` takes (``rows`` defaults to the output's total)."""
        cells = [int(x) for x in row]
        columns = {}
        for name in self.names:
            part = cells[self.slices[name]]
            columns[name] = {"kind": self.kinds[name], "counts": part[:-1] if self.missing[name] else part,
                             "missing": part[-1] if self.missing[name] else 0}
        output = cells[self.output]
        return {"rows": sum(output) if rows is None else rows, "bad_rows": 0, "columns": columns,
                "output": {"kind": self.reference["output"].get("kind"), "counts": output}}


def psi_matrix(layout: Layout, rows: np.ndarray) -> np.ndarray:
    """PSI of every row and monitored column (NaN where a column counted nothing), as the protocol computes it."""
    out = np.full((rows.shape[0], len(layout.names)), np.nan)
    for j, name in enumerate(layout.names):
        counts = rows[:, layout.slices[name]].astype(float)
        total = counts.sum(axis=1, keepdims=True)
        expected = _floored(layout.expected[name][None, :])
        with np.errstate(invalid="ignore", divide="ignore"):
            actual = _floored(counts / np.where(total > 0, total, 1.0))
            psi = ((actual - expected) * np.log(actual / expected)).sum(axis=1)
        out[:, j] = np.where(total[:, 0] > 0, psi, np.nan)
    return out


def _floored(shares: np.ndarray) -> np.ndarray:
    floored = np.where(shares > EPSILON, shares, EPSILON)
    return floored * (1.0 / floored.sum(axis=1, keepdims=True))


def device_verdicts(layout: Layout, rows: np.ndarray, rule: VerdictRule,
                    scored: np.ndarray | None = None) -> list[str | None]:
    """The verdict status ``judge_window`` gives each row of counts (``scored``: each row's scored rows, by default
    its output's total)."""
    scored = rows[:, layout.output].sum(axis=1) if scored is None else np.asarray(scored)
    n_columns = len(layout.names)
    if not n_columns:
        return [None if s < max(rule.min_rows, 1) else "ok" for s in scored]
    psi = np.nan_to_num(psi_matrix(layout, rows), nan=-1.0)
    level = rule.level(n_columns + 1)
    inputs, _ = _reference_rows(layout.reference)
    # Per row and column: 1 significant, 0 not, -1 too close to a threshold to tell here (judged one by one).
    sure = np.where(psi >= rule.psi_significant + MARGIN, 1, np.where(psi < rule.psi_significant - MARGIN, 0, -1))
    for j, name in enumerate(layout.names):
        todo = np.flatnonzero(sure[:, j] != 0)
        if todo.size:
            p = p_values(rows[todo][:, layout.slices[name]], layout.expected[name], inputs)
            test = np.where(p < level * (1 - P_MARGIN), 1, np.where(p > level * (1 + P_MARGIN), 0, -1))
            sure[todo, j] = np.where(test == 0, 0, np.where((test == 1) & (sure[todo, j] == 1), 1, -1))
    out: list[str | None] = []
    for i in range(rows.shape[0]):
        if scored[i] < max(rule.min_rows, 1):
            out.append(None)
            continue
        significant = int((sure[i] == 1).sum())
        for j in np.flatnonzero(sure[i] == -1):
            significant += _status(layout, rows[i], layout.names[j], inputs, rule, level) == "significant"
        out.append("drift" if round(significant / n_columns, 6) >= rule.drifted_share else "ok")
    return out


def _status(layout: Layout, row: np.ndarray, name: str, inputs: int, rule: VerdictRule, level: float):
    """One column's status by the protocol's own functions (for the columns too close to a threshold)."""
    cells = [int(x) for x in row[layout.slices[name]]]
    counts, missing = (cells[:-1], cells[-1]) if layout.missing[name] else (cells, 0)
    stats = _tested(layout.reference["columns"][name], counts, missing, inputs, name)
    return rule.status(stats["psi"], stats["p_value"], level)


def p_values(counts: np.ndarray, shares: np.ndarray, m: int, min_expected: float = MIN_EXPECTED) -> np.ndarray:
    """:func:`edgeml_runtime.protocol.stats.homogeneity_test`'s p-value for many rows of counts at once (the same
    cells, pooled by Cochran's rule the same way; the χ² survival function from scipy)."""
    from scipy.special import chdtrc

    c = counts.astype(float)
    n = c.sum(axis=1)
    r = np.broadcast_to(shares * m, c.shape)
    least = (min_expected * (n + m) / np.maximum(np.minimum(n, m), 1))[:, None]
    total = c + r
    dense, sparse = total >= least, (total > 0) & (total < least)
    pool_c, pool_r = (c * sparse).sum(axis=1), (r * sparse).sum(axis=1)
    has_sparse, n_dense = sparse.any(axis=1), dense.sum(axis=1)
    separate = has_sparse & ((pool_c + pool_r >= least[:, 0]) | (n_dense == 0))
    merge = has_sparse & ~separate
    cc, rr = np.where(dense, c, 0.0), np.where(dense, r, 0.0)
    smallest = np.argmin(np.where(dense, total, np.inf), axis=1)
    at = np.flatnonzero(merge)
    cc[at, smallest[at]] += pool_c[at]
    rr[at, smallest[at]] += pool_r[at]
    with np.errstate(invalid="ignore", divide="ignore"):
        cells = np.where(dense, (cc * m - rr * n[:, None]) ** 2 / (cc + rr), 0.0).sum(axis=1)
        cells += np.where(separate, (pool_c * m - pool_r * n) ** 2 / (pool_c + pool_r), 0.0)
        statistic = cells / (n * m)
    df = n_dense + separate - 1
    p = np.ones(len(n))
    tested = (df >= 1) & (n > 0)
    p[tested] = chdtrc(df[tested], statistic[tested])
    return p
