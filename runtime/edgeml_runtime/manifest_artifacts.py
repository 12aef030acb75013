"""The artifact sections of ``manifest.json``: each model file, how it was derived, verified or left out.

An :class:`Artifact` (``artifacts[i]``) is one model file a device may load,
checked byte for byte on every load, with the :class:`Transform` that derived
it from the exported model and, at reduced precision, its
:class:`MetricDrop`. A :class:`Verification` (``verification[i]``) is an
artifact scored through the runtime against the host, with the tolerance it
was held to: an :class:`AbsoluteTolerance` for a classifier's probabilities,
a :class:`RelativeTolerance` (a share of the output's scale) for a
regressor's values; a device's self-test and ``edgeml verify`` apply the same
one. A :class:`NotShipped` (``not_shipped[i]``) is an artifact the target
asked for that the bundle lacks, and why.
They are sections of :class:`~edgeml_runtime.manifest.Manifest`, read as
strictly (:mod:`edgeml_runtime.sections`), and importable from
:mod:`edgeml_runtime.manifest` too; a transform's details are in
:mod:`edgeml_runtime.manifest_details`.

Example:

>>> a = {"path": "model.onnx", "format": "onnx", "precision": "fp32", "bytes": 1024, "sha256": "0" * 64,
...      "engine": "onnxruntime", "outputs": {"value": "variable"}, "inputs": ["temp"]}
>>> Artifact.from_dict(a, "manifest.json: artifacts[0]").to_dict() == a
True
>>> Artifact.from_dict({**a, "path": "../model.onnx"}, "manifest.json: artifacts[0]")
Traceback (most recent call last):
...
edgeml_runtime.errors.BundleError: manifest.json: artifacts[0].path is '../model.onnx', expected a plain file \
name in the bundle folder (letters, digits, '_', '-', '.'; not starting with '.'); rebuild the bundle
>>> tolerance = TOLERANCE.read({"kind": "relative", "rtol": 3.0517578125e-05, "scale": 1000.0}, "tolerance")
>>> print(tolerance, tolerance.allowed)
0.0305 = 3.05e-05 of the scale 1000 0.030517578125
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .manifest_details import PRECISIONS, TFLITE_MICRO, TREES, FileRef, Quantization
from .sections import (
    BOOL,
    FILE_NAME,
    INT,
    NUMBER,
    SHA256,
    STR,
    Kind,
    Section,
    exactly,
    key,
    list_of,
    mapping_of,
    nullable,
    one_of,
    section,
    tagged,
    wrong,
)

#: The artifact formats a bundle may ship (a target profile lists some of them, in its order of preference).
FORMATS = ("onnx", "ort", "tflite")


@dataclass(frozen=True, kw_only=True)
class MetricDrop(Section):
    """What a reduced-precision artifact lost against fp32 on the test split, and whether that is allowed."""

    schema_name: ClassVar[str] = "metric_drop"
    metric: str = key(one_of("accuracy", "rmse"))
    fp32: float = key(NUMBER)
    value: float = key(NUMBER)
    drop: float = key(NUMBER)
    allowed: float = key(NUMBER)
    within: bool = key(BOOL)


@dataclass(frozen=True, kw_only=True)
class Transform(Section):
    """``artifacts[i].transform``: how a derived artifact was made from the exported model."""

    schema_name: ClassVar[str] = "transform"
    done: tuple[str, ...] = key(list_of(STR, min_items=1))
    family: str | None = key(STR, optional=True)
    operators: tuple[str, ...] | None = key(list_of(STR), optional=True)
    op_set: str | None = key(STR, optional=True)
    planned_bytes: int | None = key(INT, optional=True)
    bytes_fp32: int | None = key(INT, optional=True)
    output_offset: float | None = key(NUMBER, optional=True)
    quantization: Quantization | None = key(section(Quantization), optional=True)
    trees: Section | None = key(TREES, optional=True)
    tflite_micro: Section | None = key(TFLITE_MICRO, optional=True)
    fp16_ops: tuple[str, ...] | None = key(list_of(STR), optional=True)
    optimization: str | None = key(STR, optional=True)
    ort_version: str | None = key(STR, optional=True)
    required_operators: tuple[str, ...] | None = key(list_of(STR), optional=True)


METRICS = mapping_of(nullable(NUMBER))
OUTPUTS = Kind("an object naming the label and probabilities outputs, or the value output",
               lambda v, at: _outputs(v, at), dict, {"oneOf": [
                   {"type": "object", "properties": {"label": STR.schema, "probabilities": STR.schema},
                    "required": ["label", "probabilities"], "additionalProperties": False},
                   {"type": "object", "properties": {"value": STR.schema}, "required": ["value"],
                    "additionalProperties": False}]})


def _outputs(v, where: str) -> dict:
    if not (isinstance(v, dict) and set(v) in ({"label", "probabilities"}, {"value"})
            and all(isinstance(x, str) for x in v.values())):
        raise wrong(where, v, 'an object {"label": …, "probabilities": …} or {"value": …} of output names')
    return dict(v)


@dataclass(frozen=True)
class Artifact(Section):
    """One model file in a bundle, as ``artifacts[i]`` describes it; checked byte for byte on every load.

    ``opset`` is the exported model's; ``transform`` and ``files`` belong to
    derived artifacts, ``metric_drop`` to reduced-precision ones.
    """

    schema_name: ClassVar[str] = "artifact"
    bundle_requires: ClassVar[tuple[str, ...]] = ("test_metrics",)
    path: str = key(FILE_NAME)
    format: str = key(one_of(*FORMATS))
    precision: str = key(one_of(*PRECISIONS))
    bytes: int = key(INT)
    sha256: str = key(SHA256)
    engine: str = key(one_of("onnxruntime", "litert"), default="")
    outputs: dict = key(OUTPUTS, factory=dict)
    inputs: tuple[str, ...] = key(list_of(STR), default=())
    opset: dict | None = key(mapping_of(INT), optional=True)
    files: dict[str, FileRef] | None = key(mapping_of(section(FileRef)), optional=True)
    transform: Transform | None = key(section(Transform), optional=True)
    test_metrics: dict | None = key(METRICS, optional=True)
    metric_drop: MetricDrop | None = key(section(MetricDrop), optional=True)


@dataclass(frozen=True, kw_only=True)
class NotShipped(Section):
    """One of ``not_shipped``: an artifact the target asked for that is not in the bundle, and why."""

    schema_name: ClassVar[str] = "not_shipped"
    format: str = key(one_of(*FORMATS))
    precision: str = key(one_of(*PRECISIONS))
    applicable: bool = key(BOOL)
    reason: str = key(STR)


def _positive(v, where: str):
    if isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < float("inf"):
        return v
    raise wrong(where, v, "a positive finite number")  # NaN compares false: refused too


POSITIVE = Kind("a positive finite number", _positive, schema={"type": "number", "exclusiveMinimum": 0})


@dataclass(frozen=True, kw_only=True)
class AbsoluteTolerance(Section):
    """``verification[i].tolerance`` of a classifier's artifact: each probability within ``atol`` of the
    expected one, and the labels equal unless the expected two most likely classes are within ``atol`` (a tie)."""

    schema_name: ClassVar[str] = "absolute_tolerance"
    kind: str = key(exactly("absolute"), default="absolute")
    atol: float = key(POSITIVE)

    @property
    def allowed(self) -> float:
        """The largest difference allowed, in the output's units."""
        return self.atol

    def __str__(self) -> str:
        return f"{self.atol:g}"


