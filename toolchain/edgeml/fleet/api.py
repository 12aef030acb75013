"""The controller's read-only JSON API (what the dashboard draws) and its live event stream, on its HTTP server.

Every answer is JSON (``application/json``), read from the store when asked;
a bad parameter is 400 with ``{"error": ...}`` naming it, a fleet, bundle or
rollout that does not exist 404. Times are ISO 8601 UTC strings or seconds
since the epoch (``start``/``end`` of slices). The routes, under ``/api/v1``:

==============================================  ============================================================
``GET /api/v1/status[?fleet=F]``                 :func:`.status.fleet_status`: devices (online, bundle, last
                                                 window), per bundle the state, anomalies, per column PSI,
                                                 the last decision; the rollouts
``GET /api/v1/decisions[?fleet=F&last=N]``       the decisions, newest last, with their evidence's summary
``GET /api/v1/decisions/<id>``                   one decision with its whole evidence
``GET /api/v1/drift?fleet=F&bundle=B[&device=D]`` the heatmap (:func:`.views.drift_grid`): slices × columns
``GET /api/v1/drift/cell?fleet=F&bundle=B&column=C&start=S[&device=D]``  one cell (:func:`.views.drift_cell`),
                                                 its slice by its start: the reference's shares beside the
                                                 slice's counts
``GET /api/v1/models[?fleet=F]``                 registry versions (status, aliases, lineage) and retrains
                                                 (trigger, status, challenger's and champion's scores)
``GET /api/v1/rollouts[?fleet=F]``               rollouts in brief; ``/api/v1/rollouts/<id>``: waves, each
                                                 device's last update step, transitions
``GET /api/v1/events``                           server-sent events: ``change`` with the store's counts and
                                                 latest times (windows, decisions, update steps, births and
                                                 deaths, retrains started or finished, registry versions,
                                                 rollouts) whenever one moves, polled every second; a comment
                                                 every 15 s
==============================================  ============================================================
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator

import sqlalchemy as sa

from edgeml.errors import EdgeMLError, FleetError

from . import schema as t
from .files import Request, Response

JSON = "application/json"
#: Seconds between two looks at the store by the event stream, and between two keep-alive comments.
POLL_SECONDS, KEEPALIVE_SECONDS = 1.0, 15.0


class Api:
    """The routes above, over ``store`` judged by ``policy``; :meth:`mount` adds them to a file server."""

    def __init__(self, store, policy, *, stopping: threading.Event | None = None, clock=time.time,
                 poll_seconds: float = POLL_SECONDS):
        self.store, self.policy, self.clock = store, policy, clock
        self.stopping = stopping or threading.Event()
        self.poll_seconds = poll_seconds

    def mount(self, server) -> None:
        routes: dict[str, Callable[[Request], object]] = {
            r"/api/v1/status": self.status,
            r"/api/v1/decisions": self.decisions,
            r"/api/v1/decisions/(?P<id>[0-9]{1,18})": self.decision,
            r"/api/v1/drift": self.drift,
            r"/api/v1/drift/cell": self.cell,
            r"/api/v1/models": self.models,
            r"/api/v1/rollouts": self.rollouts,
            r"/api/v1/rollouts/(?P<id>[0-9]{1,18})": self.rollout,
        }
        for pattern, handler in routes.items():
            server.route("GET", pattern, _answering(handler))
        server.route("GET", r"/api/v1/events", self.events)

    # -- the routes ---------------------------------------------------------------------------------------
    def status(self, request: Request) -> dict:
        from .status import fleet_status

        return fleet_status(self.store, self.policy, fleet=request.query.get("fleet"), now=self.clock())

    def decisions(self, request: Request) -> list[dict]:
        from .status import decision_list

        last = _whole(request, "last", None)
        return decision_list(self.store, fleet=request.query.get("fleet"), last=last)

    def decision(self, request: Request) -> dict:
        from edgeml_runtime.protocol.status import iso

        d = t.decisions
        with self.store._read() as conn:
            row = conn.execute(sa.select(d).where(d.c.id == int(request.match["id"]))).mappings().first()
        if row is None:
            raise _NotFound(f"there is no decision {request.match['id']}")
        return {"id": row["id"], "fleet": row["fleet"], "bundle": row["bundle_sha256"], "kind": row["kind"],
                "time": iso(row["time"]), "published": row["published"], "evidence": row["evidence"]}

    def drift(self, request: Request) -> dict:
        from .views import drift_grid

        return drift_grid(self.store, self.policy, _needed(request, "fleet"), _needed(request, "bundle"),
                          device=request.query.get("device"), now=self.clock())

    def cell(self, request: Request) -> dict:
        from .views import drift_cell

        return drift_cell(self.store, self.policy, _needed(request, "fleet"), _needed(request, "bundle"),
                          _needed(request, "column"), _seconds(request, "start"),
                          device=request.query.get("device"), now=self.clock())

    def models(self, request: Request) -> dict:
        from . import retrain, versions

        fleet = request.query.get("fleet")
        return {"versions": [v.to_dict() for v in versions.versions(self.store, fleet)],
                "retrains": [r.to_dict() for r in retrain.retrains(self.store, fleet)]}

    def rollouts(self, request: Request) -> list[dict]:
        from .rollout import rollouts

        return rollouts(self.store, request.query.get("fleet"))

    def rollout(self, request: Request) -> dict:
        from .rollout import status

        try:
            return status(self.store, int(request.match["id"]))
        except FleetError as exc:
            raise _NotFound(str(exc)) from None

    # -- live -----------------------------------------------------------------------------------------------
    def events(self, request: Request) -> Response:
        """``text/event-stream``: ``change`` events with :meth:`counts` whenever they move (the first at once)."""
        return Response(200, {"Content-Type": "text/event-stream"}, stream=self._stream())

    def counts(self) -> dict:
        """The store's counts the dashboard watches: when one moves, something new is there to draw."""
        d, r = t.devices, t.retrains
        watched = {  # each moves when what it names changes: a count, or the latest time something happened
            "windows": sa.select(sa.func.count()).select_from(t.windows),
            "last_decision": sa.select(sa.func.max(t.decisions.c.id)),
            "update_steps": sa.select(sa.func.count()).select_from(t.update_events),
            "online": sa.select(sa.func.count()).select_from(d).where(d.c.online),
            "last_birth": sa.select(sa.func.max(d.c.birth_received)),
            "last_death": sa.select(sa.func.max(d.c.death_received)),
            "retrains": sa.select(sa.func.count()).select_from(r),
            "retrain_moved": sa.select(sa.func.max(sa.func.coalesce(r.c.finished, r.c.started, r.c.requested))),
            "versions": sa.select(sa.func.count()).select_from(t.model_versions),
            "rollout_updated": sa.select(sa.func.max(t.rollouts.c.updated)),
        }
        with self.store._read() as conn:
            one = conn.execute(sa.select(*(q.scalar_subquery() for q in watched.values()))).one()
        return dict(zip(watched, one, strict=True))

    def _stream(self) -> Iterator[bytes]:
        last, quiet = None, 0.0
        while not self.stopping.is_set():
            try:
                now = self.counts()
            except EdgeMLError as exc:  # the store is away: say so, keep the stream
                yield _event("error", {"error": str(exc)})
                now = last
            if now != last:
                yield _event("change", now)
                last, quiet = now, 0.0
            elif quiet >= KEEPALIVE_SECONDS:
                yield b": keep-alive\n\n"
                quiet = 0.0
            self.stopping.wait(self.poll_seconds)
            quiet += self.poll_seconds


