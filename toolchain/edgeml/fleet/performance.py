"""Live performance of one (fleet, bundle): the labelled rows' counts over the horizon, summed, against the build.

Devices count the rows whose records carried the label against what they
predicted (:mod:`edgeml_runtime.performance`) and each drift window carries
the counts (``performance``). :func:`judge_performance` adds up the counts of
the windows the assessment read over the policy's horizon
(:func:`edgeml_runtime.protocol.add_performance`; every device's, anomalies'
too: a broken input does not make a label wrong), computes the live metric
from the sums, and compares it with what the build measured on its test split
(the manifest's ``metrics.test``, the same metric names):

* the **metric** is the policy's ``performance_metric``; ``"auto"`` takes the
  build's search metric when counts give it, else the first of
  :data:`COUNTED` the build measured (``accuracy`` for classification,
  ``rmse`` for regression). Counts give ``accuracy``, ``balanced_accuracy``
  and ``f1`` (the positive class's for two classes, macro-averaged for more,
  as the build computes them), ``rmse``, ``mae`` and ``r2`` (``roc_auc`` and
  ``log_loss`` need probabilities, which no window carries);
* the **drop**: for a bounded metric (``accuracy``, ``balanced_accuracy``,
  ``f1``, ``r2``; higher is better) the build's value minus the live one, in
  the metric's own units; for an error (``rmse``, ``mae``; lower is better)
  the relative rise, live / build − 1 (an RMSE of 2.2 against 2.0 is a drop
  of 0.1), since an error's scale is the label's;
* the bundle's performance has **dropped** (``dropping``) when the drop is
  more than ``performance_margin`` and at least ``min_labelled`` labelled
  rows were counted over the horizon (fewer decide nothing); it has
  **recovered** (hysteresis) when, with as many rows, the drop is at most
  half the margin.

>>> counts = {"kind": "classes", "labelled": 10, "unknown": 0, "unlabelled": 0, "matrix": [[6, 1], [2, 1]]}
>>> metrics(counts)
{'accuracy': 0.7, 'balanced_accuracy': 0.595238, 'f1': 0.4}
>>> drop("accuracy", build=0.9, live=0.7), drop("rmse", build=2.0, live=2.2)
(0.2, 0.1)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from edgeml_runtime.errors import ProtocolError
from edgeml_runtime.protocol import add_performance, check_performance

#: The metrics counts give, per task, in the order ``"auto"`` falls back on.
COUNTED = {"classification": ("accuracy", "balanced_accuracy", "f1"), "regression": ("rmse", "mae", "r2")}
#: Errors, lower is better: their drop is relative (the others' absolute).
ERRORS = ("rmse", "mae")
DIGITS = 6


def _round(x: float) -> float:
    return round(float(x), DIGITS)


def metrics(counts: Mapping) -> dict[str, float]:
    """Every metric of :data:`COUNTED` that the counts give (none without labelled rows)."""
    n = counts["labelled"]
    if not n:
        return {}
    if counts["kind"] == "values":
        sse, y, yy = counts["sum_squared_error"], counts["sum_label"], counts["sum_label_squared"]
        sst = max(yy - y * y / n, 0.0)
        r2 = 1.0 - sse / sst if sst > 0 else (1.0 if sse == 0 else 0.0)  # scikit-learn's force_finite
        return {"rmse": _round(math.sqrt(sse / n)), "mae": _round(counts["sum_abs_error"] / n), "r2": _round(r2),
                "bias": _round(counts["sum_error"] / n)}
    m = counts["matrix"]
    k = len(m)
    true = [sum(row) for row in m]
    predicted = [sum(m[i][j] for i in range(k)) for j in range(k)]
    recalls = [m[i][i] / true[i] for i in range(k) if true[i]]

    def f1(c: int) -> float:
        denominator = true[c] + predicted[c]
        return 2 * m[c][c] / denominator if denominator else 0.0

    seen = [c for c in range(k) if true[c] or predicted[c]]  # scikit-learn's labels: those in y_true or y_pred
    return {"accuracy": _round(sum(m[i][i] for i in range(k)) / n),
            "balanced_accuracy": _round(sum(recalls) / len(recalls)),
            "f1": _round(f1(1) if k == 2 else sum(map(f1, seen)) / len(seen))}


def drop(metric: str, *, build: float, live: float) -> float:
    """How much worse ``live`` is than ``build``: relative for an error (:data:`ERRORS`), else absolute."""
    if metric in ERRORS:
        return _round(live / build - 1.0) if build > 0 else (0.0 if live == 0 else math.inf)
    return _round(build - live)


def choose_metric(manifest: Mapping, wanted: str) -> tuple[str | None, str]:
    """The metric to judge ``manifest``'s bundle by (None if none applies) and why."""
    task, built = manifest.get("task"), (manifest.get("metrics") or {}).get("test") or {}
    counted = COUNTED.get(task, ())
    if wanted != "auto":
        if wanted not in counted:
            return None, f"performance_metric {wanted!r} is not one counts give for {task} ({', '.join(counted)})"
        if wanted not in built:
            return None, f"the build did not measure {wanted!r} (metrics.test has {', '.join(built)})"
        return wanted, "the policy's performance_metric"
    searched = (manifest.get("search") or {}).get("metric")
    if searched in counted and searched in built:
        return searched, "the build's search metric"
    for name in counted:
        if name in built:
            return name, f"the first of {', '.join(counted)} the build measured" + (
                f" (its search metric {searched!r} needs probabilities)" if searched else "")
    return None, f"the build measured none of {', '.join(counted)} (metrics.test)"


