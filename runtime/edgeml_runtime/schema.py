"""The input schema a bundle declares: one :class:`InputColumn` per raw column.

The host infers it from training data and writes it into ``manifest.json``;
the device reads it back and checks every record against it. Identifier and
constant columns never appear here: the host drops them before training.

Example:

>>> col = InputColumn(name="Air temperature [K]", kind="numeric",
...                   features=("Air_temperature_K",), range=(295.3, 304.5))
>>> InputColumn.from_dict(col.to_dict()) == col
True
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from .errors import BundleError

#: The kinds of column a model can take as input.
KINDS = ("numeric", "categorical", "boolean", "datetime")

#: What a datetime column is expanded into, in this order.
DATETIME_PARTS = ("month", "day", "dayofweek", "hour", "minute")


@dataclass(frozen=True)
class InputColumn:
    """One raw input column and the model tensors it feeds.

    ``features`` are the names of the model's inputs this column becomes: one
    for numeric, boolean and categorical columns, one per part in
    :data:`DATETIME_PARTS` for datetimes. ``categories`` are the categories
    the model knows (others score as "unknown", never as an error).
    ``range`` and ``missing_rate`` describe the training split.
    """

    name: str
    kind: str
    features: tuple[str, ...]
    categories: tuple[str, ...] = ()
    range: tuple[float, float] | None = None
    missing_rate: float = 0.0
    dtype: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise BundleError(
                f"input column {self.name!r} has kind {self.kind!r}; expected one of {', '.join(KINDS)}"
            )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["features"] = list(self.features)
        d["categories"] = list(self.categories)
        d["range"] = list(self.range) if self.range is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> InputColumn:
        try:
            return cls(
                name=d["name"],
                kind=d["kind"],
                features=tuple(d["features"]),
                categories=tuple(d.get("categories") or ()),
                range=tuple(d["range"]) if d.get("range") is not None else None,
                missing_rate=float(d.get("missing_rate", 0.0)),
                dtype=d.get("dtype", ""),
            )
        except (KeyError, TypeError) as exc:
            raise BundleError(f"manifest input {d!r} is malformed ({exc}); rebuild the bundle") from exc


@dataclass(frozen=True)
class InputSchema:
    """The ordered input columns of a model."""

    columns: tuple[InputColumn, ...] = field(default_factory=tuple)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def features(self) -> list[str]:
        return [f for c in self.columns for f in c.features]

    def to_list(self) -> list[dict]:
        return [c.to_dict() for c in self.columns]

    @classmethod
    def from_list(cls, items: list[dict]) -> InputSchema:
        return cls(tuple(InputColumn.from_dict(d) for d in items))


_NOT_IDENT = re.compile(r"[^0-9A-Za-z_]+")


def feature_name(column: str, taken: set[str], suffix: str = "") -> str:
    """A tensor-safe name for ``column`` (letters, digits, underscores), unique in ``taken``.

    >>> taken = set()
    >>> feature_name("Air temperature [K]", taken)
    'Air_temperature_K'
    >>> feature_name("Air temperature (K)", taken)
    'Air_temperature_K_2'
    >>> feature_name("when", taken, suffix="hour")
    'when__hour'
    """
    base = _NOT_IDENT.sub("_", column).strip("_") or "col"
    if base[0].isdigit():
        base = "c_" + base
    if suffix:
        base = f"{base}__{suffix}"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name)
    return name
