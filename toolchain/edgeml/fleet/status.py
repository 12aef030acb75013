"""``edgeml fleet status`` and ``edgeml fleet decisions``: what the store says of the fleet, now.

:func:`fleet_status` gathers, per fleet: the devices (online or offline, the
bundle each runs by name and version, its runtime version, when its last
window ended), and per bundle the state the decisions left (``ok``,
``drift``, ``unknown``), the anomalous devices, the last decision and the
current judgement over the policy's horizon (:func:`.assessment.assess`):
per column the latest judged slice's and the horizon's PSI and status.
:func:`decision_list` gives the stored decisions. ``--json`` prints these
dicts (the shapes in docs/fleet.md); without it, compact tables.

The store's URL comes from ``--store``, ``$EDGEML_FLEET_STORE`` or ``[store]
url`` of ``--config fleet.toml``, the policy from its ``[policy]`` table.
"""

from __future__ import annotations

import json
import time

import click

from edgeml.errors import EdgeMLError, FleetError
from edgeml_runtime.protocol.status import iso

from .policy import Policy
from .registry import _CONFIG, _STORE, _fail, _open

# The store's modules (SQLAlchemy, numpy) load when a command runs, not when the CLI starts.


def fleet_status(store, policy: Policy, *, fleet: str | None = None, now: float | None = None) -> dict:
    """``{"time", "fleets": {fleet: {"devices": [...], "bundles": {identity: {...}}, "last_decision"}}}``."""
    from .judge import fleet_state, judged_pairs

    now = time.time() if now is None else now
    names = {b["bundle_sha256"]: b for b in store.bundles()}
    last = _last_windows(store)
    fleets: dict[str, dict] = {}
    for d in store.devices(fleet):
        bundle = names.get(d.bundle_sha256, {})
        fleets.setdefault(d.fleet, _empty())["devices"].append({
            "device": d.device, "online": d.online, "bundle": d.bundle_sha256,
            "bundle_name": bundle.get("name"), "bundle_version": bundle.get("version"),
            "model": f"{d.model_name} {d.model_version}", "runtime_version": d.runtime_version,
            **_outbox(last.get((d.fleet, d.device)))})
    pairs = set(judged_pairs(store, policy.bounds(now)[0][0]))
    for f in {f for f, _ in pairs} | set(fleets):
        if fleet is not None and f != fleet:
            continue
        entry = fleets.setdefault(f, _empty())
        decisions = store.decisions(f)
        state = fleet_state(decisions)
        entry["last_decision"] = _decision(decisions[-1]) if decisions else None
        for sha in sorted({b for g, b in pairs if g == f} | {s for s in state if s}):
            entry["bundles"][sha] = _bundle(store, policy, f, sha, names.get(sha), state.get(sha), decisions, now)
    return {"time": iso(now), "policy": policy.to_dict(), "fleets": dict(sorted(fleets.items())),
            "rollouts": _rollouts(store, fleet)}


def _rollouts(store, fleet: str | None) -> list[dict]:
    """The rollouts (of ``fleet``), newest first, in brief (:func:`.rollout.rollouts`)."""
    from .rollout import rollouts

    return rollouts(store, fleet)


def _empty() -> dict:
    return {"devices": [], "bundles": {}, "last_decision": None}