def bundle_manifest(store, bundle: str) -> dict | None:
    """The manifest of a registered bundle (None if the registry does not hold it)."""
    import sqlalchemy as sa  # here: the policy imports this module, and importing edgeml.fleet imports no database

    from . import schema as t

    b = t.bundles
    with store.engine.connect() as conn:
        return conn.execute(sa.select(b.c.manifest).where(b.c.bundle_sha256 == bundle)).scalar()


@dataclass
class Performance:
    """The live performance of one (fleet, bundle) over the horizon (see the module docstring)."""

    metric: str | None
    reason: str
    build: float | None = None
    live: float | None = None
    drop: float | None = None
    margin: float = 0.0
    min_labelled: int = 0
    labelled: int = 0
    counts: dict | None = None
    live_metrics: dict = field(default_factory=dict)
    devices: dict[str, dict] = field(default_factory=dict)
    unfit: dict[str, dict] = field(default_factory=dict)

    @property
    def judged(self) -> bool:
        """Enough labelled rows (``min_labelled``) under a metric the build measured."""
        return self.drop is not None and self.labelled >= self.min_labelled

    @property
    def dropping(self) -> bool:
        return self.judged and self.drop > self.margin

    @property
    def recovered(self) -> bool:
        return self.judged and self.drop <= self.margin / 2

    def evidence(self) -> dict:
        """What a decision stores: the live and build metric, the margin, the labelled rows, the sums, per device."""
        return {"metric": self.metric, "chosen": self.reason, "build": self.build, "live": self.live,
                "drop": self.drop, "relative": self.metric in ERRORS, "margin": self.margin,
                "recover_margin": self.margin / 2, "labelled": self.labelled, "min_labelled": self.min_labelled,
                "live_metrics": self.live_metrics, "counts": self.counts, "devices": self.devices,
                "unfit": self.unfit}


def judge_performance(manifest: Mapping, windows, policy) -> Performance:
    """The live performance of a bundle from ``windows`` (the assessment's :class:`~.assessment.Counted`)."""
    metric, reason = choose_metric(manifest, policy.performance_metric)
    p = Performance(metric, reason, margin=policy.performance_margin, min_labelled=policy.min_labelled)
    k = len(manifest.get("classes") or ()) if manifest.get("task") == "classification" else None
    kind = "classes" if k is not None else "values"
    by_device: dict[str, list] = {}
    for w in windows:
        if not w.performance:
            continue
        try:
            counts = check_performance(w.performance, f"window {w.device}/{w.session}/{w.seq}", k)
            if counts["kind"] != kind:
                raise ProtocolError(f"{counts['kind']} counts for a bundle that counts {kind}")
        except ProtocolError as exc:  # counts of another shape than the bundle's: reported, not summed
            p.unfit.setdefault(w.device, {"windows": 0, "reason": str(exc)})["windows"] += 1
            continue
        by_device.setdefault(w.device, []).append(counts)
    if not by_device:
        return p
    for device in sorted(by_device):
        summed = add_performance(by_device[device])
        p.devices[device] = {"windows": len(by_device[device]), "labelled": summed["labelled"],
                             "unlabelled": summed["unlabelled"], **({"unknown": summed["unknown"]} if k else {}),
                             "metric": metrics(summed).get(metric) if metric else None}
    p.counts = add_performance(c for d in sorted(by_device) for c in by_device[d])
    p.labelled, p.live_metrics = p.counts["labelled"], metrics(p.counts)
    if metric is not None and metric in p.live_metrics:
        p.build, p.live = float(manifest["metrics"]["test"][metric]), p.live_metrics[metric]
        p.drop = drop(metric, build=p.build, live=p.live)
    return p


def summary(p: Performance) -> str:
    """What a ``performance`` or ``performance_recovered`` decision says."""
    unit = "relative rise of the error" if p.metric in ERRORS else "drop"
    return (f"live {p.metric} {p.live} on {p.labelled:,} labelled rows against {p.build} at build: {unit} "
            f"{p.drop} ({'more than the margin' if p.dropping else 'at most half the margin'} {p.margin})")
