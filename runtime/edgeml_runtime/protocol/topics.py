"""MQTT topics of the protocol: ``edgeml/<fleet>/<device>/<kind>``, built and parsed here only.

A device publishes under its own ``edgeml/<fleet>/<device>/``; the fleet
controller subscribes to :func:`subscription` and turns each topic back into
who sent what with :func:`parse_topic`.

A fleet name and a device id are one topic level each, and more: they are a
user name in the broker's password file, a line of its ACL, part of the MQTT
client id and of file names. So both follow one grammar (:func:`level_problem`,
and the ``level`` of the JSON Schemas): 1 to :data:`MAX_LEVEL` ASCII letters,
digits, ``-``, ``_`` and ``.``, starting with a letter or digit. That refuses
what MQTT would (``/``, ``+``, ``#``), control characters and NUL (a log line or
an ACL line could be forged with them), invisible or look-alike non-ASCII
letters (``pi-07`` in Cyrillic is another device that reads the same), and
path-like names (``..``).

Reserved for the fleet's own topics: every level starting with ``_`` or ``$``
(``$SYS`` is the broker's; the fleet controller publishes its status on
``edgeml/<fleet>/_controller/status``, :mod:`.status`), and the names in :data:`RESERVED`. The
check is case-sensitive, as MQTT topics are.

Example:

>>> DeviceTopics("plant-a", "pi-07").drift
'edgeml/plant-a/pi-07/drift'
>>> parse_topic("edgeml/plant-a/pi-07/birth")
Topic(fleet='plant-a', device='pi-07', kind='birth')
>>> parse_topic("edgeml/plant-a/birth")
Traceback (most recent call last):
...
edgeml_runtime.errors.ProtocolError: topic 'edgeml/plant-a/birth' has 3 levels; a device topic is \
edgeml/<fleet>/<device>/<kind> (kind: birth, drift, death, predictions, update)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ProtocolError, SettingsError

#: The first level of every topic of the protocol.
ROOT = "edgeml"
#: The kinds of message a device publishes, each under its own last topic level.
KINDS = ("birth", "drift", "death", "predictions", "update")
#: The longest fleet name or device id, in characters (all ASCII, so also bytes).
MAX_LEVEL = 64
#: Names a fleet or device may not have: the fleet's own topic levels (besides every name starting with ``_``).
RESERVED = ("fleet", "controller", "broadcast", "all")
#: The grammar of a fleet name or device id, as a regular expression (the JSON Schemas' ``level``).
LEVEL_PATTERN = f"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_LEVEL - 1}}}$"
_FORBIDDEN = "/+#"
#: What every valid name matches (a name that does not is explained by the checks of :func:`level_problem`).
_VALID = re.compile(f"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_LEVEL - 1}}}")
_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def level_problem(value) -> str | None:
    r"""Why ``value`` cannot be a fleet name or device id (None if it can); see the module docstring.

    >>> level_problem("pi-07"), level_problem("pi\x0007")
    (None, 'contains the control character U+0000 at position 3')
    >>> level_problem("_controller")
    "starts with '_': names starting with '_' or '$' are reserved for the fleet's own topics"
    """
    if isinstance(value, str) and _VALID.fullmatch(value) and value not in RESERVED:
        return None  # the common case, in one C call: a controller checks two names of every message it hears
    return explain_level(value)


def explain_level(value) -> str | None:
    """:func:`level_problem` check by check, without its shortcut for valid names (the tests hold both equal)."""
    if not isinstance(value, str) or not value.strip():
        return "must be a non-empty text (it is one MQTT topic level)"
    if any(c in value for c in _FORBIDDEN):
        return "cannot contain '/', '+' or '#' (it is one MQTT topic level)"
    for i, c in enumerate(value):
        if ord(c) < 32 or 127 <= ord(c) < 160 or c in "\u2028\u2029":
            return f"contains the control character U+{ord(c):04X} at position {i + 1}"
    if len(value) > MAX_LEVEL:
        return f"is {len(value)} characters long, over the limit of {MAX_LEVEL}"
    if value[0] in "_$":
        return f"starts with {value[0]!r}: names starting with '_' or '$' are reserved for the fleet's own topics"
    bad = next((c for c in value if c not in _ALLOWED), None)
    if bad is not None:
        return (f"contains {bad!r} (U+{ord(bad):04X}); only ASCII letters, digits, '-', '_' and '.' are allowed, "
                "as it is also a user name in the broker's password and ACL files")
    if value[0] in ".-":
        return f"starts with {value[0]!r}; it must start with a letter or a digit"
    if value in RESERVED:
        return f"is reserved for the fleet's own topics (reserved: {', '.join(RESERVED)} and names starting with '_')"
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
                                    fix=f"choose a {key.replace('_', ' ')} of at most {MAX_LEVEL} ASCII letters, "
                                        "digits, '-', '_' or '.', starting with a letter or digit")

    def topic(self, kind: str) -> str:
        """``edgeml/<fleet>/<device>/<kind>``."""
        if kind not in KINDS:
            raise ProtocolError(f"message kind {kind!r} is not part of the protocol; use one of {', '.join(KINDS)}")
        return f"{ROOT}/{self.fleet}/{self.device_id}/{kind}"

    birth = property(lambda self: self.topic("birth"))
    drift = property(lambda self: self.topic("drift"))
    death = property(lambda self: self.topic("death"))
    predictions = property(lambda self: self.topic("predictions"))
    update = property(lambda self: self.topic("update"))

    @property
    def client_id(self) -> str:
        """The MQTT client id: ``edgeml:<fleet>:<device>``, unique per device of every fleet.

        ``:`` is in neither name, so no two devices share one (with ``-``,
        ``plant`` + ``a-pi-07`` and ``plant-a`` + ``pi-07`` did, and the broker
        let each connection take the other's over).
        """
        return f"{ROOT}:{self.fleet}:{self.device_id}"

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