def _bundle(store, policy, fleet, sha, registered, state, decisions, now) -> dict:
    from .assessment import assess
    from .performance import bundle_manifest, judge_performance

    state = state or {"state": "ok", "performance": "ok", "anomalies": []}
    mine = [d for d in decisions if d.bundle_sha256 == sha]
    known = state["state"] if registered is None or state["state"] != "unknown" else "ok"  # registered since
    out = {"name": registered and registered["name"], "version": registered and registered["version"],
           "known": registered is not None, "state": known, "anomalies": state["anomalies"],
           "last_decision": _decision(mine[-1]) if mine else None}
    reference = store.reference(sha) if registered else None
    if reference is None:
        out["state"] = "unknown"
        out["windows"] = store.unknown_bundles(fleet).get((fleet, sha), 0)
        return out
    a = assess(store, policy, fleet, sha, reference, now)
    out.update({"windows": a.windows, "reporting": len(a.reporting), "drifted_devices": a.drifted_devices,
                "current_anomalies": sorted(a.anomalies), "drifted_slices": a.drifted_slices,
                "slices": policy.slices, "verdict": a.horizon.get("status"), "unfit": a.unfit,
                "columns": {name: {"latest_psi": c["latest"] and c["latest"]["psi"],
                                   "latest_status": c["latest"] and c["latest"]["status"],
                                   "horizon_psi": c["horizon"]["psi"], "horizon_status": c["horizon"]["status"]}
                            for name, c in a.columns.items()}})
    manifest = bundle_manifest(store, sha)
    live = judge_performance(manifest, a.read, policy) if manifest else None
    out["performance"] = {"state": state.get("performance", "ok"), "metric": live and live.metric,
                          "live": live and live.live, "build": live and live.build,
                          "labelled": live.labelled if live else 0, "min_labelled": policy.min_labelled}
    return out


def _performance(p: dict) -> str:
    """The performance line of a bundle: the decisions' state, then the live metric over the horizon.

    >>> _performance({"state": "ok", "metric": "accuracy", "live": 0.9, "build": 0.95, "labelled": 40,
    ...               "min_labelled": 200})
    'ok; live accuracy 0.900 on 40 labelled rows (judged from 200) against 0.950 at build'
    >>> _performance({"state": "ok", "metric": None, "live": None, "build": None, "labelled": 0, "min_labelled": 200})
    'ok; no labelled rows in the horizon'
    """
    if not p["labelled"]:
        return f"{p['state']}; no labelled rows in the horizon"
    judged = "" if p["labelled"] >= p["min_labelled"] else f" (judged from {p['min_labelled']:,})"
    return (f"{p['state']}; live {p['metric'] or 'metric'} {_fmt(p['live'])} on {p['labelled']:,} labelled "
            f"rows{judged} against {_fmt(p['build'])} at build")


def _last_windows(store) -> dict[tuple[str, str], tuple]:
    """(fleet, device) -> (when its last window ended, the outbox backlog that window stated, windows its outbox
    dropped in all)."""
    import sqlalchemy as sa

    from . import schema as t

    w = t.windows
    per = (sa.select(w.c.fleet, w.c.device, sa.func.max(w.c.ended).label("ended"),
                     sa.func.max(w.c.id).label("last"), sa.func.sum(w.c.outbox_dropped).label("dropped"))
           .group_by(w.c.fleet, w.c.device).subquery())
    q = sa.select(per.c.fleet, per.c.device, per.c.ended, w.c.outbox_backlog, per.c.dropped).join(
        w, w.c.id == per.c.last)
    with store.engine.connect() as conn:
        return {(f, d): (e, backlog, int(dropped or 0)) for f, d, e, backlog, dropped in conn.execute(q)}


def _outbox(last: tuple | None) -> dict:
    """A device's ``last_window``, ``outbox_backlog`` (None before format 7) and ``outbox_dropped``."""
    ended, backlog, dropped = last or (None, None, 0)
    return {"last_window": _iso(ended), "outbox_backlog": backlog, "outbox_dropped": dropped}


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else iso(seconds)


def _decision(d) -> dict:
    return {"id": d.id, "fleet": d.fleet, "kind": d.kind, "time": iso(d.time), "bundle": d.bundle_sha256,
            "device": d.evidence.get("device"), "summary": d.evidence.get("summary", d.kind),
            "published": d.published}


def decision_list(store, *, fleet: str | None = None, last: int | None = None) -> list[dict]:
    """The stored decisions, oldest first (the latest ``last``), without their evidence."""
    return [_decision(d) for d in store.decisions(fleet, last=last)]


def load_policy(config) -> Policy:
    """The ``[policy]`` of ``config`` (fleet.toml), or the defaults without one."""
    if config is None:
        return Policy()
    from edgeml_runtime.tomlfile import read_toml

    return Policy.from_table(read_toml(config, FleetError, "fleet configuration").get("policy", {}), str(config))


# -- human output ---------------------------------------------------------------------------------

