"""What a received message becomes: checked, and turned into the row of ``devices``, ``windows`` or
``update_events`` it sets.

:func:`prepare` takes a message as :func:`edgeml_runtime.protocol.decode`
returns it (a topic and a dict) and gives a :class:`Prepared`: its kind and
row, or the reason it cannot be stored, naming the topic, the key and the
value. The store (:mod:`.store`) writes the rows; the tables are in
:mod:`.schema`.

* a birth sets a ``devices`` row (:func:`birth_row`), a death another
  (:func:`death_row`), a drift window a ``windows`` row (:func:`window_row`):
  its key, bundle and times, and four JSON texts written once here by
  :func:`.schema.dumps` (``counts``: what adds up across windows;
  ``statistics``: every other per-column value; ``verdict``; ``performance``:
  the labelled rows' metric counts, checked key by key by
  :func:`edgeml_runtime.protocol.check_performance`, ``{}`` when the window
  has none, as a device of protocol version 4 sends); an update step an
  ``update_events`` row (:func:`update_row`), which the store also makes the
  device's last step of the rollout it names;
* the value checks (:func:`text`, :func:`whole`, :func:`mapping`,
  :func:`bundle_of`, :func:`epoch`) refuse what the protocol does not allow
  and what no database keeps as sent (a NUL, an unpaired surrogate, an
  integer beyond 64 bits), with a :class:`~edgeml_runtime.errors.ProtocolError`
  that names the key.

>>> from edgeml_runtime.protocol import examples
>>> m = prepare("edgeml/plant-a/pi-07/drift", examples()["drift"], 0.0)
>>> m.kind, m.reason, (m.row["device"], m.row["seq"])
('drift', None, ('pi-07', 41))
>>> prepare("edgeml/plant-a/pi-07/drift", {**examples()["drift"], "rows": -1}, 0.0).reason
'edgeml/plant-a/pi-07/drift: rows is -1; it must be a whole number from 0 to 9223372036854775807'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from edgeml_runtime.errors import ProtocolError
from edgeml_runtime.protocol import Topic, check_performance, parse_topic, window_key

from .schema import dumps

# -- the value checks ---------------------------------------------------------------------------------

#: The per-column values that add up across windows (kept in ``windows.counts``; the rest is ``statistics``).
COUNT_KEYS = ("kind", "counts", "missing", "below_range", "above_range")
_COUNTED = frozenset(COUNT_KEYS)
_IDENTITY = re.compile("[0-9a-f]{64}").fullmatch  # a third of set(sha) <= the hex digits
_INT64 = 2**63 - 1
_orjson, _STRICT = orjson.dumps, orjson.OPT_STRICT_INTEGER


def _where(topic) -> str:
    return f"edgeml/{topic.fleet}/{topic.device}/{topic.kind}"


def text(value, key: str, where: str, *, optional: bool = False) -> str | None:
    """``value`` if it is a text both databases store as sent (no NUL, valid UTF-8); ProtocolError if not."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"{where}: {key} is {type(value).__name__} {value!r:.40}, not a text")
    if "\x00" in value or not value.isascii() and any("\ud800" <= c <= "\udfff" for c in value):
        raise ProtocolError(f"{where}: {key} holds a NUL or an unpaired surrogate, which no store keeps as sent")
    return value


def whole(value, key: str, where: str, minimum: int = 0) -> int:
    """``value`` if it is a whole number from ``minimum`` that a 64-bit column holds; ProtocolError if not."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= _INT64:
        raise ProtocolError(f"{where}: {key} is {value!r:.40}; it must be a whole number from {minimum} "
                            f"to {_INT64}")
    return value


def mapping(message: Mapping, key: str, where: str) -> Mapping:
    return _object(message.get(key), key, where)


def bundle_of(message: Mapping, where: str) -> Mapping:
    """The message's ``model``, with a ``bundle_sha256`` of 64 hex digits (the bundle identity)."""
    model = mapping(message, "model", where)
    sha = model.get("bundle_sha256")
    if not (isinstance(sha, str) and _IDENTITY(sha)):
        raise ProtocolError(f"{where}: model.bundle_sha256 is {sha!r:.70}, not a bundle identity (64 lowercase "
                            "hex digits); the device runs a runtime older than protocol version 2")
    return model


