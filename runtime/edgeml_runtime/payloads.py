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
        return json.dumps(obj, separators=(",", ":"), allow_nan=False, default=plain).encode()
    except ValueError:
        return json.dumps(finite(obj), separators=(",", ":"), allow_nan=False, default=plain).encode()


def plain(value):
    if hasattr(value, "tolist"):  # numpy scalar or array
        return finite(value.tolist())
    raise TypeError(f"{type(value).__name__} {value!r} cannot be sent as JSON")


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
