"""Staged rollouts: a signed release handed to a fleet wave by wave, each wave judged before the next one starts.

A rollout is one row of ``rollouts`` (its fleet, release, ``state``, current
``wave``, ``plan`` and ``reason``) and one row of ``rollout_devices`` per
device (its wave, when it was announced, its last update step). The states::

    running ──pass──▶ running (next wave) ──pass on the last wave──▶ done
       │  ▲                │
     pause resume        fail ──▶ aborted (a rollback release announced to every device announced)
       ▼  │                │
    paused ◀── inconclusive past the wave's timeout        abort (by hand, running or paused) ──▶ aborted

* :func:`start` plans the waves (:func:`~.rollout_verdict.plan_waves`: the
  canary, then cumulative shares) over the fleet's known devices, and keeps
  the release the fleet had before (``previous_release``: that of its latest
  rollout done, else its newest release below this one) to roll back to. One
  rollout of a fleet at a time.
* :func:`record_update` keeps every update step a device reports
  (``update_events``) and the last one per device of the rollout it names.
* :func:`advance` (the controller calls it on a timer) announces the
  current wave's devices not announced yet, through the ``announce``
  callable it is given, and judges the wave
  (:func:`~.rollout_verdict.judge_wave`). A pass moves to the next wave
  (announced in the same call) or ends the rollout ``done``; a fail aborts
  it and rolls back: a *new, higher* release of the previous bundle,
  signed with the keys given at start, announced to every device announced
  so far; an inconclusive wave past ``wave_timeout`` (counted from its first
  announcement, or from the last resume) pauses the rollout with the reason.
  A wave never passes on silence.
* :func:`pause`, :func:`resume`, :func:`abort` are the operator's; :func:`status`
  and :func:`rollouts` what ``edgeml rollout status`` and ``edgeml fleet
  status`` show.

Every transition is kept, with its time and reason, in the plan's
``transitions`` list (the row's ``updated`` and ``reason`` are the last one).
Waves are numbered from 1 in text; ``wave`` in the row and in JSON is the
index, from 0.

The numbers a rollout is judged by are in :mod:`.rollout_verdict`, the
rollback release and the rows judged in :mod:`.rollout_release`, the
report in :mod:`.rollout_status`; the commands (``edgeml rollout start|status|pause|resume|abort``) in
:mod:`.rollout_command`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import sqlalchemy as sa

from edgeml.errors import FleetError

from . import schema as t
from .rollout_release import bundle_of, rollback_record, version_of, window_rows
from .rollout_verdict import (
    Verdict,
    duration_text,
    judge_wave,
    parse_duration,
    parse_share,
    parse_waves,
    plan_waves,
)

STATES = ("running", "paused", "aborted", "done")
ACTIVE = ("running", "paused")
#: How much worse than the control devices' a wave's error rate may be, and on how many rows each side, at least.
ERROR_MARGIN, MIN_ROWS = 0.02, 200

#: ``announce(fleet, device, release_record, rollout_id)``: hand a release to one device (the controller publishes).
Announce = Callable[[str, str, object, int], None]
#: ``rows_of(fleet, devices, since, bundle) -> (bad rows, rows)``: the rows devices scored since a time (of one
#: bundle, or of any with None); :func:`window_rows` reads the store's drift windows.
RowsOf = Callable[[str, list[str], float, "str | None"], tuple[int, int]]


@dataclass(frozen=True)
class Rollout:
    """A ``rollouts`` row: ``plan`` holds the settings, the devices per wave, the rollback and the transitions."""

    id: int
    fleet: str
    release: int
    state: str
    created: float
    updated: float
    plan: dict
    wave: int
    reason: str | None
    previous_release: int | None

    @property
    def waves(self) -> list[list[str]]:
        return self.plan["devices"]

    def to_dict(self) -> dict:
        return asdict(self)


def start(store, *, fleet: str, release: int, canary: float | str, waves, abort_failure_rate: float | str,
          min_executed: int, wave_timeout: float | str, devices=None, now: float | None = None,
          keys: str | None = None, releases_dir: str | None = None) -> Rollout:
    """Plan and store a rollout of ``release`` to ``fleet`` (its known devices unless ``devices``), ``running``.

    ``keys`` and ``releases_dir`` (the release key folder and the release folders) are kept to sign a rollback;
    without them a failed wave aborts with nothing announced. :class:`FleetError` if the release does not exist,
    a rollout of the fleet is running or paused, or a setting is out of bounds (named).
    """
    from . import releases

    now = time.time() if now is None else now
    settings = _settings(canary, waves, abort_failure_rate, min_executed, wave_timeout)
    releases.get(store, fleet, release)
    ids = sorted(devices) if devices is not None else [d.device for d in store.devices(fleet)]
    if not ids:
        raise FleetError(f"fleet {fleet!r} has no known device: start the devices (their births name them) or "
                         "name the devices to update")
    planned = plan_waves(ids, settings["canary"], settings["waves"])
    plan = {**settings, "devices": planned, "keys": keys and str(keys),
            "releases": releases_dir and str(releases_dir), "rollback_release": None,
            "transitions": [_entry(now, None, "running", 0, f"started: {_plan_text(planned)}")]}
    r, rd = t.rollouts, t.rollout_devices
    with store._write() as conn:
        _lock(conn, fleet)
        busy = conn.execute(sa.select(r.c.id, r.c.state).where(r.c.fleet == fleet, r.c.state.in_(ACTIVE))).first()
        if busy is not None:
            raise FleetError(f"fleet {fleet!r} has rollout {busy.id} {busy.state} already: one rollout of a fleet "
                             f"at a time; let it finish, or edgeml rollout abort {busy.id}")
        row = {"fleet": fleet, "release": release, "state": "running", "created": now, "updated": now,
               "plan": plan, "wave": 0, "reason": plan["transitions"][0]["reason"],
               "previous_release": _previous_release(conn, fleet, release)}
        made = conn.execute(sa.insert(r).values(row).returning(r.c.id)).scalar_one()
        conn.execute(sa.insert(rd), [{"rollout": made, "device": d, "wave": i, "announced": None, "step": None,
                                      "reason": None, "updated": None}
                                     for i, wave in enumerate(planned) for d in wave])
        return _get(conn, made)


def _settings(canary, waves, abort_failure_rate, min_executed, wave_timeout) -> dict:
    if isinstance(min_executed, bool) or not isinstance(min_executed, int) or min_executed < 1:
        raise FleetError(f"min_executed {min_executed!r}: must be a whole number of devices, at least 1; e.g. 3")
    return {"canary": parse_share(canary, "canary", zero=True),
            "waves": parse_waves(waves) if isinstance(waves, str) else parse_waves(list(waves)),
            "abort_failure_rate": parse_share(abort_failure_rate, "abort_failure_rate", zero=True),
            "min_executed": min_executed, "wave_timeout": parse_duration(wave_timeout, "wave_timeout"),
            "error_margin": ERROR_MARGIN, "min_rows": MIN_ROWS}


def _plan_text(planned: list[list[str]]) -> str:
    return f"{sum(map(len, planned))} devices in {len(planned)} waves of " + ", ".join(str(len(w)) for w in planned)


def _previous_release(conn, fleet: str, release: int) -> int | None:
    """What the fleet's devices ran before, the bundle to roll back to: the release of its latest rollout that
    was done (a release made but never rolled out, or aborted, is not it); without one, its newest release below
    ``release`` (the first bundle, installed with the devices)."""
    r, rel = t.rollouts, t.releases
    done = conn.execute(sa.select(r.c.release).where(r.c.fleet == fleet, r.c.state == "done", r.c.release != release)
                        .order_by(r.c.id.desc()).limit(1)).scalar()
    if done is not None:
        return done
    return conn.execute(sa.select(sa.func.max(rel.c.version)).where(rel.c.fleet == fleet,
                                                                    rel.c.version < release)).scalar()


# -- the operator's transitions ------------------------------------------------------------------

def pause(store, rollout_id: int, reason: str = "paused by hand", *, now: float | None = None) -> Rollout:
    """Stop a running rollout where it is (nothing more is announced until :func:`resume`)."""
    return _move(store, rollout_id, ("running",), "paused", reason, now)


def resume(store, rollout_id: int, reason: str = "resumed by hand", *, now: float | None = None) -> Rollout:
    """Run a paused rollout again; its wave's timeout counts from now."""
    return _move(store, rollout_id, ("paused",), "running", reason, now)


