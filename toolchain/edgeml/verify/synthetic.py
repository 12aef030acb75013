"""Rows drawn from a bundle's drift reference instead of the data, for data that must not leave the workstation.

The reference (the manifest's ``reference`` section, see docs/drift.md) holds, per input
column, the bins and shares of the training split, its range and its missing
rate. :func:`synthetic_columns` draws each column independently from those:
a bin by its share, then a value uniformly inside it; a category by its share
(the "other" share as a category the model does not know); missing at the
column's missing rate. Before the random rows come rows that each put one
column at a value the sample must hold: both ends of each range, every
category and an unknown one, both booleans, a missing value where training
had them. Nothing but the reference is read, so the rows reveal no more than
the manifest already does. Datetimes are not described by the reference and
are left missing.

Example:

>>> from edgeml_runtime.schema import InputColumn, InputSchema
>>> schema = InputSchema((InputColumn("rpm", "numeric", ("rpm",)),))
>>> rpm = {"kind": "numeric", "monitored": True, "edges": [1500.0], "shares": [0.5, 0.5], "missing_rate": 0.0,
...        "range": [1000.0, 2000.0]}
>>> rows = synthetic_columns({"rpm": rpm}, schema, 4, seed=0)["rpm"]
>>> rows[:2], all(1000.0 <= v <= 2000.0 for v in rows)
([1000.0, 2000.0], True)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from edgeml_runtime.samples import float32_values
from edgeml_runtime.schema import InputSchema

#: The category synthetic rows use for the reference's "other" share: one the model does not know.
UNKNOWN_CATEGORY = "<unknown>"


def _missing(ref: dict, values: list, rng: np.random.Generator) -> list:
    rate = float(ref.get("missing_rate") or 0.0)
    drop = rng.random(len(values)) < rate
    return [None if d else v for v, d in zip(values, drop, strict=True)]


def _numeric(ref: dict, size: int, rng: np.random.Generator) -> tuple[list, list]:
    lo, hi = (float(v) for v in ref["range"])
    bounds = [lo, *(float(e) for e in ref["edges"]), hi]
    shares = np.asarray(ref["shares"], dtype=np.float64)
    which = rng.choice(len(shares), size=size, p=shares / shares.sum())
    values = rng.uniform(np.take(bounds, which), np.take(bounds, which + 1))
    specials = [lo, hi] + ([None] if ref.get("missing_rate") else [])
    return specials, _missing(ref, float32_values(values), rng)


def _boolean(ref: dict, size: int, rng: np.random.Generator) -> tuple[list, list]:
    shares = np.asarray(ref["shares"], dtype=np.float64)
    values = [bool(v) for v in rng.choice(2, size=size, p=shares / shares.sum())]
    return [False, True] + ([None] if ref.get("missing_rate") else []), _missing(ref, values, rng)


def _categorical(ref: dict, size: int, rng: np.random.Generator) -> tuple[list, list]:
    names = [*ref["categories"], UNKNOWN_CATEGORY]
    shares = np.asarray(ref["shares"], dtype=np.float64)
    values = [names[i] for i in rng.choice(len(names), size=size, p=shares / shares.sum())]
    return names + ([None] if ref.get("missing_rate") else []), _missing(ref, values, rng)


def _unmonitored(ref: dict, size: int, rng: np.random.Generator) -> tuple[list, list]:
    return [], [None] * size


#: How each kind of monitored column is drawn: (values every sample holds, random values).
_DRAW: dict[str, Callable[[dict, int, np.random.Generator], tuple[list, list]]] = {
    "numeric": _numeric,
    "boolean": _boolean,
    "categorical": _categorical,
}


def synthetic_columns(described: Mapping[str, dict], schema: InputSchema, rows: int, seed: int) -> dict[str, list]:
    """Raw values per input column: first one row per special value of each column, then ``rows`` random rows."""
    rng = np.random.default_rng(seed)
    drawn = {}
    for column in schema.columns:
        ref = described[column.name]
        draw = _DRAW.get(column.kind) if ref.get("monitored", False) else None
        drawn[column.name] = (draw or _unmonitored)(ref, rows, rng)
    specials = [(name, value) for name, (values, _) in drawn.items() for value in values]
    columns = {}
    for name, (_, random) in drawn.items():  # the special rows take random values in their other columns
        background = [random[i] for i in rng.integers(0, len(random), size=len(specials))] if random else []
        columns[name] = background + random
    for i, (name, value) in enumerate(specials):
        columns[name][i] = value
    return columns


__all__ = ["UNKNOWN_CATEGORY", "synthetic_columns"]
