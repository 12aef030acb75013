"""The window verdict, a public function over counts: what a device says about a window, anyone can recompute.

A device's drift window carries raw counts per reference bin. Counts add up
across windows and devices (:func:`add_counts`), and :func:`judge_window`
turns any set of counts into the statistics, the per-column statuses and the
verdict, by the same rule the device applies (``DriftMonitor`` calls this
very function), so a fleet controller that sums the counts of many windows
reaches the verdict one device would reach on all those rows.

The rule (protocol ``format_version`` 2): a column is ``significant`` when its
PSI is at least ``psi_significant``, ``moderate`` from ``psi_moderate``,
else ``ok``; the window is ``drift`` when at least ``drifted_share`` of the
monitored input columns are significant. Fewer than ``min_rows`` scored rows
get statistics but no status and no verdict. A calibrated rule will replace
this one under a new ``format_version``.

Example: one numeric column with two reference bins, 20 rows all in the upper bin.

>>> from edgeml_runtime.drift import DriftSettings
>>> reference = {"columns": {"temp": {"kind": "numeric", "edges": [20.0], "shares": [0.5, 0.5],
...                                   "missing_rate": 0.0}},
...              "output": {"kind": "classes", "classes": [0, 1], "shares": [0.5, 0.5]}}
>>> counts = {"rows": 20, "columns": {"temp": {"counts": [0, 20], "missing": 0}}, "output": {"counts": [10, 10]}}
>>> judged = judge_window(reference, counts, DriftSettings(min_rows=10))
>>> judged["columns"]["temp"]["status"], judged["output"]["status"], judged["verdict"]
('significant', 'ok', {'status': 'drift', 'drifted_columns': ['temp'], 'share': 1.0})
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from ..distributions import statistics_from_counts
from ..errors import ProtocolError

if TYPE_CHECKING:
    from ..drift import DriftSettings

#: Per-column counters that add up across windows (``kind`` is carried, not added).
ADDITIVE = ("missing", "below_range", "above_range")


def status(psi: float | None, settings: DriftSettings) -> str | None:
    """``significant``, ``moderate`` or ``ok`` for a PSI; None when there is no PSI (no rows)."""
    if psi is None:
        return None
    return "significant" if psi >= settings.psi_significant else "moderate" if psi >= settings.psi_moderate else "ok"


def judge_window(reference: Mapping, counts: Mapping, settings: DriftSettings) -> dict:
    """Statistics, statuses and verdict for one window's counts against a bundle's ``reference``.

    ``counts`` is shaped like a window of the drift payload (a received one
    will do): ``rows``, ``columns`` (name → ``counts`` and ``missing``) and
    ``output`` (``counts``). Its columns must be the reference's monitored
    input columns. Returns ``{"columns": {name: {"psi", "js", "status"}},
    "output": {"psi", "js", "status"}, "verdict": {...}}``.
    """
    columns = counts.get("columns") or {}
    _check_columns(reference, columns)
    rows = counts.get("rows", 0)
    judged = rows >= max(settings.min_rows, 1)
    out: dict = {"columns": {}}
    for name, c in columns.items():
        stats = _statistics(reference["columns"][name], c.get("counts", []), c.get("missing", 0), name)
        out["columns"][name] = {**stats, "status": status(stats["psi"], settings) if judged else None}
    stats = _statistics(reference["output"], counts["output"].get("counts", []), 0, "output")
    out["output"] = {**stats, "status": status(stats["psi"], settings) if judged else None}
    drifted = [name for name, c in out["columns"].items() if c["status"] == "significant"]
    if not judged:
        out["verdict"] = {"status": None, "drifted_columns": [], "share": None,
                          "note": f"{rows} scored rows, fewer than min_rows={settings.min_rows}: too few to judge"}
    else:
        share = round(len(drifted) / len(columns), 6) if columns else 0.0
        out["verdict"] = {"status": "drift" if columns and share >= settings.drifted_share else "ok",
                          "drifted_columns": drifted, "share": share}
    return out


def add_counts(windows: Iterable[Mapping]) -> dict:
    """The counts of several windows (of one bundle) added up bin by bin: a window holding all their rows.

    >>> a = {"rows": 2, "bad_rows": 1, "columns": {"t": {"kind": "numeric", "counts": [1, 1], "missing": 0}},
    ...      "output": {"kind": "classes", "counts": [2, 0]}}
    >>> b = {"rows": 1, "bad_rows": 0, "columns": {"t": {"kind": "numeric", "counts": [0, 1], "missing": 1}},
    ...      "output": {"kind": "classes", "counts": [0, 1]}}
    >>> add_counts([a, b])["columns"]["t"], add_counts([a, b])["rows"]
    ({'kind': 'numeric', 'counts': [1, 2], 'missing': 1}, 3)
    """
    total: dict | None = None
    for w in windows:
        if total is None:
            total = {"rows": 0, "bad_rows": 0, "columns": {n: _zero(c) for n, c in w["columns"].items()},
                     "output": _zero(w["output"])}
        if set(w["columns"]) != set(total["columns"]):
            raise ProtocolError(f"windows with columns {sorted(w['columns'])} and {sorted(total['columns'])} "
                                "cannot be added: add only windows of the same bundle")
        total["rows"] += w.get("rows", 0)
        total["bad_rows"] += w.get("bad_rows", 0)
        for name, c in w["columns"].items():
            _add(total["columns"][name], c, name)
        _add(total["output"], w["output"], "output")
    if total is None:
        raise ProtocolError("no windows to add")
    return total


def _zero(c: Mapping) -> dict:
    return {"kind": c.get("kind"), "counts": [0] * len(c["counts"]), **{k: 0 for k in ADDITIVE if k in c}}


def _add(total: dict, c: Mapping, name: str) -> None:
    if len(c["counts"]) != len(total["counts"]) or c.get("kind") != total["kind"]:
        raise ProtocolError(f"{name}: {c.get('kind')} counts over {len(c['counts'])} bins cannot be added to "
                            f"{total['kind']} counts over {len(total['counts'])}: add only windows of the same bundle")
    total["counts"] = [a + b for a, b in zip(total["counts"], c["counts"], strict=True)]
    for k in ADDITIVE:
        if k in total:
            total[k] += c.get(k, 0)


def _check_columns(reference: Mapping, columns: Mapping) -> None:
    entries = reference.get("columns") or {}
    monitored = [n for n, e in entries.items() if e.get("monitored", True)]
    unknown = [n for n in columns if n not in monitored]
    absent = [n for n in monitored if n not in columns]
    if unknown or absent or "output" not in reference:
        raise ProtocolError(f"the counts do not fit the reference: columns {unknown} are not monitored in it, "
                            f"{absent} are missing{'' if 'output' in reference else ', and it has no output'}; "
                            "judge a window only against the reference of the bundle that counted it")


def _statistics(entry: Mapping, counts, missing: int, name: str) -> dict:
    try:
        return statistics_from_counts(entry, counts, missing)
    except ValueError as exc:
        raise ProtocolError(f"{name}: {exc}; judge a window only against the reference of its bundle") from None