def abort(store, rollout_id: int, reason: str = "aborted by hand", *, now: float | None = None) -> Rollout:
    """End a running or paused rollout: no device is announced the release any more (none is rolled back: the
    devices announced keep what they run; a failed wave's automatic abort is the one that rolls back)."""
    return _move(store, rollout_id, ACTIVE, "aborted", reason, now)


def _move(store, rollout_id, sources, state, reason, now, **plan) -> Rollout:
    now = time.time() if now is None else now
    with store._write() as conn:
        r = _get(conn, rollout_id)
        if r.state not in sources:
            verb = {"paused": "pause", "running": "resume", "aborted": "abort"}[state]
            raise FleetError(f"rollout {r.id} is {r.state}: only a {' or '.join(sources)} rollout can {verb}"
                             + ("" if r.state in ACTIVE else "; start another with edgeml rollout start"))
        _transition(conn, r, state, reason, now, **plan)
        return _get(conn, rollout_id)


def _transition(conn, r: Rollout, state: str, reason: str, now: float, *, wave: int | None = None,
                **plan) -> None:
    wave = r.wave if wave is None else wave
    entry = _entry(now, r.state, state, wave, reason)
    new_plan = {**r.plan, **plan, "transitions": [*r.plan["transitions"], entry]}
    conn.execute(sa.update(t.rollouts).where(t.rollouts.c.id == r.id).values(
        state=state, updated=now, reason=reason, wave=wave, plan=new_plan))