def epoch(value, key: str, where: str) -> float:
    """An ISO 8601 time (``Z`` or an offset; UTC if neither) as seconds since the epoch."""
    try:
        moment = datetime.fromisoformat(text(value, key, where))
    except ValueError:
        raise ProtocolError(f"{where}: {key} is {value!r:.40}, not an ISO 8601 time") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def birth_row(topic, message: Mapping, received: float) -> dict:
    """The ``devices`` row a birth message sets (``online`` as if no later death were known)."""
    where = _where(topic)
    model, runtime = bundle_of(message, where), mapping(message, "runtime", where)
    return {"fleet": topic.fleet, "device": topic.device, "online": True,
            "birth_seq": whole(message.get("bdSeq"), "bdSeq", where, 1),
            "birth_time": text(message.get("time"), "time", where), "birth_received": received,
            "bundle_sha256": model["bundle_sha256"],
            "model_name": text(model.get("name"), "model.name", where),
            "model_version": text(model.get("version"), "model.version", where),
            "runtime_version": text(runtime.get("version"), "runtime.version", where),
            "window": dict(mapping(message, "window", where))}


def death_row(topic, message: Mapping, received: float) -> dict:
    """The ``devices`` row a death message sets (``online`` false)."""
    where = _where(topic)
    return {"fleet": topic.fleet, "device": topic.device, "online": False,
            "death_seq": whole(message.get("bdSeq"), "bdSeq", where, 1),
            "death_reason": text(message.get("reason"), "reason", where),
            "death_time": text(message.get("time"), "time", where, optional=True), "death_received": received}


def _split(part: Mapping, name: str, where: str) -> tuple[dict, dict]:
    """A column's (or the output's) counts and the rest of it, its counts checked: whole numbers from 0."""
    counts = part.get("counts")
    if type(counts) is not list or not counts:
        if not isinstance(counts, list) or not counts:
            raise ProtocolError(f"{where}: {name}.counts is {counts!r:.40}, not a non-empty list of counts")
    if _types(counts) != _INT_ONLY or min(counts) < 0 or max(counts) > _INT64:  # the fast path: all() is slower
        for i, n in enumerate(counts):
            whole(n, f"{name}.counts[{i}]", where)
    kept = {k: part[k] for k in COUNT_KEYS if k in part}
    rest = {k: v for k, v in part.items() if k not in _COUNTED} if len(kept) < len(part) else {}
    for key in COUNT_KEYS[2:]:
        value = kept.get(key, 0)
        if type(value) is not int or not 0 <= value <= _INT64:
            whole(value, f"{name}.{key}", where)
    return kept, rest


def _split_all(columns: Mapping, output, where: str) -> tuple[dict, dict, dict, dict]:
    """Every column's counts and statistics, and the output's (:func:`_split`), checked all at once.

    The fast path: each part is copied and its counted keys popped from the
    copy (one C copy and at most five pops, not two comprehensions over its keys),
    and every count of the window, the output's too, is checked at once by
    :func:`_counts_only`; per part, the checks' calls cost more than their
    work. Anything else (a part that is not an object, counts that are
    not a list, one bad value) sends the columns, then the output, through
    :func:`_split`, which names what was wrong, in the same order as before.
    """
    kept, rests, numbers = [], [], []
    for part in (*columns.values(), output):
        if type(part) is not dict:
            break
        rest, counted = part.copy(), {}
        for key in COUNT_KEYS:  # a loop, not a comprehension: Python 3.11 makes a function call of each
            if key in rest:
                counted[key] = rest.pop(key)
        counts = counted.get("counts")
        if type(counts) is not list or not counts:
            break
        kept.append(counted)
        rests.append(rest)
        numbers += counts
        numbers += [counted.get("missing", 0), counted.get("below_range", 0), counted.get("above_range", 0)]
    else:
        if _counts_only(numbers):
            # kept and rests end with the output's: zip stops at the last column
            return (dict(zip(columns, kept, strict=False)), dict(zip(columns, rests, strict=False)), kept[-1],
                    rests[-1])
    counts, statistics = {}, {}
    for name, column in columns.items():
        counts[name], statistics[name] = _split(_object(column, f"columns[{name!r:.40}]", where),
                                                f"columns[{name!r}]", where)
    return counts, statistics, *_split(_object(output, "output", where), "output", where)


