"""What the store says of one (fleet, bundle) over the policy's horizon: slices, devices, anomalies, columns.

:func:`assess` reads the windows of the horizon (:meth:`.policy.Policy.bounds`)
once and judges, all from summed counts (never averages of statistics):

* each **device** on its own horizon counts (its verdict,
  :func:`.fastjudge.device_verdicts`, equal to ``judge_window``'s); a device
  *reports* when it counted at least ``min_rows`` rows over the horizon;
* each **drifted device** against the rest of the fleet: per column, Pearson's
  χ² homogeneity test (:func:`edgeml_runtime.protocol.stats.homogeneity_test`)
  of its counts against the sum of every other device's, at the Bonferroni
  level ``anomaly_alpha / columns``. While fewer than ``device_share`` of the
  reporting devices drifted (the world did not change), a drifted device that
  differs from the others in at least one column is an **anomaly**: its
  windows are left out of the fleet's counts (``excluded``), so one broken
  device cannot tip the fleet verdict;
* each **slice**: the counts of every other device's windows ended in it,
  summed and judged by :func:`~edgeml_runtime.protocol.judge_window` under the
  policy's rule, and the whole horizon the same way (``columns``: the
  horizon's and the latest judged slice's statistics per column).

Windows whose counts do not fit the bundle's reference (a device that counts
into other bins than its bundle's) are left out and reported in ``unfit``.
Every window read is kept in ``read`` for the live performance
(:mod:`.performance`), which :func:`.judge.decide` sets in ``performance``.

``drifting`` is the fleet-drift condition of the policy (K of N slices, enough
devices reporting, enough of them drifted), ``recovered`` its hysteresis
(at most ``recover_slices`` drifted slices).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import sqlalchemy as sa

from edgeml_runtime.errors import ProtocolError
from edgeml_runtime.protocol import judge_window
from edgeml_runtime.protocol.stats import homogeneity_test

from . import schema as t
from .fastjudge import Layout, device_verdicts
from .policy import Policy


@dataclass
class Assessment:
    """The judgement of one (fleet, bundle) over the horizon (see the module docstring)."""

    fleet: str
    bundle: str
    start: float
    end: float
    slices: list[dict] = field(default_factory=list)
    devices: dict[str, dict] = field(default_factory=dict)
    reporting: list[str] = field(default_factory=list)
    drifted_devices: list[str] = field(default_factory=list)
    anomalies: dict[str, dict] = field(default_factory=dict)
    columns: dict[str, dict] = field(default_factory=dict)
    horizon: dict = field(default_factory=dict)
    drifting: bool = False
    recovered: bool = True
    windows: int = 0
    unfit: dict[str, dict] = field(default_factory=dict)
    #: Every window read (unfit ones too), for :func:`.performance.judge_performance`.
    read: list = field(default_factory=list, repr=False)
    #: The live performance (:class:`.performance.Performance`), once judged.
    performance: object = None

    @property
    def drifted_slices(self) -> int:
        return sum(s["status"] == "drift" for s in self.slices)

    def evidence(self, policy: Policy) -> dict:
        """What a decision stores as its evidence: the windows, devices, statistics, slice verdicts and policy."""
        return {"horizon": {"start": self.start, "end": self.end, "windows": self.windows,
                            "verdict": self.horizon},
                "slices": self.slices, "drifted_slices": self.drifted_slices,
                "devices": self.devices, "reporting": len(self.reporting), "drifted_devices": self.drifted_devices,
                "anomalies": self.anomalies, "excluded": sorted(self.anomalies), "columns": self.columns,
                "unfit": self.unfit, "policy": policy.to_dict(),
                **({"performance": self.performance.evidence()} if self.performance is not None else {})}


def assess(store, policy: Policy, fleet: str, bundle: str, reference: Mapping, now: float,
           cache: WindowCache | None = None) -> Assessment:
    """Judge ``fleet``'s windows of ``bundle`` over the horizon ending at the last complete slice before ``now``
    (``cache``: the windows read by the last call, kept by the caller between calls; see :class:`WindowCache`)."""
    bounds = policy.bounds(now)
    start, end = bounds[0][0], bounds[-1][1]
    layout, rule = Layout(reference), policy.rule()
    windows, cells, unfit, read = [], [], {}, []
    for w, row in _laid_out(store, layout, fleet, bundle, start, end, cache):
        read.append(w)
        if isinstance(row, str):  # counts that do not fit the bundle's reference: reported, not judged
            unfit.setdefault(w.device, {"windows": 0, "reason": row})["windows"] += 1
        else:
            cells.append(row)
            windows.append(w)
    a = Assessment(fleet, bundle, start, end, windows=len(windows), unfit=unfit, read=read)
    matrix = np.array(cells, dtype=np.int64).reshape(len(cells), layout.width)
    names = sorted({w.device for w in windows})
    index = {d: i for i, d in enumerate(names)}
    owner = np.array([index[w.device] for w in windows], dtype=np.int64)
    per_device = np.zeros((len(names), layout.width), dtype=np.int64)
    np.add.at(per_device, owner, matrix)
    rows = np.bincount(owner, weights=[w.rows for w in windows], minlength=len(names)).astype(np.int64)
    verdicts = device_verdicts(layout, per_device, rule, rows)
    by_device: dict[str, list] = {d: [] for d in names}
    for w in windows:
        by_device[w.device].append(w)
    for d, verdict, n in zip(names, verdicts, rows, strict=True):
        mine = by_device[d]
        sessions: dict[str, list[int]] = {}
        for w in mine:
            lo, hi = sessions.get(str(w.session), [w.seq, w.seq])
            sessions[str(w.session)] = [min(lo, w.seq), max(hi, w.seq)]
        a.devices[d] = {"windows": len(mine), "rows": int(n), "sessions": sessions, "status": verdict}
    a.reporting = [d for d in names if a.devices[d]["status"] is not None]
    a.drifted_devices = [d for d in names if a.devices[d]["status"] == "drift"]
    changed = len(a.reporting) >= policy.min_devices and \
        len(a.drifted_devices) >= policy.device_share * len(a.reporting)
    if not changed and len(a.reporting) >= policy.min_devices:  # fewer cannot tell one device from the world
        a.anomalies = _anomalies(layout, per_device, names, a.drifted_devices, policy)
    kept = np.array([names[o] not in a.anomalies for o in owner], dtype=bool)
    _judge_slices(a, layout, rule, matrix, windows, kept, bounds)
    a.drifting = changed and a.drifted_slices >= policy.drifted_slices
    a.recovered = a.drifted_slices <= policy.recover_slices
    return a


@dataclass(frozen=True)
class Counted:
    """What judging reads of a stored window: its key, end, rows, counts (shaped for ``judge_window``) and
    performance counts (``{}`` when it has none)."""

    device: str
    session: int
    seq: int
    ended: float
    rows: int
    counts: dict
    performance: dict = field(default_factory=dict)


class WindowCache(dict):
    """The windows a judgement read, laid out, by (fleet, bundle) then window id: a controller that judges every
    few seconds keeps one and passes it to each :func:`.judge.decide`, so only windows new since the last call are
    read and decoded (a window never changes once stored). Each call keeps only its horizon's windows.
    ``manifests`` keeps the registered manifests judging read, by bundle identity (nor does a bundle change)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.manifests: dict[str, dict] = {}


