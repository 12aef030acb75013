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
a fraction of the time: PSI, which decides most columns, is computed for
every row and column at once with numpy; a column whose PSI is below
``psi_significant`` (with a margin far above rounding) cannot be significant,
so a row with too few remaining columns is ``ok`` at once, and only the
remaining columns of the remaining rows are judged by the protocol's own
functions (the χ² test and :meth:`VerdictRule.status`), one by one.

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
from edgeml_runtime.protocol.verdict import _reference_rows, _tested

#: How far below ``psi_significant`` a PSI computed here may be and still be judged one by one (the protocol
#: rounds PSI to 6 decimals; numpy's sums differ from Python's by a few ulps: 1e-5 is far above both).
MARGIN = 1e-5


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
    candidates = np.nan_to_num(psi_matrix(layout, rows), nan=-1.0) >= rule.psi_significant - MARGIN
    level = rule.level(n_columns + 1)
    inputs, _ = _reference_rows(layout.reference)
    out: list[str | None] = []
    for i in range(rows.shape[0]):
        if scored[i] < max(rule.min_rows, 1):
            out.append(None)
            continue
        cols = np.flatnonzero(candidates[i])
        if round(len(cols) / n_columns, 6) < rule.drifted_share:
            out.append("ok")
            continue
        significant = 0
        for j in cols:
            name = layout.names[j]
            cells = [int(x) for x in rows[i, layout.slices[name]]]
            counts, missing = (cells[:-1], cells[-1]) if layout.missing[name] else (cells, 0)
            stats = _tested(layout.reference["columns"][name], counts, missing, inputs, name)
            significant += rule.status(stats["psi"], stats["p_value"], level) == "significant"
        out.append("drift" if round(significant / n_columns, 6) >= rule.drifted_share else "ok")
    return out
