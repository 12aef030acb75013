"""The window verdict, a public function over counts: what a device says about a window, anyone can recompute.

A device's drift window carries raw counts per reference bin. Counts add up
across windows and devices (:func:`add_counts`), and :func:`judge_window`
turns any set of counts into the statistics, the p-values, the per-column
statuses and the verdict, by the same rule the device applies
(``DriftMonitor`` calls this very function), so a fleet controller that sums
the counts of many windows reaches the verdict one device would reach on all
those rows.

The rule (protocol ``format_version`` 4 and later) is a :class:`VerdictRule`, calibrated
for the number of rows. Each column (and the output) gets a p-value: Pearson's
χ² test of homogeneity of the window's counts against the reference's (its
shares × its rows, ``reference["rows"]``; missing values are one more bin;
:func:`.stats.homogeneity_test`). The window tests every monitored input
column and the output, ``tests`` = columns + 1, each at the Bonferroni level
``level = alpha / tests``, so that the chance that any status of a window
without drift is not ``ok`` is at most ``alpha``. A column is
``significant`` when its test rejects (``p_value <= level``) **and** its PSI
is at least ``psi_significant``; ``moderate`` when the test rejects and its
PSI is at least ``psi_moderate``; else ``ok``. The test says the difference
is real at this many rows, the PSI that it is large enough to matter. The
window is ``drift`` when at least ``drifted_share`` of the monitored input
columns are significant. Fewer than ``min_rows`` scored rows get statistics
and p-values but no status and no verdict. A device states its rule in its
birth message (``window.rule``, :meth:`VerdictRule.to_dict`), so a controller
judges with :meth:`VerdictRule.from_dict` exactly as the device does.

Example: one numeric column with two reference bins, 20 rows all in the upper bin.

>>> reference = {"rows": {"train": 1000, "valid": 200},
...              "columns": {"temp": {"kind": "numeric", "edges": [20.0], "shares": [0.5, 0.5],
...                                   "missing_rate": 0.0}},
...              "output": {"kind": "classes", "classes": [0, 1], "shares": [0.5, 0.5], "split": "valid"}}
>>> counts = {"rows": 20, "columns": {"temp": {"counts": [0, 20], "missing": 0}}, "output": {"counts": [10, 10]}}
>>> judged = judge_window(reference, counts, VerdictRule(min_rows=10))
>>> judged["columns"]["temp"]
{'psi': 4.603789, 'js': 0.557923, 'p_value': 9.47036e-06, 'status': 'significant'}
>>> judged["output"]["status"], judged["verdict"]
('ok', {'status': 'drift', 'drifted_columns': ['temp'], 'share': 1.0, 'tests': 2, 'level': 0.005})
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..distributions import expected_shares, statistics_from_counts
from ..errors import ProtocolError, SettingsError, check_count, few
from .stats import homogeneity_test

#: Per-column counters that add up across windows (``kind`` is carried, not added).
ADDITIVE = ("missing", "below_range", "above_range")
#: Significant digits kept of a p-value and of the level (decided on as reported, so a message explains itself).
DIGITS = 6
_USUAL = "the usual thresholds are 0.1 (moderate) and 0.25 (significant)"


@dataclass(frozen=True)
class VerdictRule:
    """How a window's counts are judged: the test's level, the PSI thresholds of the statuses, the verdict's share.

    ``alpha`` is the chance, in a window without drift, that any of its
    statuses is not ``ok`` (at most; each of the window's tests runs at
    ``alpha / tests``). Each value is checked here, once; a bad one raises
    :class:`~edgeml_runtime.errors.SettingsError` naming it (the settings keys
    have the same names).

    >>> rule = VerdictRule(psi_moderate=0.05)
    >>> VerdictRule.from_dict(rule.to_dict()) == rule, rule.to_dict()["min_rows"], rule.level(11)
    (True, 100, 0.000909091)
    >>> VerdictRule(psi_moderate=0.3)
    Traceback (most recent call last):
    ...
    edgeml_runtime.errors.SettingsError: psi_moderate = 0.3: must satisfy 0 < psi_moderate <= psi_significant, \
