"""The fleet controller's status topic and its payload: the fleet's state after each decision, retained.

The controller publishes, retained at QoS 1, on ``edgeml/<fleet>/_controller/status``
(:func:`status_topic`): a level starting with ``_`` is no device id (the
topics' ``level_problem`` refuses it on every device), so no device can take
it, and the controller, subscribed only to births, drift windows and deaths,
never hears itself. The payload (:func:`status_payload`, schema ``status``):
the fleet's state per bundle (``ok``, ``drift`` or ``unknown``: windows of a
bundle the registry does not hold), its live ``performance`` (``ok``, or
``drop`` after a ``performance`` decision until ``performance_recovered``),
the devices it holds anomalous, and the decision that led to it (id, kind,
time, bundle, device, summary).

>>> status_topic("plant-a")
'edgeml/plant-a/_controller/status'
>>> status_topic("_x")
Traceback (most recent call last):
...
edgeml_runtime.errors.ProtocolError: fleet '_x' starts with '_': names starting with '_' or '$' are reserved for \
the fleet's own topics
>>> payload = status_payload("plant-a", {"ab" * 32: {"name": "demo", "version": "1", "state": "drift",
...                                                  "anomalies": []}},
...                          {"id": 7, "kind": "drift", "time": 1764590400.0, "bundle": "ab" * 32, "device": None,
...                           "summary": "3 of 5 devices drifted"})
>>> payload["decision"]["time"], payload["format_version"]
('2025-12-01T12:00:00.000Z', 7)
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from ..errors import ProtocolError
from .envelopes import FORMAT_VERSION
from .topics import ROOT, level_problem

#: The controller's own topic level below a fleet, and the last level of its status topic.
CONTROLLER = "_controller"
#: What a decision may be: the fleet drifted or recovered, one device is anomalous or no longer, a bundle unknown,
#: the bundle's live metric dropped beyond the policy's margin or came back.
DECISION_KINDS = ("drift", "recovered", "anomaly", "anomaly_cleared", "unknown_bundle", "performance",
                  "performance_recovered")
#: A bundle's state in a status payload.
STATES = ("ok", "drift", "unknown")
#: A bundle's live performance in a status payload.
PERFORMANCE_STATES = ("ok", "drop")


def status_topic(fleet: str) -> str:
    """The topic the controller publishes ``fleet``'s status on, retained."""
    problem = level_problem(fleet)
    if problem:
        raise ProtocolError(f"fleet {fleet!r} {problem}")
    return f"{ROOT}/{fleet}/{CONTROLLER}/status"


def iso(seconds: float) -> str:
    """Seconds since the epoch as the protocol writes times (UTC, milliseconds, ``Z``)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def status_payload(fleet: str, bundles: Mapping[str, Mapping], decision: Mapping) -> dict:
    """The status message: ``bundles`` (identity → name, version, state, performance (``ok`` if not given),
    anomalies) after ``decision`` (id, kind, time in seconds since the epoch, bundle, device, summary)."""
    status_topic(fleet)
    if decision["kind"] not in DECISION_KINDS:
        raise ProtocolError(f"decision kind {decision['kind']!r} is not one of {', '.join(DECISION_KINDS)}")
    for sha, b in bundles.items():
        if b["state"] not in STATES:
            raise ProtocolError(f"bundle {sha[:12]}: state {b['state']!r} is not one of {', '.join(STATES)}")
        if b.get("performance", "ok") not in PERFORMANCE_STATES:
            raise ProtocolError(f"bundle {sha[:12]}: performance {b['performance']!r} is not one of "
                                f"{', '.join(PERFORMANCE_STATES)}")
    return {"format_version": FORMAT_VERSION, "fleet": fleet, "time": iso(decision["time"]),
            "bundles": {sha: {"name": b.get("name"), "version": b.get("version"), "state": b["state"],
                              "performance": b.get("performance", "ok"), "anomalies": sorted(b.get("anomalies", ()))}
                        for sha, b in bundles.items()},
            "decision": {"id": int(decision["id"]), "kind": decision["kind"], "time": iso(decision["time"]),
                         "bundle": decision.get("bundle"), "device": decision.get("device"),
                         "summary": str(decision["summary"])}}
