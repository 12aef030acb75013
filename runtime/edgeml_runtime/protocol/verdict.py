"""The window verdict, a public function over counts: what a device says about a window, anyone can recompute.

A device's drift window carries raw counts per reference bin. Counts add up
across windows and devices (:func:`add_counts`), and :func:`judge_window`
turns any set of counts into the statistics, the per-column statuses and the
verdict, by the same rule the device applies (``DriftMonitor`` calls this
very function), so a fleet controller that sums the counts of many windows
reaches the verdict one device would reach on all those rows.

The rule (protocol ``format_version`` 3) is a :class:`VerdictRule`: a column
is ``significant`` when its PSI is at least ``psi_significant``, ``moderate``
from ``psi_moderate``, else ``ok``; the window is ``drift`` when at least
``drifted_share`` of the monitored input columns are significant. Fewer than
``min_rows`` scored rows get statistics but no status and no verdict. A device
states its rule in its birth message (``window.rule``, :meth:`VerdictRule.to_dict`),
so a controller judges with :meth:`VerdictRule.from_dict` exactly as the device
does. A calibrated rule will replace this one under a new ``format_version``.

Example: one numeric column with two reference bins, 20 rows all in the upper bin.

>>> reference = {"columns": {"temp": {"kind": "numeric", "edges": [20.0], "shares": [0.5, 0.5],
...                                   "missing_rate": 0.0}},
...              "output": {"kind": "classes", "classes": [0, 1], "shares": [0.5, 0.5]}}
>>> counts = {"rows": 20, "columns": {"temp": {"counts": [0, 20], "missing": 0}}, "output": {"counts": [10, 10]}}
>>> judged = judge_window(reference, counts, VerdictRule(min_rows=10))
>>> judged["columns"]["temp"]["status"], judged["output"]["status"], judged["verdict"]
('significant', 'ok', {'status': 'drift', 'drifted_columns': ['temp'], 'share': 1.0})
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..distributions import statistics_from_counts
from ..errors import ProtocolError, SettingsError, check_count, few

#: Per-column counters that add up across windows (``kind`` is carried, not added).
ADDITIVE = ("missing", "below_range", "above_range")
_USUAL = "the usual thresholds are 0.1 (moderate) and 0.25 (significant)"


@dataclass(frozen=True)
class VerdictRule:
    """How a window's statistics are judged: the thresholds of the column statuses and of the verdict.

    Each value is checked here, once; a bad one raises
    :class:`~edgeml_runtime.errors.SettingsError` naming it (the settings keys
    have the same names).

    >>> rule = VerdictRule(psi_moderate=0.05)
    >>> VerdictRule.from_dict(rule.to_dict()) == rule, rule.to_dict()["min_rows"]
    (True, 100)
    >>> VerdictRule(psi_moderate=0.3)
    Traceback (most recent call last):
    ...
    edgeml_runtime.errors.SettingsError: psi_moderate = 0.3: must satisfy 0 < psi_moderate <= psi_significant, \
with psi_significant = 0.25; the usual thresholds are 0.1 (moderate) and 0.25 (significant)
    """

    psi_moderate: float = 0.1
    psi_significant: float = 0.25
    drifted_share: float = 0.3
    min_rows: int = 100

    def __post_init__(self):
        for key in ("psi_moderate", "psi_significant", "drifted_share"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise SettingsError(key=key, value=value, allowed="must be a finite number",
                                    fix=_USUAL if key.startswith("psi") else "e.g. 0.3")
        if not 0 < self.psi_moderate <= self.psi_significant:
            raise SettingsError(key="psi_moderate", value=self.psi_moderate,
                                allowed="must satisfy 0 < psi_moderate <= psi_significant",
                                related={"psi_significant": self.psi_significant}, fix=_USUAL)
        if not 0 < self.drifted_share <= 1:
            raise SettingsError(key="drifted_share", value=self.drifted_share,
                                allowed="must be a share of the columns, above 0 and at most 1", fix="e.g. 0.3")
        check_count("min_rows", self.min_rows, 0, "rows")

    def to_dict(self) -> dict:
        """The rule as the birth message states it (``window.rule``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> VerdictRule:
        """The rule a message states (``birth["window"]["rule"]``); :class:`ProtocolError` if it is not one."""
        keys = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(data, Mapping) or set(data) != set(keys):
            found = sorted(data) if isinstance(data, Mapping) else type(data).__name__
            raise ProtocolError(f"a verdict rule has exactly the keys {', '.join(keys)}; got {found}: read it from "
                                "a birth message of the same format_version")
        try:
            return cls(**data)
        except SettingsError as exc:
            raise ProtocolError(f"the verdict rule {dict(data)} is not valid: {exc}") from None

    def status(self, psi: float | None) -> str | None:
        """``significant``, ``moderate`` or ``ok`` for a PSI; None when there is no PSI (no rows).

        >>> VerdictRule().status(0.3), VerdictRule().status(0.1), VerdictRule().status(None)
        ('significant', 'moderate', None)
        """
        if psi is None:
            return None
        return "significant" if psi >= self.psi_significant else "moderate" if psi >= self.psi_moderate else "ok"


def judge_window(reference: Mapping, counts: Mapping, rule: VerdictRule) -> dict:
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
    if not isinstance(rule, VerdictRule):
        raise ProtocolError(f"judge_window takes a VerdictRule, not {type(rule).__name__}; build one with "
                            "VerdictRule.from_dict(birth['window']['rule']) or VerdictRule(...)")
    judged = rows >= max(rule.min_rows, 1)
    out: dict = {"columns": {}}
    for name, c in columns.items():
        stats = _statistics(reference["columns"][name], c.get("counts", []), c.get("missing", 0), name)
        out["columns"][name] = {**stats, "status": rule.status(stats["psi"]) if judged else None}
    stats = _statistics(reference["output"], counts["output"].get("counts", []), 0, "output")
    out["output"] = {**stats, "status": rule.status(stats["psi"]) if judged else None}
    drifted = [name for name, c in out["columns"].items() if c["status"] == "significant"]
    if not judged:
        out["verdict"] = {"status": None, "drifted_columns": [], "share": None,
                          "note": f"{rows} scored rows, fewer than min_rows={rule.min_rows}: too few to judge"}
    else:
        share = round(len(drifted) / len(columns), 6) if columns else 0.0
        out["verdict"] = {"status": "drift" if columns and share >= rule.drifted_share else "ok",
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
            extra = sorted(set(w["columns"]) - set(total["columns"]))
            lacking = sorted(set(total["columns"]) - set(w["columns"]))
            raise ProtocolError(f"windows with different columns cannot be added: one has {few(extra)} that the "
                                f"first lacks and lacks {few(lacking)}; add only windows of the same bundle")
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
    problems = [f"{what} {few(names)}" for what, names in (("it does not monitor the counted column(s)", unknown),
                                                           ("the counts lack its column(s)", absent)) if names]
    if "output" not in reference:
        problems.append("it has no output")
    if problems:
        raise ProtocolError(f"the counts do not fit the reference: {'; '.join(problems)}; judge a window only "
                            "against the reference of the bundle that counted it")


def _statistics(entry: Mapping, counts, missing: int, name: str) -> dict:
    try:
        return statistics_from_counts(entry, counts, missing)
    except ValueError as exc:
        raise ProtocolError(f"{name}: {exc}; judge a window only against the reference of its bundle") from None
