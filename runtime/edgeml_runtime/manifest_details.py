"""The parts of manifest sections: input columns, drift reference entries, search trials and budgets, transforms.

Each is a :class:`~edgeml_runtime.sections.Section`, read as strictly as the
sections of :mod:`edgeml_runtime.manifest` that hold them. A drift reference
entry is one of several layouts, chosen by its ``kind`` (and, for an input
column, whether it is ``monitored``); its bins and shares are checked to fit
each other here, so a fleet recomputing a verdict from summed counts
(:func:`edgeml_runtime.distributions.statistics_from_counts`) never meets a
reference that does not fit its counters. The layouts are described in
docs/bundle.md and docs/drift.md.

Example:

>>> entry = {"kind": "numeric", "monitored": True, "edges": [20.0], "shares": [0.5, 0.5], "missing_rate": 0.0,
...          "range": [10.0, 30.0]}
>>> COLUMN.read(entry, "reference.columns['temp']").to_dict() == entry
True
>>> COLUMN.read({**entry, "shares": [1.0]}, "reference.columns['temp']")
Traceback (most recent call last):
...
edgeml_runtime.errors.BundleError: reference.columns['temp'].shares has 1 values, but 1 edges make 2 bins; \
rebuild the bundle
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .errors import BundleError
from .schema import DATE_ORDERS, DATETIME_PARTS, DECIMAL_MARKS, GROUPINGS, InputColumn, InputSchema
from .sections import (
    BOOL,
    FILE_NAME,
    INT,
    LABEL,
    NUMBER,
    SCALAR,
    SHA256,
    STR,
    Kind,
    Section,
    between,
    exactly,
    key,
    list_of,
    mapping_of,
    nullable,
    one_of,
    pair,
    shown_key,
    tagged,
    wrong,
)

#: The kinds of input column (:mod:`edgeml_runtime.schema`), and the splits of the data set.
COLUMN_KINDS = ("numeric", "boolean", "categorical", "datetime")
SPLITS = ("train", "valid", "test")
PRECISIONS = ("fp32", "fp16", "int8")
FRACTION = between(0.0, 1.0)
SHARES = list_of(FRACTION, min_items=1)
def _scalar_or_scalars() -> Kind:
    """A JSON scalar, null, or a list of scalars (a layer shape such as ``[24, 12]``)."""
    one, many = nullable(SCALAR), list_of(SCALAR)
    what = "a string, number, boolean, null or a list of them"

    def read(v, where):
        if isinstance(v, list):
            return many.read(v, where)
        try:
            return one.read(v, where)
        except BundleError:
            raise wrong(where, v, what) from None

    return Kind(what, read, lambda v: many.write(v) if isinstance(v, tuple | list) else v,
                {"anyOf": [one.schema, many.schema]})


#: A learner's hyperparameters: free names, each a JSON scalar (FLAML's search spaces are numbers, strings and
#: booleans; null for a parameter left at the learner's default) or a list of them (a model trained directly, as
#: a benchmark does, records its layer sizes).
CONFIG = mapping_of(_scalar_or_scalars())


def _fits(shares: tuple, bins: int, why: str) -> None:
    if len(shares) != bins:
        raise BundleError(f"shares has {len(shares)} values, but {why} make {bins} bins; rebuild the bundle")


def _increasing(edges: tuple) -> None:
    if any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
        raise BundleError(f"edges is {list(edges)!r}, expected strictly increasing numbers; rebuild the bundle")


# --- inputs: the InputSchema of schema.py, read key by key --------------------------------------

#: Each ``inputs[i]`` key and what it holds (all required: the host writes every one).
def _number_format() -> Kind:
    """``inputs[i].number_format``: an object with exactly ``decimal`` and ``grouping``."""
    fields = {"decimal": one_of(*DECIMAL_MARKS), "grouping": one_of(*GROUPINGS)}
    what = "an object with decimal and grouping"

    def read(v, where):
        if not isinstance(v, dict) or set(v) != set(fields):
            raise wrong(where, v, what)
        for name, kind in fields.items():
            kind.read(v[name], f"{where}.{name}")
        return v

    return Kind(what, read, schema={"type": "object", "properties": {k: f.schema for k, f in fields.items()},
                                    "required": list(fields), "additionalProperties": False})


INPUT_KEYS = {"name": STR, "kind": STR, "features": list_of(STR, min_items=1), "categories": list_of(STR),
              "range": nullable(list_of(NUMBER, min_items=2)), "missing_rate": NUMBER, "dtype": STR,
              "number_format": nullable(_number_format()), "date_order": nullable(one_of(*DATE_ORDERS)),
              "parts": list_of(one_of(*DATETIME_PARTS))}


def _read_inputs(v, where: str) -> InputSchema:
    if not isinstance(v, list):
        raise wrong(where, v, "a list of input columns")
    columns = []
    for i, d in enumerate(v):
        at = f"{where}[{i}]"
        if not isinstance(d, dict):
            raise wrong(at, d, "an object")
        unknown = [k for k in d if k not in INPUT_KEYS]
        if unknown:
            raise BundleError(f"{at}.{shown_key(unknown[0])} is not a key this edgeml-runtime knows (an input "
                              f"column takes {', '.join(INPUT_KEYS)}); rebuild the bundle")
        for name, kind in INPUT_KEYS.items():
            if name not in d:
                raise BundleError(f"{at}.{name} is missing; rebuild the bundle")
            kind.read(d[name], f"{at}.{name}")
        try:
            columns.append(InputColumn.from_dict(d))
        except BundleError as exc:
            raise BundleError(f"{at}: {exc}") from None
    return InputSchema(tuple(columns))


INPUT_COLUMN_SCHEMA = {"type": "object", "description": "One raw input column and the model inputs it feeds.",
                       "properties": {k: kind.schema for k, kind in INPUT_KEYS.items()},
                       "required": list(INPUT_KEYS), "additionalProperties": False}
INPUTS = Kind("a list of input columns", _read_inputs, lambda s: s.to_list(),
              {"type": "array", "items": {"$ref": "#/$defs/input_column"}})
#: ``classes`` is null for regression; in Python an empty tuple either way.
CLASSES = Kind("a list of class labels or null", lambda v, at: () if v is None else list_of(LABEL).read(v, at),
               lambda v: list(v) or None, nullable(list_of(LABEL)).schema)


@dataclass(frozen=True, kw_only=True)
class FileRef(Section):
    """One of ``artifacts[i].files``: a side file of an artifact (an ``.ort`` file's operators config), hashed."""

    schema_name: ClassVar[str] = "file"
    path: str = key(FILE_NAME)
    bytes: int = key(INT)
    sha256: str = key(SHA256)


# --- the drift reference --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class NumericReference(Section):
    """A monitored numeric column: right-closed bins between ``edges``, their shares, and the training range."""

    schema_name: ClassVar[str] = "numeric_reference"
    kind: str = key(exactly("numeric"))
    monitored: bool = key(exactly(True))
    edges: tuple[float, ...] = key(list_of(NUMBER))
    shares: tuple[float, ...] = key(SHARES)
    missing_rate: float = key(FRACTION)
    range: tuple[float, float] = key(pair(NUMBER, NUMBER))

    def __post_init__(self):
        _increasing(self.edges)
        _fits(self.shares, len(self.edges) + 1, f"{len(self.edges)} edges")
        if self.range[0] > self.range[1]:
            raise BundleError(f"range is {list(self.range)!r}, expected [lowest, highest]; rebuild the bundle")


@dataclass(frozen=True, kw_only=True)
class BooleanReference(Section):
    """A monitored boolean column: the shares of false and true."""

    schema_name: ClassVar[str] = "boolean_reference"
    kind: str = key(exactly("boolean"))
    monitored: bool = key(exactly(True))
    shares: tuple[float, ...] = key(SHARES)
    missing_rate: float = key(FRACTION)

    def __post_init__(self):
        _fits(self.shares, 2, "false and true")


@dataclass(frozen=True, kw_only=True)
class CategoricalReference(Section):
    """A monitored categorical column: the share of each category, then of any other value."""

    schema_name: ClassVar[str] = "categorical_reference"
    kind: str = key(exactly("categorical"))
    monitored: bool = key(exactly(True))
    categories: tuple[str, ...] = key(list_of(STR))
    shares: tuple[float, ...] = key(SHARES)
    missing_rate: float = key(FRACTION)

    def __post_init__(self):
        _fits(self.shares, len(self.categories) + 1, f"{len(self.categories)} categories and 'other'")


@dataclass(frozen=True, kw_only=True)
class UnmonitoredReference(Section):
    """An input column drift is not computed for (every datetime column), and why."""

    schema_name: ClassVar[str] = "unmonitored_reference"
    kind: str = key(one_of(*COLUMN_KINDS))
    monitored: bool = key(exactly(False))
    reason: str = key(STR)


_MONITORED = tagged("kind", {"numeric": NumericReference, "boolean": BooleanReference,
                             "categorical": CategoricalReference})


def _read_column(v, where: str) -> Section:
    if not isinstance(v, dict):
        raise wrong(where, v, "an object")
    if "monitored" not in v:
        raise BundleError(f"{where}.monitored is missing; rebuild the bundle")
    if v["monitored"] is False:
        return UnmonitoredReference.from_dict(v, where)
    if v["monitored"] is not True:
        raise wrong(f"{where}.monitored", v["monitored"], "true or false")
    return _MONITORED.read(v, where)


#: ``reference.columns[name]``: a monitored column by its kind, or an unmonitored one.
COLUMN = Kind("an object", _read_column, lambda v: v.to_dict(), {"oneOf": [
    {"$ref": f"#/$defs/{cls.schema_name}"}
    for cls in (NumericReference, BooleanReference, CategoricalReference, UnmonitoredReference)]})


@dataclass(frozen=True, kw_only=True)
class ClassesOutput(Section):
    """``reference.output`` of a classifier: the share of each predicted class, in ``classes`` order."""

    schema_name: ClassVar[str] = "classes_output"
    kind: str = key(exactly("classes"))
    classes: tuple = key(list_of(LABEL, min_items=1))
    shares: tuple[float, ...] = key(SHARES)
    split: str = key(one_of(*SPLITS))

    def __post_init__(self):
        _fits(self.shares, len(self.classes), f"{len(self.classes)} classes")


@dataclass(frozen=True, kw_only=True)
class NumericOutput(Section):
    """``reference.output`` of a regressor: right-closed bins of the predicted values and their shares."""

    schema_name: ClassVar[str] = "numeric_output"
    kind: str = key(exactly("numeric"))
    edges: tuple[float, ...] = key(list_of(NUMBER))
    shares: tuple[float, ...] = key(SHARES)
    split: str = key(one_of(*SPLITS))

    def __post_init__(self):
        _increasing(self.edges)
        _fits(self.shares, len(self.edges) + 1, f"{len(self.edges)} edges")


OUTPUT = tagged("kind", {"classes": ClassesOutput, "numeric": NumericOutput})


# --- the search ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SearchBudgets(Section):
    """``search.budgets``: the limits every trial was judged on (null is no limit), and what it was measured with.

    The limits are always there; the measuring details (``speed_factor`` to
    ``tflite_overhead_bytes``) are recorded when the search had them.
    """

    schema_name: ClassVar[str] = "search_budgets"
    max_model_bytes: int | None = key(nullable(INT))
    latency_budget_ms: float | None = key(nullable(NUMBER))
    max_arena_bytes: int | None = key(nullable(INT))
    speed_factor: float | None = key(NUMBER, optional=True)
    n_inputs: int | None = key(nullable(INT), optional=True)
    tflite_precisions: tuple[str, ...] | None = key(list_of(one_of(*PRECISIONS)), optional=True)
    tflite_ops: str | None = key(STR, optional=True)
    tflite_overhead_bytes: tuple[tuple[str, int], ...] | None = key(list_of(pair(one_of(*PRECISIONS), INT)),
                                                                    optional=True)


@dataclass(frozen=True, kw_only=True)
class Trial(Section):
    """One of ``search.trial_log``: a model the search judged, its validation loss, cost on the target and verdict.

    ``arena_bytes`` is there when the trial's arena was measured,
    ``unmapped`` when some of its operators are not in the target's set.
    """

    schema_name: ClassVar[str] = "trial"
    iteration: int = key(INT)
    learner: str = key(STR)
    elapsed: float = key(NUMBER)
    config: dict | None = key(nullable(CONFIG))
    loss: float | None = key(nullable(NUMBER))
    model_bytes: int | None = key(nullable(INT))
    latency_ms: float | None = key(nullable(NUMBER))
    feasible: bool | None = key(nullable(BOOL))
    broken: tuple[str, ...] = key(list_of(STR))
    arena_bytes: int | None = key(INT, optional=True)
    unmapped: tuple[str, ...] | None = key(list_of(STR), optional=True)


# --- a transform's details ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Quantization(Section):
    """``transform.quantization``: how an int8 artifact was quantized, on how many calibration rows.

    ONNX's quantizer also records its ``ops``, types and sizes before and after.
    """

    schema_name: ClassVar[str] = "quantization"
    method: str = key(STR)
    calibration_rows: int = key(INT)
    ops: tuple[str, ...] | None = key(list_of(STR), optional=True)
    weight_type: str | None = key(STR, optional=True)
    per_channel: bool | None = key(BOOL, optional=True)
    activation_type: str | None = key(STR, optional=True)
    bytes_fp32: int | None = key(INT, optional=True)
    bytes_int8: int | None = key(INT, optional=True)


@dataclass(frozen=True, kw_only=True)
class TraversalTrees(Section):
    """``transform.trees`` of a TFLite forest that walks each tree: trees, nodes and depth."""

    schema_name: ClassVar[str] = "traversal_trees"
    form: str = key(exactly("traversal"))
    trees: int = key(INT)
    nodes: int = key(INT)
    depth: int = key(INT)
    compare: str = key(STR)


@dataclass(frozen=True, kw_only=True)
class GemmTrees(Section):
    """``transform.trees`` of a TFLite forest evaluated as matrix products: trees and the padded tree size."""

    schema_name: ClassVar[str] = "gemm_trees"
    form: str = key(exactly("gemm"))
    trees: int = key(INT)
    max_internal_nodes: int = key(INT)
    max_leaves: int = key(INT)
    compare: str = key(STR)


TREES = tagged("form", {"traversal": TraversalTrees, "gemm": GemmTrees})


@dataclass(frozen=True, kw_only=True)
class TfliteMicroRun(Section):
    """``transform.tflite_micro``: TensorFlow Lite Micro's run of the file on training rows, and its arena."""

    schema_name: ClassVar[str] = "tflite_micro_run"
    interpreter: str = key(STR)
    ran: bool = key(exactly(True))
    rows: int = key(INT)
    max_diff: float = key(NUMBER)
    arena_head: int = key(INT)
    arena_tail: int = key(INT)
    arena_min: int = key(INT)  #: the smallest arena TFLM prepares the file in, on the build machine
    arena_margin: int = key(INT)  #: what the firmware's arena gets beyond it (TFLM aligns the arena's start)
    arena_bytes: int = key(INT)  #: arena_min + arena_margin: the firmware's EDGEML_ARENA_BYTES


@dataclass(frozen=True, kw_only=True)
class TfliteMicroSkipped(Section):
    """``transform.tflite_micro`` when TensorFlow Lite Micro could not run here: why (the operators were checked)."""

    schema_name: ClassVar[str] = "tflite_micro_skipped"
    interpreter: str = key(STR)
    ran: bool = key(exactly(False))
    why: str = key(STR)


TFLITE_MICRO = tagged("ran", {True: TfliteMicroRun, False: TfliteMicroSkipped})


#: The sections of this module, for the JSON Schema's ``$defs``.
DETAILS = (FileRef, NumericReference, BooleanReference, CategoricalReference, UnmonitoredReference, ClassesOutput,
           NumericOutput, SearchBudgets, Trial, Quantization, TraversalTrees, GemmTrees,
           TfliteMicroRun, TfliteMicroSkipped)
