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

#: The parts a datetime column can be expanded into (an input column lists the ones it uses in ``parts``, in
#: its own order): the calendar fields (day of week 0 for Monday; day of year 1 for 1 January), then the
#: cyclic ones, sin and cos of the position in the year (by month, or by day of year), the week and the day
#: (by hour), so that December sits by January, Sunday by Monday and 23:00 by midnight. The first five are
#: what every datetime column had before columns chose their parts.
DATETIME_PARTS = ("month", "day", "dayofweek", "hour", "minute", "year", "dayofyear",
                  "month_sin", "month_cos", "dayofyear_sin", "dayofyear_cos",
                  "dayofweek_sin", "dayofweek_cos", "hour_sin", "hour_cos")

#: How a datetime column writes a date that is not ISO 8601: day, month and year in this order.
DATE_ORDERS = ("dmy", "mdy", "ymd")

#: A number format's decimal marks, and its digit-group separators ("" for none).
DECIMAL_MARKS = (".", ",")
GROUPINGS = ("", ",", ".", " ", "'")


@dataclass(frozen=True)
class NumberFormat:
    """How a numeric column writes numbers as text, when it is not the plain grammar of
    :func:`edgeml_runtime.cells.to_number`: the decimal mark and the digit-group separator.

    A column with a number format reads text with units, percent signs, currency, ranges and the like
    (see :mod:`edgeml_runtime.textnumbers`), and text that is no number there is a missing value, as it
    was in the training data; a column without one reads only plain numbers, anything else a row error.

    >>> NumberFormat(decimal=",", grouping=".").to_dict()
    {'decimal': ',', 'grouping': '.'}
    """

    decimal: str = "."
    grouping: str = ""

    def __post_init__(self):
        if self.decimal not in DECIMAL_MARKS:
            raise BundleError(f"number format decimal {self.decimal!r}: expected one of {DECIMAL_MARKS}")
        if self.grouping not in GROUPINGS or self.grouping == self.decimal:
            raise BundleError(f"number format grouping {self.grouping!r}: expected one of {GROUPINGS}, "
                              "other than the decimal mark")

    def to_dict(self) -> dict:
        return {"decimal": self.decimal, "grouping": self.grouping}

    @classmethod
    def from_dict(cls, d: dict) -> NumberFormat:
        return cls(decimal=d["decimal"], grouping=d["grouping"])


@dataclass(frozen=True)
class InputColumn:
    """One raw input column and the model tensors it feeds.

    ``features`` are the names of the model's inputs this column becomes: one
    for numeric, boolean and categorical columns, one per part it lists in
    ``parts`` (of :data:`DATETIME_PARTS`) for datetimes. ``categories`` are the categories
    the model knows (others score as "unknown", never as an error).
    ``range`` and ``missing_rate`` describe the training split.
    ``number_format`` (numeric columns only) says how numbers are written as
    text when not plainly; ``date_order`` (datetime columns only) how a date
    that is not ISO 8601 orders day, month and year, and ``parts`` which
    :data:`DATETIME_PARTS` the column's ``features`` are, one each.
    """

    name: str
    kind: str
    features: tuple[str, ...]
    categories: tuple[str, ...] = ()
    range: tuple[float, float] | None = None
    missing_rate: float = 0.0
    dtype: str = ""
    number_format: NumberFormat | None = None
    date_order: str | None = None
    parts: tuple[str, ...] = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise BundleError(
                f"input column {self.name!r} has kind {self.kind!r}; expected one of {', '.join(KINDS)}"
            )
        if self.number_format is not None and self.kind != "numeric":
            raise BundleError(f"input column {self.name!r} is {self.kind}, but has a number format")
        if self.date_order is not None and (self.kind != "datetime" or self.date_order not in DATE_ORDERS):
            raise BundleError(f"input column {self.name!r}: date_order {self.date_order!r} needs a datetime "
                              f"column and one of {', '.join(DATE_ORDERS)}")
        if self.kind == "datetime":
            if not self.parts:  # the parts every datetime column had before columns chose theirs
                object.__setattr__(self, "parts", DATETIME_PARTS[: len(self.features)])
            unknown = [p for p in self.parts if p not in DATETIME_PARTS]
            if unknown or len(self.parts) != len(self.features):
                raise BundleError(f"input column {self.name!r}: parts {list(self.parts)!r} must be one of "
                                  f"{', '.join(DATETIME_PARTS)} per feature ({len(self.features)})")
        elif self.parts:
            raise BundleError(f"input column {self.name!r} is {self.kind}, but lists datetime parts")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["features"] = list(self.features)
        d["categories"] = list(self.categories)
        d["range"] = list(self.range) if self.range is not None else None
        d["number_format"] = self.number_format.to_dict() if self.number_format is not None else None
        d["parts"] = list(self.parts)
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
                number_format=NumberFormat.from_dict(d["number_format"]) if d.get("number_format") else None,
                date_order=d.get("date_order"),
                parts=tuple(d.get("parts") or ()),
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
