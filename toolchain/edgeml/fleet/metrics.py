"""``GET /metrics`` on the controller's HTTP server: the fleet in the Prometheus text format (0.0.4).

By Prometheus' naming rules (one ``edgeml_fleet_`` prefix, ``_total`` on
counters, base units) and with **bounded label sets**: a series per fleet,
per fleet and bundle, per fleet, bundle and column, per decision kind or
retrain status; a series per *device* only for the devices the judgement
flags as anomalies, so a fleet of ten thousand boards is not ten thousand
series per column. Everything is read from the store at the scrape (the
counts with one ``GROUP BY`` each, the drift through
:func:`.status.fleet_status`, the judgement ``edgeml fleet status`` shows),
so several controllers sharing a store expose the same numbers; a scrape
is cached for ``cache_seconds`` so a dashboard and Prometheus polling
together judge once.

==========================================  =======  ==============================================================
metric                                      type     labels, meaning
==========================================  =======  ==============================================================
``edgeml_fleet_devices``                    gauge    fleet: devices known (a birth was stored)
``edgeml_fleet_devices_online``             gauge    fleet: devices whose last message was a birth
``edgeml_fleet_windows_stored_total``       counter  fleet: drift windows stored
``edgeml_fleet_psi``                        gauge    fleet, bundle, column: PSI over the policy's horizon
``edgeml_fleet_drifted``                    gauge    fleet, bundle: 1 when the decisions left the bundle drifted
``edgeml_fleet_anomaly``                    gauge    fleet, bundle, device: 1 per device flagged as an anomaly
``edgeml_fleet_decisions_total``            counter  fleet, kind: decisions taken
``edgeml_fleet_retrains_total``             counter  fleet, status: retrains requested, by their status now
``edgeml_fleet_rollout_state``              gauge    fleet, state: 1 for the state of the fleet's latest rollout
``edgeml_fleet_rollout_wave``               gauge    fleet: the latest rollout's current wave (from 1)
``edgeml_fleet_update_steps_total``         counter  fleet, step: update steps the devices reported
==========================================  =======  ==============================================================

``bundle`` is the bundle's name and version (``sensors 3``), or the first 12
hex digits of its identity when the registry does not know it.

Example:

>>> print(sample("edgeml_fleet_psi", {"fleet": "plant-a", "bundle": 'demo "1"', "column": "air"}, 0.25))
edgeml_fleet_psi{fleet="plant-a",bundle="demo \\"1\\"",column="air"} 0.25
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping

import sqlalchemy as sa

from . import schema as t

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: (name, type, help) of every metric, in the order they are written.
METRICS = (
    ("edgeml_fleet_devices", "gauge", "Devices known to the fleet (a birth was stored)."),
    ("edgeml_fleet_devices_online", "gauge", "Devices whose last message was a birth."),
    ("edgeml_fleet_windows_stored_total", "counter", "Drift windows stored."),
    ("edgeml_fleet_psi", "gauge", "PSI of a column over the policy's horizon, all reporting devices together."),
    ("edgeml_fleet_drifted", "gauge", "1 when the decisions left the bundle drifted in the fleet, else 0."),
    ("edgeml_fleet_anomaly", "gauge", "1 for each device the judgement flags as an anomaly."),
    ("edgeml_fleet_decisions_total", "counter", "Decisions taken, by kind."),
    ("edgeml_fleet_retrains_total", "counter", "Retrains requested, by their status now."),
    ("edgeml_fleet_rollout_state", "gauge", "1 for the state of the fleet's latest rollout."),
    ("edgeml_fleet_rollout_wave", "gauge", "The current wave of the fleet's latest rollout, from 1."),
    ("edgeml_fleet_update_steps_total", "counter", "Update steps the devices reported, by step."),
)
ROLLOUT_STATES = ("running", "paused", "done", "aborted")


class FleetMetrics:
    """The ``/metrics`` text of ``store`` under ``policy``, rendered at most every ``cache_seconds``."""

    def __init__(self, store, policy, *, cache_seconds: float = 2.0, clock=time.time):
        self.store, self.policy, self.cache_seconds, self.clock = store, policy, cache_seconds, clock
        self._lock = threading.Lock()
        self._cached: tuple[float, str] | None = None

    def render(self) -> str:
        with self._lock:
            now = self.clock()
            if self._cached is None or now - self._cached[0] >= self.cache_seconds:
                self._cached = (now, render(self.store, self.policy, now=now))
            return self._cached[1]


def render(store, policy, *, now: float | None = None) -> str:
    """Every metric of :data:`METRICS`, its HELP and TYPE lines, then its samples."""
    from .status import fleet_status

    now = time.time() if now is None else now
    samples: dict[str, list[str]] = {name: [] for name, _, _ in METRICS}
    report = fleet_status(store, policy, now=now)
    for fleet, f in report["fleets"].items():
        samples["edgeml_fleet_devices"].append(sample("edgeml_fleet_devices", {"fleet": fleet}, len(f["devices"])))
        samples["edgeml_fleet_devices_online"].append(
            sample("edgeml_fleet_devices_online", {"fleet": fleet}, sum(d["online"] for d in f["devices"])))
        for sha, b in f["bundles"].items():
            bundle = f"{b['name']} {b['version']}" if b["known"] else sha[:12]
            labels = {"fleet": fleet, "bundle": bundle}
            samples["edgeml_fleet_drifted"].append(sample("edgeml_fleet_drifted", labels, b["state"] == "drift"))
            for column, c in (b.get("columns") or {}).items():
                if c["horizon_psi"] is not None:
                    samples["edgeml_fleet_psi"].append(
                        sample("edgeml_fleet_psi", {**labels, "column": column}, c["horizon_psi"]))
            for device in b["anomalies"]:
                samples["edgeml_fleet_anomaly"].append(sample("edgeml_fleet_anomaly", {**labels, "device": device}, 1))
    for name, labels, value in _counts(store):
        samples[name].append(sample(name, labels, value))
    latest: dict[str, dict] = {}
    for r in report.get("rollouts", []):  # newest first
        latest.setdefault(r["fleet"], r)
    for fleet, r in sorted(latest.items()):
        for state in ROLLOUT_STATES:
            samples["edgeml_fleet_rollout_state"].append(
                sample("edgeml_fleet_rollout_state", {"fleet": fleet, "state": state}, r["state"] == state))
        samples["edgeml_fleet_rollout_wave"].append(sample("edgeml_fleet_rollout_wave", {"fleet": fleet},
                                                           r["wave"] + 1))
    lines = []
    for name, kind, text in METRICS:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", *samples[name]]
    return "\n".join(lines) + "\n"


def _counts(store) -> list[tuple[str, dict, int]]:
    """The counters, one GROUP BY each: (metric, labels, value)."""
    queries = (
        ("edgeml_fleet_windows_stored_total", t.windows, (t.windows.c.fleet,), ("fleet",)),
        ("edgeml_fleet_decisions_total", t.decisions, (t.decisions.c.fleet, t.decisions.c.kind), ("fleet", "kind")),
        ("edgeml_fleet_retrains_total", t.retrains, (t.retrains.c.fleet, t.retrains.c.status), ("fleet", "status")),
        ("edgeml_fleet_update_steps_total", t.update_events, (t.update_events.c.fleet, t.update_events.c.step),
         ("fleet", "step")),
    )
    out = []
    with store._read() as conn:
        for name, table, columns, labels in queries:
            q = sa.select(*columns, sa.func.count()).select_from(table).group_by(*columns).order_by(*columns)
            for *values, count in conn.execute(q):
                out.append((name, dict(zip(labels, values, strict=True)), int(count)))
    return out


def sample(name: str, labels: Mapping[str, str], value) -> str:
    """One sample line, its label values escaped as the format says (backslash, double quote, newline)."""
    inside = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
    return f"{name}{{{inside}}} {_number(value)}"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


__all__ = ["CONTENT_TYPE", "METRICS", "FleetMetrics", "render", "sample"]