@dataclass(frozen=True, kw_only=True)
class RelativeTolerance(Section):
    """``verification[i].tolerance`` of a regressor's artifact: each value within ``rtol`` times ``scale`` of
    the expected one, ``scale`` being the largest |value| the host pipeline gave on the rows the build compared.

    float32 keeps about 7 significant digits of what it adds up (the leaves of
    hundreds of trees, the terms of a dot product), so its error follows the
    size of those terms, the output's scale, and not each row's own value: a
    count near 0 summed from leaves in the hundreds carries the rounding of
    the hundreds.
    """

    schema_name: ClassVar[str] = "relative_tolerance"
    kind: str = key(exactly("relative"), default="relative")
    rtol: float = key(POSITIVE)
    scale: float = key(POSITIVE)

    @property
    def allowed(self) -> float:
        """The largest difference allowed, in the output's units: ``rtol × scale``."""
        return self.rtol * self.scale

    def __str__(self) -> str:
        return f"{self.allowed:.3g} = {self.rtol:.3g} of the scale {self.scale:.6g}"


#: A verification's ``tolerance``: by ``kind``, absolute (classification) or relative to a scale (regression).
TOLERANCE = tagged("kind", {"absolute": AbsoluteTolerance, "relative": RelativeTolerance})
Tolerance = AbsoluteTolerance | RelativeTolerance
#: The kind of tolerance each task's artifacts are verified with.
TASK_TOLERANCES: dict[str, type[Section]] = {"classification": AbsoluteTolerance, "regression": RelativeTolerance}


@dataclass(frozen=True, kw_only=True)
class Verification(Section):
    """One of ``verification``: an artifact scored through the runtime on the test split against the host.

    ``max_abs_diff`` is the largest |difference| of a probability or value,
    in the output's units; ``tolerance`` says how much was allowed.
    """

    schema_name: ClassVar[str] = "verification"
    artifact: str = key(STR)
    rows: int = key(INT)
    label_mismatches: int = key(INT)
    ties: int = key(INT)
    max_abs_diff: float = key(NUMBER)
    tolerance: Tolerance = key(TOLERANCE)
    passed: bool = key(BOOL)
    metric_drop: MetricDrop | None = key(section(MetricDrop), optional=True)


def _unit_open(v, where: str):
    if isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1:
        return v
    raise wrong(where, v, "a number from 0 up to (not including) 1")  # NaN compares false: refused too


UNIT_OPEN = Kind("a number from 0 up to (not including) 1", _unit_open,
                 schema={"type": "number", "minimum": 0, "exclusiveMaximum": 1})
#: The metrics a decision threshold is tuned for (``edgeml.search.threshold``).
THRESHOLD_METRICS = ("accuracy", "f1", "balanced_accuracy")


@dataclass(frozen=True, kw_only=True)
class Decision(Section):
    """``decision``: how a binary classifier's label follows from its probabilities, for every artifact.

    The label is ``classes[1]`` when that class's probability is above
    ``threshold`` (equal is ``classes[0]``); 0.5 is argmax. ``metric`` is
    what the threshold was tuned for on ``rows`` validation predictions with
    ``positives`` positive rows (null: not tuned, ``reason`` says why);
    ``valid`` and ``argmax`` that metric there at the threshold and at 0.5.
    The probabilities are the artifact's own, unchanged.
    """

    schema_name: ClassVar[str] = "decision"
    threshold: float = key(UNIT_OPEN)
    metric: str | None = key(nullable(one_of(*THRESHOLD_METRICS)))
    reason: str = key(STR)
    positives: int = key(INT)
    rows: int = key(INT)
    valid: float | None = key(nullable(NUMBER))
    argmax: float | None = key(nullable(NUMBER))

    def labels(self, probabilities):
        """Class indices (0 or 1) for an ``(n, 2)`` probability matrix (NumPy), by :attr:`threshold`."""
        return (probabilities[:, 1] > self.threshold).astype("int64")