def _entry(now, source, state, wave, reason) -> dict:
    return {"time": now, "from": source, "to": state, "wave": wave, "reason": reason}


# -- what devices say ----------------------------------------------------------------------------

def record_update(store, fleet: str, device: str, payload: Mapping, received: float) -> bool:
    """Keep an update step ``device`` reported (``update_events``; the same step reported again is kept once) and,
    if it names a rollout of ``fleet`` and is of that rollout's release, make it the device's last step there (a
    final step is not replaced by a later report of an earlier one); whether the rollout's device row changed.
    ProtocolError if the payload is bad. The controller stores what it hears the same way, in its batches
    (:func:`.inserts.update_event`)."""
    from .inserts import update_event
    from .rollout_status import event_row

    row = event_row(fleet, device, payload, received)
    with store._write() as conn:
        return update_event(conn, row)[1]


# -- the controller's timer ----------------------------------------------------------------------

def advance(store, rollout_id: int, *, now: float, announce: Announce, rows_of: RowsOf | None = None) -> list[str]:
    """Move a running rollout on as far as its devices' reports allow; what it did, in order (nothing if it is
    not running). ``rows_of`` gives the rows a wave's and the control devices scored (:func:`window_rows` by
    default)."""
    from . import releases

    rows_of = window_rows(store) if rows_of is None else rows_of
    said: list[str] = []
    while True:
        r = get(store, rollout_id)
        if r.state != "running":
            return said
        said += _announce_wave(store, r, releases.get(store, r.fleet, r.release), now, announce)
        verdict = _judge(store, r, rows_of)
        if verdict.outcome == "pass":
            said.append(_pass(store, r, verdict, now))
            continue  # the next wave is announced, and judged, in this call
        if verdict.outcome == "fail":
            said += _fail(store, r, verdict, now, announce)
        elif now - _clock(store, r) >= r.plan["wave_timeout"]:
            reason = (f"wave {r.wave + 1} inconclusive after {duration_text(r.plan['wave_timeout'])}: "
                      f"{verdict.executed} of {verdict.devices} reported")
            said.append(f"rollout {r.id} paused: {reason}")
            _move(store, r.id, ("running",), "paused", reason, now)
        return said


def _announce_wave(store, r: Rollout, record, now: float, announce: Announce) -> list[str]:
    rd = t.rollout_devices
    with store._read() as conn:
        waiting = conn.execute(sa.select(rd.c.device).where(rd.c.rollout == r.id, rd.c.wave == r.wave,
                                                            rd.c.announced.is_(None))
                               .order_by(rd.c.device)).scalars().all()
    done: list[str] = []
    try:
        for device in waiting:
            announce(r.fleet, device, record, r.id)
            done.append(device)
    finally:  # what was announced is marked, even if a later announcement raised
        if done:
            with store._write() as conn:
                conn.execute(sa.update(rd).where(rd.c.rollout == r.id, rd.c.device.in_(done)).values(announced=now))
    return [f"rollout {r.id} wave {r.wave + 1}: announced release {r.release} to {d}" for d in done]


