"""Fleet judging: decide from the store under a lease, and what to publish on each fleet's status topic.

:func:`decide` takes or renews the store's lease ``"judge"``; while it holds
it, it judges every (fleet, bundle) with windows in the policy's horizon
(:func:`.assessment.assess`) and stores the decisions the state calls for,
each fenced by the lease (:meth:`.store.Store.record_decision` with
``lease=("judge", holder)``: a controller whose lease ran out decides
nothing). The state of a fleet is the fold of its stored decisions
(:func:`fleet_state`), so it survives restarts and moves between controllers:

* ``drift``: the bundle was ``ok`` and the assessment is ``drifting``;
* ``recovered``: the bundle was ``drift`` and at most ``recover_slices`` of
  the slices drifted (hysteresis);
* ``anomaly`` / ``anomaly_cleared``: a device became / is no longer anomalous;
* ``performance``: the bundle's live performance was ``ok`` and the labelled
  rows of the horizon give a metric worse than the build's by more than
  ``performance_margin`` (:mod:`.performance`); ``performance_recovered``: it
  was ``drop`` and is within half the margin again (hysteresis);
* ``unknown_bundle``: windows of a bundle the registry does not hold (stored,
  not judged), reported once per (fleet, bundle); once the bundle is
  registered, its windows are judged (the status says ``ok`` until a drift).

No decision of one kind for one (fleet, bundle, device) within ``cooldown``
seconds of the last. :func:`outgoing` gives the unpublished decisions as
(id, topic, payload): publish each retained at QoS 1, then
``store.mark_published([id])`` once the broker acknowledged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

import sqlalchemy as sa

from edgeml_runtime.protocol import status_payload, status_topic

from . import schema as t
from .assessment import Assessment, WindowCache, assess
from .performance import bundle_manifest, judge_performance
from .performance import summary as performance_summary
from .policy import Policy
from .records import Decision

#: The store lease a controller must hold to decide.
LEASE = "judge"


def fleet_state(decisions: Iterable[Decision]) -> dict[str, dict]:
    """Bundle identity → ``state`` (ok, drift, unknown), ``performance`` (ok, drop), ``anomalies`` (devices) and
    ``last`` (the time of the last decision by (kind, device)), folded from a fleet's decisions, oldest first.

    >>> d = [Decision(1, "f", "ab", "drift", 10.0, {}, True), Decision(2, "f", "ab", "anomaly", 11.0,
    ...      {"device": "pi-3"}, True)]
    >>> state = fleet_state(d)["ab"]
    >>> state["state"], state["performance"], state["anomalies"], state["last"][("drift", None)]
    ('drift', 'ok', ['pi-3'], 10.0)
    """
    state: dict[str, dict] = {}
    for d in decisions:
        b = state.setdefault(d.bundle_sha256, {"state": "ok", "performance": "ok", "anomalies": [], "last": {}})
        device = d.evidence.get("device")
        b["last"][(d.kind, device)] = d.time
        if d.kind == "drift":
            b["state"] = "drift"
        elif d.kind == "recovered":
            b["state"] = "ok"
        elif d.kind == "unknown_bundle":
            b["state"] = "unknown"
        elif d.kind == "anomaly" and device not in b["anomalies"]:
            b["anomalies"] = sorted([*b["anomalies"], device])
        elif d.kind == "anomaly_cleared":
            b["anomalies"] = [x for x in b["anomalies"] if x != device]
        elif d.kind in ("performance", "performance_recovered"):
            b["performance"] = "drop" if d.kind == "performance" else "ok"
    return state


def judged_pairs(store, since: float) -> list[tuple[str, str]]:
    """The (fleet, bundle) pairs with windows ended at or after ``since``."""
    w = t.windows
    q = sa.select(w.c.fleet, w.c.bundle_sha256).where(w.c.ended >= since).distinct().order_by(
        w.c.fleet, w.c.bundle_sha256)
    with store.engine.connect() as conn:
        return [(f, b) for f, b in conn.execute(q)]


def decide(store, policy: Policy, *, holder: str, lease_seconds: float, now: float | None = None,
           cache: WindowCache | None = None) -> list[Decision]:
    """Judge every fleet and bundle of the horizon and store the new decisions, if ``holder`` holds the lease.

    ``cache``: a :class:`~.assessment.WindowCache` kept between calls, so each reads only the windows stored since.
    """
    now = time.time() if now is None else now
    if not store.acquire_lease(LEASE, holder, lease_seconds, now=now):
        return []
    stored: list[Decision] = []
    states = {}
    for fleet, bundle in judged_pairs(store, policy.bounds(now)[0][0]):
        if fleet not in states:
            states[fleet] = fleet_state(store.decisions(fleet))
        previous = states[fleet].get(bundle, {"state": "ok", "performance": "ok", "anomalies": [], "last": {}})
        reference = store.reference(bundle)
        if reference is None:
            found = [("unknown_bundle", None, _unknown(store, fleet, bundle))] \
                if previous["state"] != "unknown" else []
        else:
            a = assess(store, policy, fleet, bundle, reference, now, cache)
            a.performance = judge_performance(_manifest(store, bundle, cache), a.read, policy)
            found = [(k, d, {**a.evidence(policy), "summary": s}) for k, d, s in transitions(a, previous, policy)]
        for kind, device, evidence in found:
            if now - previous["last"].get((kind, device), -float("inf")) < policy.cooldown:
                continue
            evidence = {**evidence, "device": device}
            id_ = store.record_decision(fleet, kind, evidence, bundle=bundle, when=now, lease=(LEASE, holder))
            if id_ is None:  # the lease ran out while judging: another controller decides now
                return stored
            stored.append(Decision(id_, fleet, bundle, kind, now, json.loads(json.dumps(evidence)), False))
    return stored


def transitions(a: Assessment, previous: dict, policy: Policy) -> list[tuple[str, str | None, str]]:
    """The decisions (kind, device, summary) that take a bundle from its ``previous`` state to the assessment's."""
    out = []
    drifted = f"{len(a.drifted_devices)} of {len(a.reporting)} reporting devices drifted"
    slices = f"{a.drifted_slices} of the last {policy.slices} slices drifted"
    if previous["state"] != "drift" and a.drifting:
        out.append(("drift", None, f"fleet drift: {slices} (at least {policy.drifted_slices}), {drifted} (at "
                                   f"least {policy.device_share:.0%}, {policy.min_devices} devices)"))
    elif previous["state"] == "drift" and a.recovered:
        out.append(("recovered", None, f"recovered: {slices} (at most {policy.recover_slices}); {drifted}"))
    for device in sorted(set(a.anomalies) - set(previous["anomalies"])):
        columns = ", ".join(sorted(a.anomalies[device]["columns"]))
        out.append(("anomaly", device, f"device {device} is anomalous: it drifted while {drifted}, and differs "
                                       f"from the rest of the fleet in {columns}; its windows are left out"))
    for device in sorted(set(previous["anomalies"]) - set(a.anomalies)):
        out.append(("anomaly_cleared", device, f"device {device} is no longer anomalous"))
    p = a.performance
    if p is not None and previous.get("performance", "ok") != "drop" and p.dropping:
        out.append(("performance", None, f"performance dropped: {performance_summary(p)}"))
    elif p is not None and previous.get("performance", "ok") == "drop" and p.recovered:
        out.append(("performance_recovered", None, f"performance recovered: {performance_summary(p)}"))
    return out


