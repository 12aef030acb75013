"""Over-the-air updates on the wire: the controller's release announcements and the device's update steps.

The controller announces a release retained at QoS 1 on
``edgeml/<fleet>/_controller/release/<device>`` (one device: a rollout's
wave) or ``edgeml/<fleet>/_controller/release`` (the whole fleet)
(:func:`release_topic`); the payload (:func:`announcement`, schema
``announcement``) carries the signed release and the signed root it is
checked against, and where to fetch the bundle's archive on the
controller's HTTP server. Nothing in an announcement is trusted for what it
says: the device checks both signatures with the root key it was
provisioned with (:mod:`edgeml_runtime.update`), so a forged or replayed
announcement is refused with a reason, never installed. No device can
publish there: ``_controller`` is no device id, and the generated ACL lets a
device read its own and its fleet's release topic only.

The device reports every step of an update on ``edgeml/<fleet>/<device>/update``
(kind ``update``, QoS 1, through its durable outbox, never dropped by its
bound): :func:`update_status`, schema ``update``. The steps, in order:
``offered`` (an announcement was heard), ``downloading``, ``verifying``,
``testing`` (the self-test on the bundle's sample rows), ``active`` (swapped
in; the health gate runs), then ``committed``, or ``failed`` (refused or
broken before the switch: ``refusal`` says why when a check refused it) or
``rolled_back`` (the health gate or a crash sent it back to the previous
bundle).

>>> release_topic("plant-a"), release_topic("plant-a", "pi-07")
('edgeml/plant-a/_controller/release', 'edgeml/plant-a/_controller/release/pi-07')
>>> parse_release_topic("edgeml/plant-a/_controller/release/pi-07")
('plant-a', 'pi-07')
>>> from edgeml_runtime.protocol.topics import DeviceTopics
>>> s = update_status(DeviceTopics("plant-a", "pi-07"), release=7, bundle="ab" * 32, step="failed",
...                   time="2026-12-03T10:00:00.000Z", reason="the release is signed by a revoked key",
...                   refusal="revoked_key")
>>> s["step"], s["refusal"], s["format_version"]
('failed', 'revoked_key', 7)
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import ProtocolError
from .envelopes import FORMAT_VERSION, _head
from .status import CONTROLLER
from .topics import ROOT, DeviceTopics, level_problem

#: An update's steps, in the order a successful one takes them (then the two ways it can end otherwise).
STEPS = ("offered", "downloading", "verifying", "testing", "active", "committed", "failed", "rolled_back")
#: The steps after which a device is done with a release: a rollout counts these as executed.
FINAL_STEPS = ("committed", "failed", "rolled_back")
#: Why a device refused a release (``refusal``): the checks of :mod:`edgeml_runtime.update`.
REFUSALS = ("bad_signature", "unknown_key", "revoked_key", "old_version", "expired", "other_fleet", "bad_root",
            "old_root", "bad_archive", "malformed")
#: What the device reports of its health gate: windows, rows and bad rows scored by the new bundle, and its mean
#: one-row latency in milliseconds.
HEALTH_KEYS = ("windows", "rows", "bad", "latency_ms")
#: The last level of the release topics below ``_controller``.
RELEASE = "release"


def release_topic(fleet: str, device: str | None = None) -> str:
    """Where the controller announces a release: to one ``device`` of ``fleet``, or (None) to all of it."""
    for name, value in (("fleet", fleet), ("device", device)):
        problem = value is not None and level_problem(value)
        if problem:
            raise ProtocolError(f"{name} {value!r} {problem}")
    base = f"{ROOT}/{fleet}/{CONTROLLER}/{RELEASE}"
    return base if device is None else f"{base}/{device}"


def parse_release_topic(topic: str) -> tuple[str, str | None]:
    """``(fleet, device)`` of a release topic (device None for the fleet's); :class:`ProtocolError` if not one."""
    levels = topic.split("/")
    if len(levels) not in (4, 5) or levels[0] != ROOT or levels[2:4] != [CONTROLLER, RELEASE]:
        raise ProtocolError(f"topic {topic!r} is not a release topic ({ROOT}/<fleet>/{CONTROLLER}/{RELEASE}"
                            "[/<device>])")
    device = levels[4] if len(levels) == 5 else None
    release_topic(levels[1], device)
    return levels[1], device


def announcement(fleet: str, *, release: Mapping, root: Mapping, archive: str, time: str,
                 device: str | None = None, rollout: int | None = None) -> dict:
    """The announcement of a signed ``release`` (checked against the signed ``root``) whose bundle archive is at
    the controller's HTTP path ``archive``, for one ``device`` or the fleet, as part of ``rollout`` or not."""
    release_topic(fleet, device)
    for name, doc in (("release", release), ("root", root)):
        if not isinstance(doc, Mapping) or not {"signed", "signatures"} <= doc.keys():
            raise ProtocolError(f"an announcement's {name} must be a signed document (signed, signatures)")
    if not isinstance(archive, str) or not archive.startswith("/"):
        raise ProtocolError(f"an announcement's archive must be a path on the controller's HTTP server, not "
                            f"{archive!r}")
    return {"format_version": FORMAT_VERSION, "time": time, "fleet": fleet, "device": device,
            "rollout": rollout, "release": dict(release), "root": dict(root), "archive": archive}


def update_status(device: DeviceTopics, *, release: int, bundle: str | None, step: str, time: str,
                  rollout: int | None = None, reason: str | None = None, refusal: str | None = None,
                  health: Mapping | None = None) -> dict:
    """One step of an update of ``device`` to ``release`` (its bundle identity, when known)."""
    if step not in STEPS:
        raise ProtocolError(f"update step {step!r} is not one of {', '.join(STEPS)}")
    if refusal is not None and refusal not in REFUSALS:
        raise ProtocolError(f"refusal {refusal!r} is not one of {', '.join(REFUSALS)}")
    if health is not None and set(health) != set(HEALTH_KEYS):
        raise ProtocolError(f"an update's health has {', '.join(HEALTH_KEYS)}, not {sorted(health)}")
    return {**_head(device), "time": time, "release": int(release), "bundle": bundle, "rollout": rollout,
            "step": step, "reason": reason, "refusal": refusal,
            "health": dict(health) if health is not None else None}


__all__ = ["FINAL_STEPS", "HEALTH_KEYS", "REFUSALS", "STEPS", "announcement", "parse_release_topic",
           "release_topic", "update_status"]