def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def render(report: dict) -> str:
    lines = []
    if not report["fleets"] and not report.get("rollouts"):
        return "no devices and no windows in the store yet: start edgeml fleet run, then the devices"
    for name, f in report["fleets"].items():
        online = sum(d["online"] for d in f["devices"])
        lines.append(f"fleet {name}: {len(f['devices'])} devices, {online} online")
        if f["devices"]:
            lines.append(f"  {'DEVICE':<16} {'ONLINE':<7} {'BUNDLE':<22} {'RUNTIME':<9} LAST WINDOW")
        for d in f["devices"]:
            bundle = f"{d['bundle_name']} {d['bundle_version']}" if d["bundle_name"] else \
                f"unknown {(d['bundle'] or '')[:12]}"
            lines.append(f"  {d['device']:<16} {'yes' if d['online'] else 'no':<7} {bundle:<22} "
                         f"{d['runtime_version'] or '-':<9} {d['last_window'] or '-'}")
        for sha, b in f["bundles"].items():
            title = f"{b['name']} {b['version']}" if b["known"] else "unknown bundle"
            if not b["known"]:
                lines.append(f"  {title} {sha[:12]}: {b['windows']:,} windows stored, not judged; add it with "
                             "edgeml registry add BUNDLE")
                continue
            lines.append(f"  bundle {title} ({sha[:12]}): {b['state']}; {len(b['drifted_devices'])} of "
                         f"{b['reporting']} reporting devices drifted, {b['drifted_slices']} of {b['slices']} "
                         f"slices; anomalies: {', '.join(b['anomalies']) or 'none'}")
            lines.append(f"    performance: {_performance(b['performance'])}")
            lines.append(f"    {'COLUMN':<28} {'LATEST PSI':>10} {'HORIZON PSI':>11}  STATUS")
            for col, c in b["columns"].items():
                lines.append(f"    {col:<28} {_fmt(c['latest_psi']):>10} {_fmt(c['horizon_psi']):>11}  "
                             f"{c['horizon_status'] or '-'}")
        d = f["last_decision"]
        lines.append(f"  last decision: #{d['id']} {d['kind']} at {d['time']}: {d['summary']}" if d else
                     "  no decision yet")
    return "\n".join(lines + _rollout_lines(report.get("rollouts", [])))


def _rollout_lines(found: list[dict]) -> list[str]:
    """The rollouts section: the running and paused ones, then the latest 3 others, one line each."""
    from .rollout_status import brief_line

    if not found:
        return []
    shown = [r for r in found if r["state"] in ("running", "paused")]
    shown += [r for r in found if r not in shown][:3]
    return ["rollouts:", *(f"  {r['fleet']}: {brief_line(r)}" for r in shown)]


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (docs/fleet.md gives its shape).")
@click.option("--fleet", "fleet_name", metavar="NAME", help="Only this fleet.")
@_STORE
@_CONFIG
def status_command(as_json, fleet_name, store_flag, config):
    """Devices (online, bundle, last window), per bundle the fleet's drift per column, anomalies, decisions."""
    try:
        policy = load_policy(config)
        with _open(store_flag, config) as store:
            report = fleet_status(store, policy, fleet=fleet_name)
    except EdgeMLError as exc:
        _fail(exc)
    click.echo(json.dumps(report, indent=2) if as_json else render(report))


@click.command("decisions")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--fleet", "fleet_name", metavar="NAME", help="Only this fleet.")
@click.option("--last", type=click.IntRange(min=1), help="Only the latest N.")
@_STORE
@_CONFIG
def decisions_command(as_json, fleet_name, last, store_flag, config):
    """The controller's decisions, oldest first: id, time, fleet, kind, bundle, device, summary, published."""
    try:
        with _open(store_flag, config) as store:
            found = decision_list(store, fleet=fleet_name, last=last)
    except EdgeMLError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    for d in found:
        where = f" {d['bundle'][:12]}" if d["bundle"] else ""
        device = f" {d['device']}" if d["device"] else ""
        click.echo(f"#{d['id']:<5} {d['time']}  {d['fleet']}{where}{device}  {d['kind']}: {d['summary']}"
                   f"{'' if d['published'] else '  (not published yet)'}")
    if not found:
        click.echo("no decisions yet", err=True)
