"""Pick a few rows that cover a table: every class, every category, missing values, both ends of each range.

A row *covers* a requirement such as "column ``Contract`` is ``Two year``"
(each category the model knows, and one it does not when there is one),
"``TotalCharges`` is missing" or "``tenure`` is at its smallest value". The
requirements come from the rows themselves, read as a device reads them
(:mod:`edgeml_runtime.cells`: ``" "`` is a missing number, ``"Yes"`` a
true boolean). :func:`pick_rows` takes rows greedily — each time the one that
covers the most requirements not yet covered, the first such row on a tie —
then fills up to the wanted number with rows drawn at random (seeded), and
returns their positions in table order.

Example:

>>> from edgeml_runtime.schema import InputColumn, InputSchema
>>> schema = InputSchema((InputColumn("t", "numeric", ("t",)),
...                       InputColumn("k", "categorical", ("k",), categories=("a", "b"))))
>>> columns = {"t": [1, 5, " ", 3, 9], "k": ["a", "a", "b", "a", "a"]}
>>> [r.key for r in requirements(columns, schema, labels=[0, 0, 0, 1, 0])]
[('t', 'missing'), ('t', 'min'), ('t', 'max'), ('k', '=a'), ('k', '=b'), ('class', '=0'), ('class', '=1')]
>>> pick_rows(columns, schema, labels=[0, 0, 0, 1, 0], rows=3, seed=0)
[0, 2, 3, 4]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edgeml_runtime.cells import BadValue
from edgeml_runtime.features import scalar_reader
from edgeml_runtime.schema import InputColumn, InputSchema


@dataclass(frozen=True)
class Requirement:
    """Something the sample must hold, and which rows hold it (a boolean per row)."""

    column: str
    what: str  #: "missing", "min", "max" or "=<value>"
    rows: np.ndarray

    @property
    def key(self) -> tuple[str, str]:
        return (self.column, self.what)


def device_values(column: InputColumn, values: Sequence) -> list:
    """The values as a device reads them: float (NaN if missing), text ("" if missing), or None (unreadable)."""
    convert = scalar_reader(column)
    out = []
    for v in values:
        try:
            out.append(convert(v))
        except BadValue:
            out.append(None)
    return out


def _numeric(column: InputColumn, values: list) -> list[Requirement]:
    x = np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
    missing = np.isnan(x)
    out = [Requirement(column.name, "missing", missing)] if missing.any() else []
    if (~missing).any():
        out += [Requirement(column.name, "min", x == np.nanmin(x)), Requirement(column.name, "max", x == np.nanmax(x))]
    return out


def _boolean(column: InputColumn, values: list) -> list[Requirement]:
    x = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
    out = [Requirement(column.name, "missing", np.isnan(x))] if np.isnan(x).any() else []
    return out + [Requirement(column.name, f"={b}", x == v) for v, b in ((0.0, False), (1.0, True)) if (x == v).any()]


def _categorical(column: InputColumn, values: list) -> list[Requirement]:
    """Each category the model knows, one it does not (any), and missing: at most 64 + 2 requirements."""
    text = np.array(["" if v is None else v for v in values], dtype=object)
    known = set(column.categories)
    unknown = np.array([t != "" and t not in known for t in text], dtype=bool)
    out = [Requirement(column.name, "missing", text == "")] if (text == "").any() else []
    out += [Requirement(column.name, f"={c}", text == c) for c in column.categories if (text == c).any()]
    return out + ([Requirement(column.name, "unknown", unknown)] if unknown.any() else [])


def _datetime(column: InputColumn, values: list) -> list[Requirement]:
    missing = np.array([v is None for v in values], dtype=bool)
    return [Requirement(column.name, "missing", missing)] if missing.any() else []


#: What each kind of input column asks the sample to cover.
_REQUIREMENTS: dict[str, Callable[[InputColumn, list], list[Requirement]]] = {
    "numeric": _numeric,
    "boolean": _boolean,
    "categorical": _categorical,
    "datetime": _datetime,
}


def requirements(columns: Mapping[str, Sequence], schema: InputSchema,
                 labels: Sequence | None = None) -> list[Requirement]:
    """Every requirement the rows can meet: per input column, then one per distinct label (``class``)."""
    out = []
    for column in schema.columns:
        out += _REQUIREMENTS[column.kind](column, device_values(column, columns[column.name]))
    if labels is not None:
        y = np.asarray(labels, dtype=object)
        out += [Requirement("class", f"={c}", y == c) for c in dict.fromkeys(y.tolist())]
    return out


def pick_rows(columns: Mapping[str, Sequence], schema: InputSchema, labels: Sequence | None, rows: int,
              seed: int) -> list[int]:
    """Positions of at least ``rows`` rows (all of them when there are fewer) that meet every requirement."""
    needs = requirements(columns, schema, labels)
    n = len(columns[schema.names[0]]) if schema.columns else 0
    if n <= rows:
        return list(range(n))
    matrix = np.stack([r.rows for r in needs], axis=1) if needs else np.zeros((n, 0), dtype=bool)
    open_ = np.ones(matrix.shape[1], dtype=bool)
    gains = matrix.sum(axis=1, dtype=np.int64)  # open requirements each row meets, kept up to date
    chosen: list[int] = []
    while open_.any():
        best = int(np.argmax(gains))  # the first row among those that cover the most
        chosen.append(best)
        newly = np.flatnonzero(open_ & matrix[best])
        open_[newly] = False
        gains -= matrix[:, newly].sum(axis=1, dtype=np.int64)
    rest = np.setdiff1d(np.arange(n), chosen)
    fill = max(0, rows - len(chosen))
    extra = np.random.default_rng(seed).choice(rest, size=min(fill, rest.size), replace=False)
    return sorted(chosen + [int(i) for i in extra])


__all__ = ["Requirement", "device_values", "pick_rows", "requirements"]
