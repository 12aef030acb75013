"""JSON for messages that leave the device: compact, numpy-aware, never NaN or infinity.

>>> import numpy as np
>>> dumps({"n": np.int64(3), "x": float("nan"), "v": np.array([1.5, np.inf])})
b'{"n":3,"x":null,"v":[1.5,null]}'
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime


def dumps(obj: dict) -> bytes:
    """Compact JSON; numpy scalars and arrays become numbers and lists, NaN and infinity become null."""
    try:
        return _ENCODER.encode(obj).encode()
    except ValueError:
        return _ENCODER.encode(finite(obj)).encode()


def plain(value):
    if hasattr(value, "tolist"):  # numpy scalar or array
        return finite(value.tolist())
    raise TypeError(f"{type(value).__name__} {value!r} cannot be sent as JSON")


#: One encoder for every message: json.dumps with options builds a new one per call, a tenth of a served request.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=plain)


def finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if hasattr(value, "tolist"):
        return finite(value.tolist())
    return value


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def publish_size(topic: str, payload_bytes: int, mqtt5: bool) -> int:
    """Bytes of the whole QoS 1 PUBLISH packet that carries ``payload_bytes`` on ``topic`` (no properties).

    What an MQTT 5 broker's Maximum Packet Size (a CONNACK property) limits:
    fixed header, topic, packet id, the property length (MQTT 5) and payload.

    >>> publish_size("a/b", 10, mqtt5=True), publish_size("a/b", 10, mqtt5=False)
    (20, 19)
    """
    remaining = 2 + len(topic.encode("utf-8")) + 2 + (1 if mqtt5 else 0) + payload_bytes
    length_bytes = 1
    while remaining >= 128 ** length_bytes and length_bytes < 4:
        length_bytes += 1
    return 1 + length_bytes + remaining


#: Each error message is first cut to this many characters when a window must shrink to fit a packet.
TRIMMED_ERROR_CHARS = 80


def trim_errors(payload: bytes, fits) -> bytes | None:
    """``payload`` (a drift message) with fewer and shorter ``errors`` until ``fits(bytes)``; None if it never does.

    The window's counts (``bad_rows`` among them) are kept as they are: only
    the sample of error messages shrinks, first each message, then their
    number, down to none.

    >>> message = dumps({"rows": 1, "bad_rows": 3, "errors": ["x" * 500] * 3})
    >>> trimmed = json.loads(trim_errors(message, lambda b: len(b) < 300))
    >>> trimmed["bad_rows"], [len(e) for e in trimmed["errors"]]
    (3, [81])
    >>> trim_errors(message, lambda b: len(b) < 10) is None
    True
    """
    try:
        message = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    errors = message.get("errors") if isinstance(message, dict) else None
    if not isinstance(errors, list):
        return None
    short = [e[:TRIMMED_ERROR_CHARS] + "…" if isinstance(e, str) and len(e) > TRIMMED_ERROR_CHARS else e
             for e in errors]
    keep = len(short)
    while True:
        candidate = dumps(dict(message, errors=short[:keep]))
        if fits(candidate):
            return candidate
        if keep == 0:
            return None
        keep //= 2
