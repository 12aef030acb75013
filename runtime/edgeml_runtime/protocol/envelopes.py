"""The messages a device publishes, as the fleet controller reads them: one builder per kind, one version.

Every payload is a JSON object carrying ``format_version``: the version of
this whole protocol (topics, envelopes, the window verdict), one number for
every kind of message, so a consumer checks one thing. It changes whenever a
payload's layout or meaning does; a consumer refuses versions it does not
know (:func:`decode` does). Version 1 had no ``format_version`` in
predictions and no bundle identity; version 2 added both; version 3 put the
verdict thresholds of the birth's ``window`` in ``window.rule`` (a
:class:`~.verdict.VerdictRule`); version 4 calibrates the verdict: a
significance test per column at ``rule.alpha`` (Bonferroni-corrected),
together with the PSI thresholds, and every judged column carries its
``p_value``, every verdict its ``tests`` and ``level``; version 5 adds a
drift window's ``performance``, the metric counts of its labelled rows
(:mod:`.performance`); version 6 adds the ``update`` kind (a device's
update steps, :mod:`.updates`) and a drift window's ``latency`` (the rows the
engine timed and their seconds); version 7 adds a drift window's
``outbox_backlog`` (the messages waiting in the device's outbox when it was
stored). The JSON Schemas of each kind (:mod:`.schemas`) say
``"format_version": {"const": 7}``. :func:`decode` also reads versions 4, 5
and 6 (a device of version 4 sends no ``performance``, of versions 4 and 5
no ``latency`` and no ``update`` messages, of versions 4 to 6 no
``outbox_backlog``; nothing else changed).

Example:

>>> from edgeml_runtime.protocol.topics import DeviceTopics
>>> death(DeviceTopics("plant-a", "pi-07"), bd_seq=12, reason="lost")
{'format_version': 7, 'device': 'pi-07', 'fleet': 'plant-a', 'bdSeq': 12, 'reason': 'lost'}
>>> topic, payload = decode("edgeml/plant-a/pi-07/death", b'{"format_version": 5, "bdSeq": 12}')
>>> topic.kind, payload["bdSeq"]
('death', 12)
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from ..errors import ProtocolError
from .topics import DeviceTopics, Topic, parse_topic
from .verdict import VerdictRule

#: The protocol version every payload states as ``format_version``.
FORMAT_VERSION = 7
#: The versions :func:`decode` reads: this one, 6 (no ``outbox_backlog``), 5 (no ``latency``, no updates either) and 4
#: (no ``performance`` either).
READ_VERSIONS = (4, 5, 6, 7)
#: The envelope a drift message wraps around a closed window (``historical`` is added as it is sent).
ENVELOPE_KEYS = ("format_version", "device", "fleet", "session", "seq", "model", "outbox_dropped", "outbox_backlog",
                 "historical")
#: What the birth message fills in itself; the rest of a birth is the device's description.
BIRTH_KEYS = ("format_version", "device", "fleet", "bdSeq", "time", "runtime")
#: Death reasons: the Last Will (``lost``), a clean stop (``shutdown``).
DEATH_REASONS = ("lost", "shutdown")
#: The ``model`` object of birth and drift messages (:func:`describe_model`).
MODEL_KEYS = ("name", "version", "bundle_sha256", "artifact", "sha256")
#: The ``window`` object of the birth message (:func:`describe_window`).
WINDOW_KEYS = ("rows", "seconds", "rule")


def describe_model(model) -> dict:
    """The ``model`` object of birth and drift messages, from a loaded :class:`~edgeml_runtime.model.Model`.

    ``bundle_sha256`` is the bundle's identity (:func:`.identity.bundle_sha256`);
    ``artifact`` and ``sha256`` name the artifact of the bundle this device runs.
    """
    values = (model.manifest.name, model.manifest.version, model.manifest.identity, model.artifact.path,
              model.artifact.sha256)
    return dict(zip(MODEL_KEYS, values, strict=True))


def describe_window(rows: int, seconds: float, rule: VerdictRule) -> dict:
    """The ``window`` object of the birth message: when the device closes a window and how it judges it.

    >>> describe_window(500, 300.0, VerdictRule(min_rows=10))
    {'rows': 500, 'seconds': 300.0, 'rule': {'psi_moderate': 0.1, 'psi_significant': 0.25, 'drifted_share': 0.3, \
'min_rows': 10, 'alpha': 0.01}}
    """
    return dict(zip(WINDOW_KEYS, (rows, seconds, rule.to_dict()), strict=True))


def _head(device: DeviceTopics) -> dict:
    return {"format_version": FORMAT_VERSION, "device": device.device_id, "fleet": device.fleet}


def check_description(description: Mapping) -> None:
    """Refuse a birth description without ``model`` and ``window``, or that sets what the envelope fills in."""
    clash = sorted(set(description) & set(BIRTH_KEYS))
    if clash:
        raise ProtocolError(f"a birth description may not set {clash}: the envelope fills them in")
    for key, keys, builder in (("model", MODEL_KEYS, "describe_model"), ("window", WINDOW_KEYS, "describe_window")):
        part = description.get(key)
        if not isinstance(part, Mapping) or not set(keys) <= part.keys():
            raise ProtocolError(f"a birth description needs {key!r} with {', '.join(keys)} (got keys "
                                f"{sorted(part) if isinstance(part, Mapping) else None}); build it with {builder}()")


def birth(device: DeviceTopics, *, bd_seq: int, time: str, runtime: Mapping, description: Mapping) -> dict:
    """The birth message: the envelope, then ``description`` (``model``, ``window`` and anything else)."""
    check_description(description)
    return {**_head(device), "bdSeq": bd_seq, "time": time, "runtime": dict(runtime), **description}


def death(device: DeviceTopics, *, bd_seq: int, reason: str, time: str | None = None) -> dict:
    """The death message; ``time`` only for a clean ``shutdown`` (a will is written before it is needed)."""
    if reason not in DEATH_REASONS:
        raise ProtocolError(f"death reason {reason!r} is not one of {', '.join(DEATH_REASONS)}")
    message = {**_head(device), "bdSeq": bd_seq, "reason": reason}
    if time is not None:
        message["time"] = time
    return message


def drift(device: DeviceTopics, *, session: int, seq: int, model: Mapping, outbox_dropped: int,
          window: Mapping, outbox_backlog: int = 0) -> dict:
    """A closed window inside its envelope (``historical`` is appended when it is sent)."""
    clash = sorted(set(window) & set(ENVELOPE_KEYS))
    if clash:
        raise ProtocolError(f"a drift window may not set {clash}: the envelope fills them in")
    return {**_head(device), "session": session, "seq": seq, "model": dict(model),
            "outbox_dropped": outbox_dropped, "outbox_backlog": outbox_backlog, **window}


def prediction(device: DeviceTopics, *, session: int, time: str, body: Mapping) -> dict:
    """One prediction (``body``: ``row``, ``prediction``, ``probabilities``) in its envelope."""
    return {**_head(device), "session": session, "time": time, **body}


def decode(topic: str, payload: bytes | str, *, loads=json.loads) -> tuple[Topic, dict]:
    """A received message: its parsed topic and JSON object, refused if it is not a protocol version this reads
    (:data:`READ_VERSIONS`).

    ``loads`` parses the payload (a faster parser may be given, such as the
    controller's orjson; it must raise ValueError where ``json.loads`` would).
    """
    where = parse_topic(topic)
    try:
        message = loads(payload)
    except ValueError as exc:
        raise ProtocolError(f"{topic}: the payload is not JSON ({exc})") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"{topic}: the payload is a JSON {type(message).__name__}, not an object")
    version = message.get("format_version")
    if type(version) is not int or version not in READ_VERSIONS:
        raise ProtocolError(f"{topic}: format_version {version!r} is not {' or '.join(map(str, READ_VERSIONS))}, "
                            "the versions this runtime reads; update the controller or the device so both speak "
                            "the same version")
    for key, level in (("fleet", where.fleet), ("device", where.device)):
        if key in message and message[key] != level:
            raise ProtocolError(f"{topic}: the payload says {key} {message[key]!r} but was published as "
                                f"{level!r}; the broker's ACL vouches only for the topic, so the message is refused")
    return where, message


def window_key(topic: Topic, message: Mapping) -> tuple[str, str, int, int]:
    """What consumers de-duplicate drift windows on: (fleet, device, session, seq).

    The fleet is part of it: ``pi-07`` of ``plant-a`` and ``pi-07`` of
    ``plant-b`` are two devices whose sessions and sequence numbers are
    unrelated. Fleet and device come from the topic, the only part of a
    message the broker's ACL vouches for (:func:`decode` refuses a payload
    that names another).

    >>> where, w = decode("edgeml/plant-a/pi-07/drift", b'{"format_version": 5, "session": 4, "seq": 0}')
    >>> window_key(where, w)
    ('plant-a', 'pi-07', 4, 0)
    """
    if topic.kind != "drift":
        raise ProtocolError(f"only drift windows are de-duplicated by (fleet, device, session, seq), not "
                            f"{topic.kind} messages")
    session, seq = message.get("session"), message.get("seq")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (session, seq)):
        raise ProtocolError(f"edgeml/{topic.fleet}/{topic.device}/drift: session {session!r} and seq {seq!r} "
                            "must be whole numbers")
    return topic.fleet, topic.device, session, seq