def _counts_only(numbers: list) -> bool:
    """Whether every one of ``numbers`` is a whole number from 0 to 2**53 - 1, in two C passes.

    orjson writes them, refusing an integer past 53 bits; a whole number from
    0 is written as digits alone, and anything else leaves more than the
    brackets and commas once the digits are deleted: a sign, a point or an
    exponent, ``true``, ``false``, ``null``, a quote, a nested list or object.
    False sends the window through :func:`_split`, which takes counts up to
    2**63 - 1 and names the bad one. A set of their types, a min and a max
    took 8 µs for a window of 10 columns of 10 bins; this takes 1.

    >>> _counts_only([0, 7, 2**53 - 1]), _counts_only([1, True]), _counts_only([1.0]), _counts_only([2**53])
    (True, False, False, False)
    """
    try:
        raw = _orjson(numbers, option=_STRICT)
    except TypeError:  # orjson.JSONEncodeError is one
        return False
    return raw.translate(None, b"0123456789,") == b"[]"


def _types(values: list) -> set:
    return set(map(type, values))


_INT_ONLY = {int}


def _object(value, key: str, where: str) -> Mapping:
    if type(value) is dict or isinstance(value, Mapping):  # type() first: an ABC check costs a microsecond
        return value
    raise ProtocolError(f"{where}: {key} is {type(value).__name__}, not a JSON object")


def window_row(topic, message: Mapping, received: float) -> dict:
    """The ``windows`` row of a drift message: its key, bundle, times, counts, statistics and verdict.

    ``counts``, ``statistics``, ``verdict`` and ``performance`` are JSON text (:func:`dumps`),
    written once here and stored as they are; ValueError if one cannot be.
    """
    where = _where(topic)
    fleet, device, session, seq = window_key(topic, message)
    model = bundle_of(message, where)
    counts, statistics, output_counts, output_statistics = _split_all(mapping(message, "columns", where),
                                                                      message.get("output"), where)
    historical = message.get("historical", False)
    if historical is not True and historical is not False:
        raise ProtocolError(f"{where}: historical is {historical!r:.40}, not true or false")
    get = message.get
    return {"fleet": fleet, "device": device, "session": whole(session, "session", where),
            "seq": whole(seq, "seq", where), "bundle_sha256": model["bundle_sha256"], "received": received,
            "start": text(get("start"), "start", where), "end": text(get("end"), "end", where),
            "ended": epoch(get("end"), "end", where),
            "rows": whole(get("rows"), "rows", where), "bad_rows": whole(get("bad_rows"), "bad_rows", where),
            "outbox_dropped": whole(get("outbox_dropped"), "outbox_dropped", where),
            "outbox_backlog": whole(get("outbox_backlog"), "outbox_backlog", where) if "outbox_backlog" in message
            else None,
            "historical": historical, "counts": dumps({"columns": counts, "output": output_counts}),
            "statistics": dumps({"columns": statistics, "output": output_statistics}),
            "verdict": dumps(dict(mapping(message, "verdict", where))),
            "performance": dumps(check_performance(get("performance"), where)) if "performance" in message else "{}"}


# -- a received message, checked ---------------------------------------------------------------

@dataclass
class Prepared:
    """A received message, checked: its kind and row, or why it cannot be stored (``reason``)."""

    topic: str
    message: object
    kind: str = ""
    row: dict = field(default_factory=dict)
    reason: str | None = None


def update_row(topic, message: Mapping, received: float) -> dict:
    """The ``update_events`` row of an update step (:func:`edgeml_runtime.protocol.updates.update_status`), checked
    field by field (:func:`.rollout_status.event_row`), the reason naming the topic."""
    from .rollout_status import event_row

    return event_row(topic.fleet, topic.device, message, received, where=_where(topic))


_KINDS = {"birth": birth_row, "death": death_row, "drift": window_row, "update": update_row}


def prepare(topic, message, received: float) -> Prepared:
    """A message checked and turned into its row; ``reason`` says why not."""
    m = Prepared(topic if isinstance(topic, str) else f"edgeml/{topic.fleet}/{topic.device}/{topic.kind}", message)
    try:
        where = topic if isinstance(topic, Topic) else parse_topic(topic)
        if not isinstance(message, Mapping):
            raise ProtocolError(f"{m.topic}: the message is a {type(message).__name__}, not a JSON object")
        for key in ("fleet", "device"):
            if key in message and message[key] != getattr(where, key):
                raise ProtocolError(f"{m.topic}: the message says {key} {message[key]!r:.70}, but was published "
                                    f"under {getattr(where, key)!r}")
        if where.kind in _KINDS:
            m.kind, m.row = where.kind, _KINDS[where.kind](where, message, received)
    except ProtocolError as exc:
        m.reason = str(exc)
    except ValueError as exc:  # dumps: NaN, a NUL, a surrogate (the wording of a value the database refused)
        m.reason = f"{m.topic}: the database refused a value: {str(exc).strip().splitlines()[0]}"
    return m
