"""MQTT topics of the protocol: ``edgeml/<fleet>/<device>/<kind>``, built and parsed here only.

A device publishes under its own ``edgeml/<fleet>/<device>/``; the fleet
controller subscribes to :func:`subscription` and turns each topic back into
who sent what with :func:`parse_topic`. A fleet name and a device id are one
topic level each: non-empty, without ``/``, ``+`` or ``#``.

Example:

>>> DeviceTopics("plant-a", "pi-07").drift
'edgeml/plant-a/pi-07/drift'
>>> parse_topic("edgeml/plant-a/pi-07/birth")
Topic(fleet='plant-a', device='pi-07', kind='birth')
>>> parse_topic("edgeml/plant-a/birth")
Traceback (most recent call last):
...
edgeml_runtime.errors.ProtocolError: topic 'edgeml/plant-a/birth' has 3 levels; a device topic is \
edgeml/<fleet>/<device>/<kind> (kind: birth, drift, death, predictions)
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ProtocolError, SettingsError

#: The first level of every topic of the protocol.
ROOT = "edgeml"
#: The kinds of message a device publishes, each under its own last topic level.
KINDS = ("birth", "drift", "death", "predictions")
_FORBIDDEN = "/+#"


def level_problem(value) -> str | None:
    """Why ``value`` cannot be one topic level (None if it can)."""
    if not isinstance(value, str) or not value.strip():
        return "must be a non-empty text (it is one MQTT topic level)"
    if any(c in value for c in _FORBIDDEN):
        return "cannot contain '/', '+' or '#' (it is one MQTT topic level)"
    return None


@dataclass(frozen=True)
class DeviceTopics:
    """The topics of one device: who it is (``fleet``, ``device_id``) and where it publishes.

    Both are validated here, once: this is the dataclass the settings'
    ``fleet`` and ``device_id`` keys fill.
    """

    fleet: str
    device_id: str

    def __post_init__(self):
        for key in ("fleet", "device_id"):
            problem = level_problem(getattr(self, key))
            if problem:
                raise SettingsError(key=key, value=getattr(self, key), allowed=problem,
                                    fix=f"choose a {key.replace('_', ' ')} of letters, digits, '-', '_' or '.'")

    def topic(self, kind: str) -> str:
        """``edgeml/<fleet>/<device>/<kind>``."""
        if kind not in KINDS:
            raise ProtocolError(f"message kind {kind!r} is not part of the protocol; use one of {', '.join(KINDS)}")
        return f"{ROOT}/{self.fleet}/{self.device_id}/{kind}"

    birth = property(lambda self: self.topic("birth"))
    drift = property(lambda self: self.topic("drift"))
    death = property(lambda self: self.topic("death"))
    predictions = property(lambda self: self.topic("predictions"))

    @property
    def all(self) -> str:
        """The filter matching every topic of this device (what its ACL must let it write)."""
        return f"{ROOT}/{self.fleet}/{self.device_id}/#"


@dataclass(frozen=True)
class Topic:
    """A parsed device topic."""

    fleet: str
    device: str
    kind: str


def parse_topic(topic: str) -> Topic:
    """``edgeml/<fleet>/<device>/<kind>`` back into its parts; :class:`ProtocolError` if it is not one."""
    levels = topic.split("/")
    shape = f"a device topic is {ROOT}/<fleet>/<device>/<kind> (kind: {', '.join(KINDS)})"
    if len(levels) != 4:
        raise ProtocolError(f"topic {topic!r} has {len(levels)} levels; {shape}")
    root, fleet, device, kind = levels
    if root != ROOT:
        raise ProtocolError(f"topic {topic!r} starts with {root!r}, not {ROOT!r}; {shape}")
    for name, value in (("fleet", fleet), ("device", device)):
        problem = level_problem(value)
        if problem:
            raise ProtocolError(f"topic {topic!r}: the {name} level {value!r} {problem}")
    if kind not in KINDS:
        raise ProtocolError(f"topic {topic!r} ends in {kind!r}, which is not a message kind; {shape}")
    return Topic(fleet, device, kind)


def subscription(fleet: str | None = None) -> str:
    """The filter a fleet controller subscribes to: every device of ``fleet``, or of every fleet.

    >>> subscription(), subscription("plant-a")
    ('edgeml/+/+/+', 'edgeml/plant-a/+/+')
    """
    if fleet is not None and level_problem(fleet):
        raise ProtocolError(f"fleet {fleet!r} {level_problem(fleet)}")
    return f"{ROOT}/{fleet or '+'}/+/+"
