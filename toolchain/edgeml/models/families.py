"""The model families edgeml fits, exports and costs: each registered once, here, with what the others need.

A :class:`Family` is data: the estimator classes it covers, how it computes
(``kind``: ``trees``, ``linear`` or ``mlp``), the reader of its
:class:`~edgeml.models.structure.Structure` for the cost model, how it
converts to ONNX, and the TFLite precisions it is written at. The cost model,
the ONNX and TFLite exporters and the learners (:mod:`edgeml.models.learners`)
all ask :func:`family_of` instead of testing classes themselves.

:func:`family_of` walks the estimator's class MRO, so subclasses resolve
(edgeml's standardising wrappers, FLAML's and the libraries' own
subclasses); an estimator no family covers is an :class:`ExportError` that
names its class and the known families. Classes are named as
``"module:Class"`` and imported at the first lookup, so importing this
module costs nothing. A family is added with :func:`register_family` at the
bottom of this file; registering a name or a class twice raises. A new family
is also wired into the exporters, by its ``kind`` or name: a new kind needs an
emitter in :data:`edgeml.export.tflite.pipeline.MODEL_EMITTERS` (and, for a
dense kind, a reader in ``DENSE_READERS`` of :mod:`edgeml.export.tflite.dense`);
a new tree family a reader in :data:`edgeml.export.tflite.trees.FOREST_READERS`.

Example:

>>> from sklearn.ensemble import ExtraTreesRegressor
>>> f = family_of(ExtraTreesRegressor)
>>> f.name, f.kind, f.tflite_precisions
('forest', 'trees', ('fp32', 'fp16'))
>>> family_of(dict)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
edgeml.errors.ExportError: edgeml has no model family for dict (builtins.dict); it knows lightgbm (...
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from edgeml.errors import EdgeMLError, ExportError
from edgeml.models.structure import (
    Structure,
    forest_structure,
    lightgbm_structure,
    linear_structure,
    mlp_structure,
    xgboost_structure,
)

#: How a family computes: what the cost model's terms and the TFLite exporter's graphs are built for.
KINDS = ("trees", "linear", "mlp")
#: The TFLite precisions edgeml writes.
TFLITE_PRECISIONS = ("fp32", "fp16", "int8")
TREES_NOT_INT8 = (
    "tree ensembles are not exported in int8: each split compares an input with a threshold, and quantizing inputs "
    "and thresholds to 256 levels moves rows across splits, so most rows would reach other leaves than in the host "
    "model; use fp32 (exact) or fp16 (float16 leaf values, float32 thresholds, exact decisions)"
)


@dataclass(frozen=True)
class Family:
    """One model family, as data.

    ``classes`` are ``"module:Class"`` names (subclasses are covered too).
    ``onnx_converter`` is ``""`` when skl2onnx converts the family itself,
    else the ``"module:function"`` converter registered with skl2onnx for each
    class, under ``onnx_alias`` + the class name. ``tflite_refusal`` says why
    the TFLite precisions not in ``tflite_precisions`` are not written.
    """

    name: str
    title: str  # shown to users: "LightGBM"
    group: str  # what a user calls it: "gradient-boosted trees"
    kind: str
    classes: tuple[str, ...]
    structure: Callable[[object], Structure]
    onnx_converter: str = ""
    onnx_alias: str = ""
    tflite_precisions: tuple[str, ...] = TFLITE_PRECISIONS
    tflite_refusal: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"family {self.name!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if not self.classes or any(":" not in c for c in self.classes):
            raise ValueError(f"family {self.name!r}: classes must be 'module:Class' names, got {self.classes!r}")
        unknown = set(self.tflite_precisions) - set(TFLITE_PRECISIONS)
        if unknown:
            raise ValueError(f"family {self.name!r}: unknown TFLite precision(s) {sorted(unknown)}")
        if bool(self.onnx_converter) != bool(self.onnx_alias):
            raise ValueError(f"family {self.name!r}: onnx_converter and onnx_alias go together")

    def estimator_classes(self) -> tuple[type, ...]:
        """The classes of :attr:`classes`, imported."""
        return tuple(import_named(path, "model family class") for path in self.classes)


FAMILIES: dict[str, Family] = {}
_CLASS_PATHS: dict[str, str] = {}  # "module:Class" -> family name
_resolved: dict[type, Family] = {}  # filled at the first lookup


def register_family(family: Family) -> Family:
    """Add ``family``; a name or a class that is already registered raises ``ValueError`` (never overwritten)."""
    if family.name in FAMILIES:
        raise ValueError(f"model family {family.name!r} is already registered")
    taken = [c for c in family.classes if c in _CLASS_PATHS]
    if taken:
        raise ValueError(f"model family {family.name!r}: class {taken[0]} already belongs to family "
                         f"{_CLASS_PATHS[taken[0]]!r}")
    FAMILIES[family.name] = family
    _CLASS_PATHS.update(dict.fromkeys(family.classes, family.name))
    _resolved.clear()
    return family


def find_family(estimator) -> Family | None:
    """The family of ``estimator`` (a fitted model or a class) along its MRO, or ``None``."""
    if not _resolved:
        for family in FAMILIES.values():
            for cls in family.estimator_classes():
                _resolved[cls] = family
    cls = estimator if isinstance(estimator, type) else type(estimator)
    return next((_resolved[c] for c in cls.__mro__ if c in _resolved), None)


def family_of(estimator) -> Family:
    """The family of ``estimator`` (a fitted model or a class); an :class:`ExportError` for one edgeml lacks."""
    family = find_family(estimator)
    if family is None:
        cls = estimator if isinstance(estimator, type) else type(estimator)
        known = ", ".join(f"{f.name} ({f.title})" for f in FAMILIES.values())
        raise ExportError(f"edgeml has no model family for {cls.__name__} ({cls.__module__}.{cls.__qualname__}); "
                          f"it knows {known}. Use one of the target's learners, or register a family in "
                          "edgeml/models/families.py")
    return family


def import_named(path: str, what: str, error: type[EdgeMLError] = ExportError):
    """The object a ``"module:Name"`` path names, imported; ``error`` (naming ``what`` it is) if it does not import.

    >>> import_named("sklearn.ensemble:RandomForestClassifier", "model family class").__name__
    'RandomForestClassifier'
    >>> import_named("sklearn.ensemble:NoSuchForest", "model family class")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    edgeml.errors.ExportError: model family class sklearn.ensemble:NoSuchForest cannot be imported (...); ...
    """
    module, _, name = path.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise error(f"{what} {path} cannot be imported ({exc}); reinstall edgeml and its dependencies") from exc


register_family(Family(
    "lightgbm", "LightGBM", "gradient-boosted trees", "trees",
    ("lightgbm:LGBMClassifier", "lightgbm:LGBMRegressor"), lightgbm_structure,
    onnx_converter="onnxmltools.convert.lightgbm.operator_converters.LightGbm:convert_lightgbm",
    onnx_alias="LightGbm", tflite_precisions=("fp32", "fp16"), tflite_refusal=TREES_NOT_INT8,
))
register_family(Family(
    "xgboost", "XGBoost", "gradient-boosted trees", "trees",
    ("xgboost:XGBClassifier", "xgboost:XGBRegressor"), xgboost_structure,
    onnx_converter="onnxmltools.convert.xgboost.operator_converters.XGBoost:convert_xgboost",
    onnx_alias="XGBoost", tflite_precisions=("fp32", "fp16"), tflite_refusal=TREES_NOT_INT8,
))
register_family(Family(
    "forest", "scikit-learn random forest / extra trees", "random forest", "trees",
    ("sklearn.ensemble:RandomForestClassifier", "sklearn.ensemble:RandomForestRegressor",
     "sklearn.ensemble:ExtraTreesClassifier", "sklearn.ensemble:ExtraTreesRegressor"), forest_structure,
    tflite_precisions=("fp32", "fp16"), tflite_refusal=TREES_NOT_INT8,
))
register_family(Family(
    "linear", "scikit-learn linear model", "linear", "linear",
    ("sklearn.linear_model:LogisticRegression", "sklearn.linear_model:LinearRegression",
     "sklearn.linear_model:ElasticNet", "sklearn.linear_model:Ridge",
     "edgeml.models.estimators:StandardizedLogisticRegression", "edgeml.models.estimators:StandardizedElasticNet"),
    linear_structure,
))
register_family(Family(
    "mlp", "scikit-learn multi-layer perceptron", "neural network", "mlp",
    ("sklearn.neural_network:MLPClassifier", "sklearn.neural_network:MLPRegressor",
     "edgeml.models.estimators:StandardizedMLPClassifier", "edgeml.models.estimators:StandardizedMLPRegressor"),
    mlp_structure,
))

__all__ = ["FAMILIES", "KINDS", "TFLITE_PRECISIONS", "TREES_NOT_INT8", "Family", "family_of", "find_family",
           "import_named", "register_family"]