with psi_significant = 0.25; the usual thresholds are 0.1 (moderate) and 0.25 (significant)
    >>> VerdictRule(alpha=1)
    Traceback (most recent call last):
    ...
    edgeml_runtime.errors.SettingsError: alpha = 1: must be a probability above 0 and below 1; e.g. 0.01 (the \
default; 0.05 flags more windows without drift, 0.001 fewer)
    """

    psi_moderate: float = 0.1
    psi_significant: float = 0.25
    drifted_share: float = 0.3
    min_rows: int = 100
    alpha: float = 0.01

    def __post_init__(self):
        for key in ("psi_moderate", "psi_significant", "drifted_share", "alpha"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise SettingsError(key=key, value=value, allowed="must be a finite number",
                                    fix=_USUAL if key.startswith("psi") else "e.g. 0.01" if key == "alpha"
                                    else "e.g. 0.3")
        if not 0 < self.psi_moderate <= self.psi_significant:
            raise SettingsError(key="psi_moderate", value=self.psi_moderate,
                                allowed="must satisfy 0 < psi_moderate <= psi_significant",
                                related={"psi_significant": self.psi_significant}, fix=_USUAL)
        if not 0 < self.drifted_share <= 1:
            raise SettingsError(key="drifted_share", value=self.drifted_share,
                                allowed="must be a share of the columns, above 0 and at most 1", fix="e.g. 0.3")
        check_count("min_rows", self.min_rows, 0, "rows")
        if not 0 < self.alpha < 1:
            raise SettingsError(key="alpha", value=self.alpha, allowed="must be a probability above 0 and below 1",
                                fix="e.g. 0.01 (the default; 0.05 flags more windows without drift, 0.001 fewer)")

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

    def level(self, tests: int) -> float:
        """The level each of ``tests`` p-values is compared with: ``alpha / tests`` (Bonferroni), as reported."""
        return _significant(self.alpha / max(tests, 1))

    def status(self, psi: float | None, p_value: float | None, level: float) -> str | None:
        """``significant``, ``moderate`` or ``ok``: the test must reject at ``level`` and the PSI reach a threshold.

        None when there is no PSI or no p-value (no rows).

        >>> rule = VerdictRule()
        >>> rule.status(0.3, 1e-4, 0.001), rule.status(0.3, 0.01, 0.001), rule.status(0.1, 0.001, 0.001)
        ('significant', 'ok', 'moderate')
        >>> rule.status(0.05, 1e-9, 0.001), rule.status(None, None, 0.001)
        ('ok', None)
        """
        if psi is None or p_value is None:
            return None
        if p_value > level:
            return "ok"
        return "significant" if psi >= self.psi_significant else "moderate" if psi >= self.psi_moderate else "ok"


def judge_window(reference: Mapping, counts: Mapping, rule: VerdictRule) -> dict:
    """Statistics, p-values, statuses and verdict for one window's counts against a bundle's ``reference``.

    ``counts`` is shaped like a window of the drift payload (a received one
    will do): ``rows``, ``columns`` (name → ``counts`` and ``missing``) and
    ``output`` (``counts``). Its columns must be the reference's monitored
    input columns; the reference states its rows (``rows.train`` for the
    inputs, ``rows[output.split]`` for the output). Returns ``{"columns":
    {name: {"psi", "js", "p_value", "status"}}, "output": {...the same},
    "verdict": {"status", "drifted_columns", "share", "tests", "level"}}``.
    """
    columns = counts.get("columns") or {}
    _check_columns(reference, columns)
    if not isinstance(rule, VerdictRule):
        raise ProtocolError(f"judge_window takes a VerdictRule, not {type(rule).__name__}; build one with "
                            "VerdictRule.from_dict(birth['window']['rule']) or VerdictRule(...)")
    rows = counts.get("rows", 0)
    judged = rows >= max(rule.min_rows, 1)
    tests = len(columns) + 1
    level = rule.level(tests)
    inputs, output = _reference_rows(reference) if rows else (0, 0)

    def judge(stats: dict) -> dict:
        return {**stats, "status": rule.status(stats["psi"], stats["p_value"], level) if judged else None}

    out: dict = {"columns": {name: judge(_tested(reference["columns"][name], c.get("counts", []),
                                                 c.get("missing", 0), inputs, name))
                             for name, c in columns.items()},
                 "output": judge(_tested(reference["output"], counts["output"].get("counts", []), 0, output,
                                         "output"))}
    drifted = [name for name, c in out["columns"].items() if c["status"] == "significant"]
    if not judged:
        out["verdict"] = {"status": None, "drifted_columns": [], "share": None, "tests": tests, "level": level,
                          "note": f"{rows} scored rows, fewer than min_rows={rule.min_rows}: too few to judge"}
    else:
        share = round(len(drifted) / len(columns), 6) if columns else 0.0
        out["verdict"] = {"status": "drift" if columns and share >= rule.drifted_share else "ok",
                          "drifted_columns": drifted, "share": share, "tests": tests, "level": level}
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


def _reference_rows(reference: Mapping) -> tuple[int, int]:
    """The rows the reference's inputs (``rows.train``) and output (``rows[output.split]``) were described on."""
    rows, split = reference.get("rows"), reference["output"].get("split")
    found = [rows.get(k) if isinstance(rows, Mapping) else None for k in ("train", split)]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in found):
        raise ProtocolError(f"the reference states no rows for its inputs (rows.train) or for its output's split "
                            f"(rows.{split}): got rows {rows!r}; the test compares a window's counts with the "
                            "reference's (its shares × its rows): judge against the manifest's reference, which "
                            "edgeml build writes with both")
    return found[0], found[1]


def _tested(entry: Mapping, counts, missing: int, reference_rows: int, name: str) -> dict:
    """PSI, JS and the p-value of Pearson's χ² test of homogeneity against the reference's counts."""
    try:
        stats = statistics_from_counts(entry, counts, missing)
    except ValueError as exc:
        raise ProtocolError(f"{name}: {exc}; judge a window only against the reference of its bundle") from None
    if stats["psi"] is None:
        return {**stats, "p_value": None}
    cells = [*counts, missing] if "missing_rate" in entry else list(counts)
    return {**stats, "p_value": _significant(homogeneity_test(cells, expected_shares(entry), reference_rows)[2])}


def _significant(x: float) -> float:
    """``x`` to :data:`DIGITS` significant digits."""
    return float(f"{x:.{DIGITS}g}")