class _BadRequest(Exception):  # noqa: N818 - control flow inside this module: answered 400, never raised out
    pass


class _NotFound(Exception):  # noqa: N818 - answered 404
    pass


def _answering(handler: Callable[[Request], object]) -> Callable[[Request], Response]:
    """``handler`` whose value is answered as JSON: a bad parameter 400, a missing thing 404, with the reason."""
    def answer(request: Request) -> Response:
        try:
            return _json(200, handler(request))
        except _BadRequest as exc:
            return _json(400, {"error": str(exc)})
        except _NotFound as exc:
            return _json(404, {"error": str(exc)})
        except FleetError as exc:  # a fleet, bundle or column the store does not know
            return _json(404, {"error": str(exc)})

    return answer


def _json(status: int, value) -> Response:
    return Response(status, {"Content-Type": JSON}, json.dumps(value, default=_default).encode())


def _default(value):
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _event(name: str, value) -> bytes:
    return f"event: {name}\ndata: {json.dumps(value, default=_default)}\n\n".encode()


def _needed(request: Request, key: str) -> str:
    value = request.query.get(key)
    if not value:
        raise _BadRequest(f"{request.path} needs ?{key}=...")
    return value


def _seconds(request: Request, key: str) -> float:
    value = _needed(request, key)
    try:
        return float(value)
    except ValueError:
        raise _BadRequest(f"{key} = {value!r}: give seconds since the epoch, a slice's start in /api/v1/drift") \
            from None


def _whole(request: Request, key: str, default, *, needed: bool = False):
    value = request.query.get(key)
    if value is None:
        if needed:
            raise _BadRequest(f"{request.path} needs ?{key}=N (a whole number)")
        return default
    if not value.isdigit():
        raise _BadRequest(f"{key} = {value!r}: give a whole number")
    return int(value)


__all__ = ["Api", "JSON"]
