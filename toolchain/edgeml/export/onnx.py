"""Export a fitted host pipeline, preprocessing included, to one ONNX model.

The model takes every raw feature as its own named input (float for numbers,
string for categories, NaN allowed for missing numbers) and returns the class
index and the probabilities, or the predicted value — the label itself: a
regressor that learnt a log-scale label (:class:`~edgeml.models.target.LogTarget`)
is converted without its wrapper and the inverse is appended to the graph
(:mod:`edgeml.export.inverse`). LightGBM and XGBoost are
converted by onnxmltools, registered with skl2onnx once, here, as their model
families say (:func:`register_converters`). :func:`estimator_bytes` measures a
fitted estimator's export alone, as the search measures each trial.
"""

from __future__ import annotations

import warnings
from functools import cache

import numpy as np
import onnx
from sklearn.pipeline import Pipeline

from edgeml.errors import ExportError
from edgeml.export.inverse import append_onnx, split
from edgeml.models.families import FAMILIES, find_family, import_named
from edgeml_runtime.schema import InputSchema

#: The default ONNX opsets: what onnxmltools' tree converters accept and onnxruntime ≥ 1.17 runs.
OPSET = {"": 15, "ai.onnx.ml": 3}


@cache
def register_converters() -> None:
    """Teach skl2onnx every model family that names its own converter (LightGBM, XGBoost: onnxmltools).

    The families (:mod:`edgeml.models.families`) say which converter and alias; each of their classes is
    registered with the classifier or regressor shape calculator and options.
    """
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from sklearn.base import ClassifierMixin

    for family in FAMILIES.values():
        if not family.onnx_converter:
            continue  # skl2onnx converts it itself
        convert = import_named(family.onnx_converter, f"the ONNX converter of model family {family.name!r}")
        for cls in family.estimator_classes():
            if issubclass(cls, ClassifierMixin):
                shape, options = calculate_linear_classifier_output_shapes, _CLASSIFIER_OPTIONS
            else:
                shape, options = calculate_linear_regressor_output_shapes, None
            update_registered_converter(cls, family.onnx_alias + cls.__name__, shape, convert, options=options)


_CLASSIFIER_OPTIONS = {"nocl": [True, False], "zipmap": [True, False, "columns"]}


def align_thresholds(pipeline: Pipeline) -> Pipeline:
    """Make a LightGBM model's split thresholds exact in float32, in place; returns the pipeline.

    LightGBM compares a double threshold ``t``; ONNX tree ops hold float32
    thresholds, and rounding ``t`` to the nearest float32 flips the decision
    for a float32 input that lies between the two. Every input a device has
    is float32, so each ``t`` is replaced by the float32 ``w`` with
    ``x <= t  ⇔  x <= w`` for every float32 ``x`` (the largest float32 not
    above ``t``). The host model's predictions on float32 inputs — what the
    host pipeline is fed, through the runtime's encoder — do not change.
    """
    from lightgbm import Booster

    estimator = split(pipeline.steps[-1][1])[0]  # a LogTarget's regressor is what compares the thresholds
    family = find_family(estimator)
    if family is None or family.name != "lightgbm":
        return pipeline
    # "tree_sizes=" gives each tree's byte length; without it LightGBM parses trees in sequence.
    lines = [x for x in estimator.booster_.model_to_string().split("\n") if not x.startswith("tree_sizes=")]
    for i, line in enumerate(lines):
        if line.startswith("threshold="):
            t = np.array(line[len("threshold="):].split(), dtype=np.float64)
            w = t.astype(np.float32)
            above = w.astype(np.float64) > t
            w[above] = np.nextafter(w[above], np.float32(-np.inf))
            lines[i] = "threshold=" + " ".join(repr(float(v)) for v in w)
    estimator._Booster = Booster(model_str="\n".join(lines))
    return pipeline


def initial_types(schema: InputSchema):
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    return [
        (f, StringTensorType([None, 1]) if c.kind == "categorical" else FloatTensorType([None, 1]))
        for c in schema.columns
        for f in c.features
    ]


def to_onnx(pipeline: Pipeline, schema: InputSchema, task: str, *, name: str,
            opset: dict | None = None) -> onnx.ModelProto:
    """Convert ``pipeline`` to a checked ONNX model; an unsupported model is an :class:`ExportError`."""
    estimator = split(pipeline.steps[-1][1])[0]
    model = _convert(pipeline, task, name, initial_types(schema), dict(opset or OPSET),
                     f"cannot export the {type(estimator).__name__} pipeline to ONNX",
                     "Exclude this estimator from the target's 'estimators' and build again")
    _sort_opset_imports(model)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported ONNX model fails onnx.checker: {exc}") from exc
    return model


def estimator_bytes(estimator, n_features: int, task: str) -> int:
    """The size of ``estimator`` exported alone to ONNX (one float input of width ``n_features``).

    This is what the model adds to an artifact; the preprocessing in front of
    it (imputation, one-hot encoding) adds a few hundred bytes to a few KiB,
    depending on the number of categories. ``estimator`` may be one of edgeml's
    standardising wrappers (its scaler is exported with it).
    """
    from skl2onnx.common.data_types import FloatTensorType

    from edgeml.models.estimators import model_steps

    pipeline = Pipeline(model_steps(estimator))
    model = _convert(pipeline, task, "size", [("X", FloatTensorType([None, n_features]))], dict(OPSET),
                     f"cannot export {type(pipeline.steps[-1][1]).__name__} to ONNX to measure its size")
    return model.ByteSize()


def _convert(pipeline: Pipeline, task: str, name: str, inputs: list, opset: dict, failed: str,
             fix: str = "") -> onnx.ModelProto:
    """skl2onnx's conversion of ``pipeline`` (every family's converter registered, probabilities as a plain
    tensor, skl2onnx's warnings silenced), a label transform's inverse appended; an :class:`ExportError` saying
    ``failed``, why, and ``fix``."""
    from skl2onnx import convert_sklearn

    register_converters()
    (name_last, wrapped), before = pipeline.steps[-1], pipeline.steps[:-1]
    last, inverse = split(wrapped)
    if inverse is not None:
        pipeline = Pipeline([*before, (name_last, last)])
    options = {id(last): {"zipmap": False}} if task == "classification" else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = convert_sklearn(pipeline, name=name, initial_types=inputs, target_opset=opset, options=options)
    except Exception as exc:  # converters raise RuntimeError, NotImplementedError, MissingShapeCalculator…
        raise ExportError(f"{failed}: {exc}" + (f". {fix}" if fix else "")) from exc
    return model if inverse is None else append_onnx(model, inverse)


def _sort_opset_imports(model: onnx.ModelProto) -> None:
    """Put the opset imports in domain order: skl2onnx collects them in a set, whose order changes from run to run."""
    imports = sorted((o.domain, o.version) for o in model.opset_import)
    del model.opset_import[:]
    model.opset_import.extend(onnx.helper.make_opsetid(domain, version) for domain, version in imports)


def output_names(model: onnx.ModelProto, task: str) -> dict[str, str]:
    """Which graph output holds what: ``label`` and ``probabilities``, or ``value``."""
    names = [o.name for o in model.graph.output]
    if task == "classification":
        if len(names) != 2:
            raise ExportError(f"expected a label and a probabilities output, the model has {names}")
        return {"label": names[0], "probabilities": names[1]}
    return {"value": names[0]}


def opset_of(model: onnx.ModelProto) -> dict[str, int]:
    return {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}


__all__ = ["OPSET", "align_thresholds", "estimator_bytes", "initial_types", "opset_of", "output_names",
           "register_converters", "to_onnx"]
