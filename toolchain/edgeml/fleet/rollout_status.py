"""What the store says of rollouts: the report ``edgeml rollout status`` prints, and the rows devices' updates make.

:func:`report` is one rollout in full (``--json`` prints it)::

    {"id", "fleet", "release", "state", "wave" (index from 0), "waves" (count), "reason", "created", "updated",
     "previous_release", "rollback_release", "settings": {canary, waves, abort_failure_rate, min_executed,
     wave_timeout, error_margin, min_rows},
     "plan": [{"wave", "devices", "announced", "executed", "failed"}, ...],
     "devices": [{"device", "wave", "announced", "step", "reason", "updated"}, ...],
     "transitions": [{"time", "from", "to", "wave", "reason"}, ...]}

:func:`summaries` gives every rollout in brief (id, fleet, release, state,
wave, waves, size: its number of devices, reason, times, previous and
rollback release): ``edgeml fleet status``'s ``rollouts``. Times are the
protocol's ISO text (UTC, ``Z``).

:func:`event_row` checks an update payload (``protocol.updates``) and makes
its ``update_events`` row:

>>> row = event_row("plant-a", "pi-07", {"time": "2026-12-03T10:00:00.000Z", "release": 7, "rollout": 3,
...                                      "step": "committed", "reason": None, "refusal": None}, 1796292000.5)
>>> row["time"], row["release"], row["rollout"], row["step"]
(1796292000.0, 7, 3, 'committed')
>>> event_row("plant-a", "pi-07", {"time": "2026-12-03T10:00:00Z", "release": 7, "step": "done"}, 0.0)
Traceback (most recent call last):
...
edgeml_runtime.errors.ProtocolError: update of pi-07 (fleet plant-a): step 'done' is not one of offered, \
downloading, verifying, testing, active, committed, failed, rolled_back
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

import sqlalchemy as sa

from edgeml.errors import FleetError
from edgeml_runtime.errors import ProtocolError
from edgeml_runtime.protocol.status import iso
from edgeml_runtime.protocol.updates import HEALTH_KEYS, REFUSALS

from . import schema as t
from .rollout_verdict import FAILED, FINAL, STEPS, duration_text

_SETTINGS = ("canary", "waves", "abort_failure_rate", "min_executed", "wave_timeout", "error_margin", "min_rows")


def event_row(fleet: str, device: str, payload: Mapping, received: float, *, where: str | None = None) -> dict:
    """The ``update_events`` row of an update payload; ProtocolError naming ``where`` (the topic, when received)
    and the field if it is not one (schema ``update`` of :mod:`edgeml_runtime.protocol`)."""
    where = where or f"update of {device} (fleet {fleet})"
    if not isinstance(payload, Mapping):
        raise ProtocolError(f"{where}: the payload is a {type(payload).__name__}, not a JSON object")
    step = payload.get("step")
    if step not in STEPS:
        raise ProtocolError(f"{where}: step {step!r} is not one of {', '.join(STEPS)}")
    for key, kind in (("release", int), ("rollout", int | None), ("reason", str | None), ("refusal", str | None),
                      ("bundle", str | None)):
        value = payload.get(key)
        if isinstance(value, bool) or not isinstance(value, kind) or (key in ("release", "rollout") and
                                                                      value is not None and value < 1):
            raise ProtocolError(f"{where}: {key} {value!r:.70} is not {_kinds[key]}")
    if payload.get("refusal") not in (None, *REFUSALS):
        raise ProtocolError(f"{where}: refusal {payload['refusal']!r:.40} is not one of {', '.join(REFUSALS)}")
    if payload.get("bundle") is not None and not _IDENTITY(payload["bundle"]):
        raise ProtocolError(f"{where}: bundle {payload['bundle']!r:.70} is not a bundle identity (64 lowercase hex "
                            "digits) or null")
    _check_health(payload.get("health"), where)
    try:
        when = datetime.fromisoformat(payload["time"]).timestamp()
    except (KeyError, TypeError, ValueError):
        raise ProtocolError(f"{where}: time {payload.get('time')!r} is not a UTC time such as "
                            "2026-12-03T10:00:00.000Z") from None
    return {"fleet": fleet, "device": device, "received": received, "time": when, "release": payload["release"],
            "rollout": payload.get("rollout"), "step": step, "reason": payload.get("reason"),
            "refusal": payload.get("refusal"), "payload": dict(payload)}


def _check_health(health, where: str) -> None:
    """An update's ``health``: null, or the gate's windows, rows and bad rows (whole numbers from 0) and its mean
    latency (a number from 0, or null)."""
    if health is None:
        return
    if not isinstance(health, Mapping) or set(health) != set(HEALTH_KEYS):
        shown = sorted(health) if isinstance(health, Mapping) else type(health).__name__
        raise ProtocolError(f"{where}: health is {shown!r:.80}, not null or an object of {', '.join(HEALTH_KEYS)}")
    for key in HEALTH_KEYS:
        value, latency = health[key], key == "latency_ms"
        if value is None and latency:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float if latency else int) or not 0 <= value < 2**63:
            what = "number" if latency else "whole number"
            raise ProtocolError(f"{where}: health.{key} is {value!r:.40}, not a {what} from 0")


_kinds = {"release": "a release version (a whole number from 1)", "rollout": "a rollout id or null",
          "reason": "a text or null", "refusal": "a refusal reason or null",
          "bundle": "a bundle identity or null"}
_IDENTITY = re.compile("[0-9a-f]{64}").fullmatch


def devices_of(store, rollout_id: int) -> list[dict]:
    """The ``rollout_devices`` rows of a rollout, by wave and device."""
    rd = t.rollout_devices
    with store._read() as conn:
        return [dict(row) for row in conn.execute(sa.select(rd).where(rd.c.rollout == rollout_id)
                                                  .order_by(rd.c.wave, rd.c.device)).mappings()]


def announced_devices(store, rollout_id: int) -> list[str]:
    """The devices of a rollout announced so far, sorted."""
    return sorted(d["device"] for d in devices_of(store, rollout_id) if d["announced"] is not None)


def report(store, rollout_id: int | None, fleet: str | None) -> dict:
    """Rollout ``rollout_id``, or the latest of ``fleet``, in full (see the module)."""
    from .rollout import get

    if rollout_id is None:
        if fleet is None:
            raise FleetError("name a rollout (edgeml rollout status ID) or a fleet (--fleet NAME)")
        found = summaries(store, fleet)
        if not found:
            raise FleetError(f"fleet {fleet!r} has no rollout; start one with edgeml rollout start RELEASE --fleet "
                             f"{fleet}")
        rollout_id = found[0]["id"]
    r = get(store, rollout_id)
    if fleet is not None and r.fleet != fleet:
        raise FleetError(f"rollout {r.id} is of fleet {r.fleet!r}, not {fleet!r}")
    devices = devices_of(store, r.id)
    plan = [{"wave": i, "devices": len(wave), "announced": sum(d["announced"] is not None for d in mine),
             "executed": sum(d["step"] in FINAL for d in mine), "failed": sum(d["step"] in FAILED for d in mine)}
            for i, wave in enumerate(r.waves) for mine in [[d for d in devices if d["wave"] == i]]]
    return {**_brief(r), "settings": {k: r.plan[k] for k in _SETTINGS}, "plan": plan,
            "devices": [{**{k: d[k] for k in ("device", "wave", "step", "reason")},
                         "announced": _iso(d["announced"]), "updated": _iso(d["updated"])} for d in devices],
            "transitions": [{**e, "time": iso(e["time"])} for e in r.plan["transitions"]]}


def summaries(store, fleet: str | None = None) -> list[dict]:
    """Every rollout (of ``fleet``), newest first: id, fleet, release, state, wave, waves, reason, times."""
    from .rollout import Rollout

    r = t.rollouts
    q = sa.select(r).order_by(r.c.id.desc())
    if fleet is not None:
        q = q.where(r.c.fleet == fleet)
    with store._read() as conn:
        return [_brief(Rollout(**row)) for row in conn.execute(q).mappings()]


def _brief(r) -> dict:
    return {"id": r.id, "fleet": r.fleet, "release": r.release, "state": r.state, "wave": r.wave,
            "waves": len(r.waves), "size": sum(map(len, r.waves)), "reason": r.reason,
            "created": iso(r.created), "updated": iso(r.updated), "previous_release": r.previous_release,
            "rollback_release": r.plan.get("rollback_release")}


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else iso(seconds)


# -- text ----------------------------------------------------------------------------------------

def brief_line(s: dict) -> str:
    """One rollout in a line, as ``edgeml fleet status`` lists it.

    >>> brief_line({"id": 3, "release": 7, "state": "paused", "wave": 1, "waves": 3, "size": 20,
    ...             "reason": "wave 2 inconclusive after 30m: 2 of 5 reported", "rollback_release": None})
    'rollout #3 of release 7: paused at wave 2 of 3 (20 devices): wave 2 inconclusive after 30m: 2 of 5 reported'
    """
    where = "" if s["state"] == "done" else f" at wave {s['wave'] + 1} of {s['waves']}"
    back = f" (rollback release {s['rollback_release']})" if s["rollback_release"] is not None else ""
    return f"rollout #{s['id']} of release {s['release']}: {s['state']}{where} ({s['size']} devices){back}: " \
           f"{s['reason']}"


def render(rep: dict) -> str:
    """``edgeml rollout status`` without ``--json``: the rollout, its waves, its devices, its transitions."""
    st = rep["settings"]
    lines = [brief_line(rep),
             f"  fleet {rep['fleet']}; canary {st['canary']:.0%}, waves {', '.join(f'{w:.0%}' for w in st['waves'])}; "
             f"abort above {st['abort_failure_rate']:.0%} failed of at least {st['min_executed']} executed; wave "
             f"timeout {duration_text(st['wave_timeout'])}; previous release {rep['previous_release'] or '-'}",
             f"  {'WAVE':<6} {'DEVICES':>7} {'ANNOUNCED':>9} {'EXECUTED':>8} {'FAILED':>6}"]
    for w in rep["plan"]:
        mark = " <" if w["wave"] == rep["wave"] and rep["state"] in ("running", "paused") else ""
        lines.append(f"  {w['wave'] + 1:<6} {w['devices']:>7} {w['announced']:>9} {w['executed']:>8} "
                     f"{w['failed']:>6}{mark}")
    lines.append(f"  {'DEVICE':<16} {'WAVE':<5} {'STEP':<12} {'ANNOUNCED':<25} REASON")
    for d in rep["devices"]:
        lines.append(f"  {d['device']:<16} {d['wave'] + 1:<5} {d['step'] or '-':<12} {d['announced'] or '-':<25} "
                     f"{d['reason'] or ''}".rstrip())
    lines.append("  transitions:")
    lines += [f"    {e['time']}  {e['from'] or '-'} -> {e['to']} (wave {e['wave'] + 1}): {e['reason']}"
              for e in rep["transitions"]]
    return "\n".join(lines)