def _judge(store, r: Rollout, rows_of: RowsOf) -> Verdict:
    from .rollout_status import devices_of

    rows = devices_of(store, r.id)
    wave = {d["device"]: d["step"] for d in rows if d["wave"] == r.wave}
    control = [d["device"] for d in rows if d["announced"] is None and d["wave"] > r.wave]
    since = _clock(store, r)
    errors = {}
    if control:
        errors = {"canary_error": rows_of(r.fleet, sorted(wave), since, bundle_of(store, r)),
                  "control_error": rows_of(r.fleet, control, since, None)}
    return judge_wave(wave, abort_failure_rate=r.plan["abort_failure_rate"], min_executed=r.plan["min_executed"],
                      error_margin=r.plan["error_margin"], min_rows=r.plan["min_rows"], **errors)


def _clock(store, r: Rollout) -> float:
    """When the current wave's timeout started: its first announcement, or the last resume if later."""
    rd = t.rollout_devices
    with store._read() as conn:
        first = conn.execute(sa.select(sa.func.min(rd.c.announced)).where(rd.c.rollout == r.id,
                                                                          rd.c.wave == r.wave)).scalar()
    resumed = [e["time"] for e in r.plan["transitions"] if e["from"] == "paused" and e["to"] == "running"]
    return max([x for x in (first, *resumed) if x is not None], default=r.updated)


def _pass(store, r: Rollout, verdict: Verdict, now: float) -> str:
    last = r.wave + 1 >= len(r.waves)
    reason = f"wave {r.wave + 1} of {len(r.waves)} passed: {verdict.reason}"
    with store._write() as conn:
        _transition(conn, r, "done" if last else "running", reason, now, wave=r.wave if last else r.wave + 1)
    return f"rollout {r.id} {'done' if last else 'moves on'}: {reason}"


def _fail(store, r: Rollout, verdict: Verdict, now: float, announce: Announce) -> list[str]:
    from .rollout_status import announced_devices

    reason = f"wave {r.wave + 1} failed: {verdict.reason}"
    rollback, why_not = rollback_record(store, r, now)
    said = []
    if rollback is not None:
        devices = announced_devices(store, r.id)
        for device in devices:
            announce(r.fleet, device, rollback, r.id)
            said.append(f"rollout {r.id}: announced rollback release {version_of(rollback)} to {device}")
        reason += (f"; rolled back to the bundle of release {r.previous_release} as release {version_of(rollback)}, "
                   f"announced to {len(devices)} devices")
    else:
        reason += f"; not rolled back: {why_not}"
    _move(store, r.id, ("running",), "aborted", reason, now)
    return [*said, f"rollout {r.id} aborted: {reason}"]


# -- reading -------------------------------------------------------------------------------------

def get(store, rollout_id: int) -> Rollout:
    """Rollout ``rollout_id``; :class:`FleetError` if there is none."""
    with store._read() as conn:
        return _get(conn, rollout_id)


def _get(conn, rollout_id: int) -> Rollout:
    row = conn.execute(sa.select(t.rollouts).where(t.rollouts.c.id == rollout_id)).mappings().first()
    if row is None:
        raise FleetError(f"there is no rollout {rollout_id}; list them with edgeml rollout status --fleet FLEET")
    return Rollout(**row)


def _lock(conn, fleet: str) -> None:
    """Hold the fleet's rollout lock to the end of the transaction (SQLite's write transactions hold the file)."""
    if conn.dialect.name == "postgresql":
        digest = hashlib.sha256(f"edgeml-rollout\0{fleet}".encode()).digest()
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                     {"key": int.from_bytes(digest[:8], "big", signed=True)})


def status(store, rollout_id: int | None = None, *, fleet: str | None = None) -> dict:
    """Rollout ``rollout_id``, or the latest of ``fleet``, with its waves and devices (:mod:`.rollout_status`)."""
    from .rollout_status import report

    return report(store, rollout_id, fleet)


def rollouts(store, fleet: str | None = None) -> list[dict]:
    """Every rollout (of ``fleet``), newest first, in brief: what ``edgeml fleet status`` lists."""
    from .rollout_status import summaries

    return summaries(store, fleet)


__all__ = ["ACTIVE", "STATES", "Rollout", "Verdict", "abort", "advance", "get", "judge_wave", "pause", "plan_waves",
           "record_update", "resume", "rollouts", "start", "status", "window_rows"]