def horizon_windows(store, fleet: str, bundle: str, start: float, end: float,
                    ids: list[int] | None = None) -> list[tuple[int, Counted]]:
    """The windows of ``fleet`` and ``bundle`` ended in [start, end) (of ``ids`` only, if given), oldest first, by
    id: only what judging reads (a window's statistics and verdict are not decoded)."""
    w = t.windows
    q = (sa.select(w.c.id, w.c.device, w.c.session, w.c.seq, w.c.ended, w.c.rows, w.c.bad_rows, w.c.counts,
                   w.c.performance)
         .where(w.c.fleet == fleet, w.c.bundle_sha256 == bundle, w.c.ended >= start, w.c.ended < end)
         .order_by(w.c.ended, w.c.id))
    with store.engine.connect() as conn:
        if ids is None:
            found = list(conn.execute(q))
        else:
            found = [r for i in range(0, len(ids), 500) for r in conn.execute(q.where(w.c.id.in_(ids[i:i + 500])))]
    return [(r.id, Counted(r.device, r.session, r.seq, r.ended, r.rows,
                           {"rows": r.rows, "bad_rows": r.bad_rows, **r.counts}, r.performance or {})) for r in found]


def _laid_out(store, layout: Layout, fleet, bundle, start, end, cache: WindowCache | None) -> list[tuple]:
    """(window, its row of cells or why its counts do not fit) for the horizon, read through ``cache``."""
    def lay(w: Counted):
        try:
            return layout.row(w.counts)
        except ProtocolError as exc:
            return str(exc)

    if cache is None:
        return [(w, lay(w)) for _, w in horizon_windows(store, fleet, bundle, start, end)]
    w = t.windows
    q = (sa.select(w.c.id).where(w.c.fleet == fleet, w.c.bundle_sha256 == bundle, w.c.ended >= start,
                                 w.c.ended < end).order_by(w.c.ended, w.c.id))
    with store.engine.connect() as conn:
        ids = list(conn.scalars(q))
    known = cache.get((fleet, bundle), {})
    fresh = {i: (c, lay(c)) for i, c in horizon_windows(store, fleet, bundle, start, end,
                                                         [i for i in ids if i not in known])}
    cache[(fleet, bundle)] = kept = {i: known.get(i) or fresh[i] for i in ids if i in known or i in fresh}
    return list(kept.values())


