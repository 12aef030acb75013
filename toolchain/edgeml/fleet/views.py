"""What the dashboard draws of drift, computed from the same counts the decisions are judged on.

:func:`drift_grid` is the heatmap: for one fleet and bundle (and, if
given, one device), each slice of the policy's horizon with the counts of
the windows that ended in it summed and judged by
:func:`edgeml_runtime.protocol.judge_window` under the policy's rule, as
:mod:`.assessment` judges them: a PSI and a status per monitored column and
the output. (The fleet's grid sums every device, anomalies included; the
decision leaves anomalies out, and says so in its evidence.)

:func:`drift_cell` is one cell of it: the reference's shares per bin
beside the slice's counts and shares, with the bins' labels, and the cell's
PSI and status; the numbers the heatmap's colour came from.
"""

from __future__ import annotations

import time

import numpy as np

from edgeml.errors import FleetError
from edgeml_runtime.errors import ProtocolError
from edgeml_runtime.protocol import judge_window

from .assessment import horizon_windows
from .fastjudge import Layout

OUTPUT = "(output)"


def drift_grid(store, policy, fleet: str, bundle: str, *, device: str | None = None,
               now: float | None = None) -> dict:
    """``{"fleet", "bundle", "device", "columns": [...], "slices": [{"start", "end", "windows", "rows", "status"}],
    "psi": [[per column] per slice], "status": [[...]]}``; a slice with no rows has None throughout."""
    grid, _ = _grid(store, policy, fleet, bundle, device, now)
    return grid


def drift_cell(store, policy, fleet: str, bundle: str, column: str, start: float, *,
               device: str | None = None, now: float | None = None) -> dict:
    """One cell of :func:`drift_grid`, its slice named by its ``start`` (seconds since the epoch: an index would
    name another slice once the horizon moves on): ``{"column", "kind", "labels", "reference", "counts",
    "shares", "rows", "psi", "status", "start", "end"}`` (``reference`` and ``shares`` per label)."""
    grid, sums = _grid(store, policy, fleet, bundle, device, now)
    if column not in grid["columns"]:
        raise FleetError(f"column {column!r} is not monitored by bundle {bundle[:12]}…; the columns are "
                         f"{', '.join(grid['columns'])}")
    starts = [s["start"] for s in grid["slices"]]
    found = [i for i, s in enumerate(starts) if abs(s - start) < 1e-6]
    if not found:
        raise FleetError(f"no slice of the horizon starts at {start:g}: it starts from {starts[0]:g} every "
                         f"{starts[1] - starts[0] if len(starts) > 1 else 0:g} s (the grid's slices[].start)")
    slice_index = found[0]
    layout, reference = sums["layout"], sums["reference"]
    counts = layout.counts(sums["cells"][slice_index], int(sums["rows"][slice_index]))
    j = grid["columns"].index(column)
    if column == OUTPUT:
        entry, got = reference["output"], counts["output"]["counts"]
        labels, expected = [str(c) for c in entry.get("classes") or range(len(entry["shares"]))], entry["shares"]
    else:
        entry, part = reference["columns"][column], counts["columns"][column]
        labels, got = _labels(entry), list(part["counts"])
        if "missing_rate" in entry:
            labels, got = labels + ["(missing)"], got + [part["missing"]]
        expected = [float(x) for x in layout.expected[column]]  # what the PSI compared against
    total = sum(got)
    return {"fleet": fleet, "bundle": bundle, "device": device, "column": column, "kind": entry.get("kind"),
            "start": grid["slices"][slice_index]["start"], "end": grid["slices"][slice_index]["end"],
            "labels": labels, "reference": expected, "counts": got,
            "shares": [c / total for c in got] if total else [0.0] * len(got), "rows": total,
            "psi": grid["psi"][slice_index][j], "status": grid["status"][slice_index][j]}


def _grid(store, policy, fleet, bundle, device, now) -> tuple[dict, dict]:
    reference = store.reference(bundle)
    if reference is None:
        raise FleetError(f"the registry keeps no bundle {bundle[:12]}… (or it has no reference): its drift cannot "
                         "be drawn; add it with edgeml registry add BUNDLE")
    now = time.time() if now is None else now
    bounds = policy.bounds(now)
    layout, rule = Layout(reference), policy.rule()
    cells = np.zeros((len(bounds), layout.width), dtype=np.int64)
    rows = np.zeros(len(bounds), dtype=np.int64)
    windows = np.zeros(len(bounds), dtype=np.int64)
    edges = np.array([lo for lo, _ in bounds] + [bounds[-1][1]])
    for _, w in horizon_windows(store, fleet, bundle, bounds[0][0], bounds[-1][1]):
        if device is not None and w.device != device:
            continue
        try:
            row = layout.row(w.counts)
        except ProtocolError:
            continue  # counts that do not fit the reference: the status report names them (unfit)
        i = int(np.searchsorted(edges, w.ended, side="right")) - 1
        cells[i] += row
        rows[i] += w.rows
        windows[i] += 1
    columns = [*layout.names, OUTPUT]
    grid = {"fleet": fleet, "bundle": bundle, "device": device, "columns": columns, "slices": [], "psi": [],
            "status": []}
    for i, (lo, hi) in enumerate(bounds):
        judged = judge_window(reference, layout.counts(cells[i], int(rows[i])), rule) if rows[i] else None
        verdict = judged["verdict"]["status"] if judged else None
        grid["slices"].append({"start": lo, "end": hi, "windows": int(windows[i]), "rows": int(rows[i]),
                               "status": verdict})
        stats = [judged["columns"][n] for n in layout.names] + [judged["output"]] if judged else [None] * len(columns)
        grid["psi"].append([_finite(s["psi"]) if s else None for s in stats])
        grid["status"].append([s["status"] if s else None for s in stats])
    return grid, {"layout": layout, "reference": reference, "cells": cells, "rows": rows}


def _labels(entry: dict) -> list[str]:
    """The bins' names: ``< a``, ``a – b`` … ``≥ z`` for numbers, the categories then ``(other)``."""
    if "edges" in entry:
        e = [f"{x:.4g}" for x in entry["edges"]]
        return [f"< {e[0]}", *(f"{a} – {b}" for a, b in zip(e, e[1:], strict=False)), f"≥ {e[-1]}"]
    categories = [str(c) for c in entry.get("categories", [])]
    return categories + ["(other)"] * (len(entry["shares"]) - len(categories))


def _finite(x):
    return None if x is None or not np.isfinite(x) else float(x)


__all__ = ["OUTPUT", "drift_cell", "drift_grid"]