def _manifest(store, bundle: str, cache: WindowCache | None) -> dict:
    """The bundle's registered manifest, read once per ``cache`` (22 kB of JSON for the demo: not every 0.5 s)."""
    if cache is None:
        return bundle_manifest(store, bundle) or {}
    if bundle not in cache.manifests:
        cache.manifests[bundle] = bundle_manifest(store, bundle) or {}
    return cache.manifests[bundle]


def _unknown(store, fleet: str, bundle: str) -> dict:
    n = store.unknown_bundles(fleet).get((fleet, bundle), 0)
    return {"windows": n, "summary": f"{n:,} windows of bundle {bundle[:12]}… which the registry does not hold: "
                                     "stored, not judged; add it with edgeml registry add BUNDLE"}


def outgoing(store) -> list[tuple[int, str, bytes]]:
    """The unpublished decisions as (decision id, topic, payload), oldest first: the fleet's status after each."""
    pending = store.decisions(published=False)
    if not pending:
        return []
    names = {b["bundle_sha256"]: b for b in store.bundles()}
    out = []
    history: dict[str, list[Decision]] = {}
    for d in sorted(pending, key=lambda d: d.id):
        if d.fleet not in history:
            history[d.fleet] = sorted(store.decisions(d.fleet), key=lambda x: x.id)
        state = fleet_state(x for x in history[d.fleet] if x.id <= d.id)
        bundles = {sha: {"name": names.get(sha, {}).get("name"), "version": names.get(sha, {}).get("version"),
                         "state": "ok" if s["state"] == "unknown" and sha in names else s["state"],
                         "performance": s["performance"], "anomalies": s["anomalies"]}
                   for sha, s in state.items() if sha}
        payload = status_payload(d.fleet, bundles, {"id": d.id, "kind": d.kind, "time": d.time,
                                                    "bundle": d.bundle_sha256, "device": d.evidence.get("device"),
                                                    "summary": d.evidence.get("summary", d.kind)})
        out.append((d.id, status_topic(d.fleet), json.dumps(payload, separators=(",", ":")).encode()))
    return out