def _judge_slices(a: Assessment, layout: Layout, rule, matrix, windows, kept, bounds) -> None:
    ended = np.array([w.ended for w in windows], dtype=float)
    rows = np.array([w.rows for w in windows], dtype=np.int64)
    latest = None
    for lo, hi in bounds:
        mask = kept & (ended >= lo) & (ended < hi)
        devices = sorted({w.device for w, k in zip(windows, mask, strict=True) if k})
        judged = judge_window(layout.reference, layout.counts(matrix[mask].sum(axis=0), int(rows[mask].sum())),
                              rule)
        verdict = judged["verdict"]
        a.slices.append({"start": lo, "end": hi, "devices": len(devices), "windows": int(mask.sum()),
                         "rows": int(rows[mask].sum()), "status": verdict["status"],
                         "drifted_columns": verdict["drifted_columns"]})
        if mask.any():
            latest = judged
    whole = judge_window(layout.reference, layout.counts(matrix[kept].sum(axis=0), int(rows[kept].sum())), rule)
    a.horizon = whole["verdict"]
    a.columns = {name: {"horizon": whole["columns"][name],
                        "latest": None if latest is None else latest["columns"][name]} for name in layout.names}
    a.columns["(output)"] = {"horizon": whole["output"], "latest": None if latest is None else latest["output"]}


def _anomalies(layout: Layout, per_device: np.ndarray, names: list[str], drifted: list[str],
               policy: Policy) -> dict[str, dict]:
    """The drifted devices whose counts differ from every other device's summed, column by column."""
    if len(names) < 2 or not drifted:
        return {}
    total = per_device.sum(axis=0)
    level = policy.anomaly_alpha / max(len(layout.names), 1)
    found = {}
    index = {d: i for i, d in enumerate(names)}
    for d in drifted:
        mine = per_device[index[d]]
        others = total - mine
        differs = {}
        for name in layout.names:
            cells, rest = mine[layout.slices[name]], others[layout.slices[name]]
            m = int(rest.sum())
            if not m:
                continue
            _, _, p = homogeneity_test([int(x) for x in cells], [float(x) / m for x in rest], m)
            if p <= level:
                differs[name] = float(f"{p:.6g}")
        if differs:
            found[d] = {"columns": differs, "level": float(f"{level:.6g}")}
    return found
