"""Measuring a trial on a target: the Cost a target's measure gives a fitted model is what the pieces give.

The measure is built from the real profiles (rpi4: ONNX; cortex-m7: TFLite Micro's operators, int8 then fp32, sized
as the plain-C firmware form; coral-edgetpu: int8 only) on a real data set, and compared with the same numbers
computed step by step from the public exporters, the cost model and TFLite Micro's interpreter — what the search
measured inside itself before.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache

import numpy as np
import pytest
from conftest import AI4I_DROP, DATASETS
from lightgbm import LGBMClassifier
from sklearn.ensemble import RandomForestClassifier

from edgeml.errors import ExportError
from edgeml.export.c.size import model_c_bytes, preprocessing_c_bytes
from edgeml.export.onnx import estimator_bytes
from edgeml.export.tflite import micro as tflm
from edgeml.export.tflite.pipeline import estimator_tflite, overhead_bytes
from edgeml.models.estimators import StandardizedLogisticRegression, StandardizedMLPClassifier, model_steps
from edgeml.search.costmodel import load_cost_model, structure_of
from edgeml.search.trials import Cost
from edgeml.targets.measure import TrialMeasure, target_budget
from edgeml.targets.opsets import load_op_set, problems
from edgeml.targets.profiles import load_target


@cache
def data():
    from edgeml.data.ingest import read_table
    from edgeml.data.prepare import prepare

    return prepare(read_table(DATASETS / "ai4i2020.csv").frame, "Machine failure", drop=AI4I_DROP)


@cache
def models() -> dict:
    X, y = data().X["train"], data().y["train"]
    return {
        "lgbm": LGBMClassifier(n_estimators=20, num_leaves=8, verbose=-1, random_state=0).fit(X, y),
        "rf": RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0).fit(X, y),
        "linear": StandardizedLogisticRegression(max_iter=300).fit(X, y),
        "mlp": StandardizedMLPClassifier(hidden_layer_sizes=(16,), max_iter=50, random_state=0).fit(X, y),
    }


def target_of(name: str):
    """A built-in profile, or ``cortex-m7-tflm``: cortex-m7 with TensorFlow Lite Micro as its firmware form."""
    if name == "cortex-m7-tflm":
        return replace(load_target("cortex-m7"), name=name, firmware="tflm")
    return load_target(name)


def by_hand(target_name: str, model) -> Cost:
    """The cost of ``model`` on the target, step by step."""
    d, target = data(), target_of(target_name)
    X = d.X["train"]
    n_inputs, speed = len(d.inputs.features), target.budgets.speed_factor or 1.0
    latency = load_cost_model().predict_ms(structure_of(model), n_inputs, speed)
    if target.firmware == "c":  # the plain-C form: its tables + code as the size, one row's floats as the RAM
        flash, ram = model_c_bytes(model, X.shape[1], d.task, len(d.classes))
        return Cost(flash + preprocessing_c_bytes(d.preprocessor, d.inputs, d.classes), latency, ram)
    if target.formats[0] != "tflite":
        return Cost(estimator_bytes(model, X.shape[1], d.task), latency)
    first = None
    for precision in target.precisions:
        try:
            exp = estimator_tflite(model_steps(model), X.shape[1], d.task, precision, X)
        except ExportError as exc:
            first = first or exc
            continue
        extra = overhead_bytes(d.preprocessor, d.inputs, d.task, d.classes, "int8" if precision == "int8" else "fp32",
                               d.calibration)
        op_set = load_op_set(target.tflite_ops)
        unmapped, arena = tuple(problems(exp.ops, exp.tensor_types, op_set)), exp.details["planned_bytes"]
        if not unmapped and op_set.verify_with == "tflite-micro" and tflm.available():
            row = np.zeros((1, exp.details["input_width"]), np.int8 if precision == "int8" else np.float32)
            arena = int(tflm.run(exp.data, row, arena).arena_bytes * tflm.SETUP_PEAK)
        if not unmapped:
            return Cost(len(exp.data) + extra, latency, arena)
    raise AssertionError(f"{target_name}: no precision maps for this model ({first})")


@pytest.mark.parametrize("target_name", ["rpi4", "cortex-m7", "cortex-m7-tflm", "coral-edgetpu"])
@pytest.mark.parametrize("model_name", ["lgbm", "rf", "linear", "mlp"])
def test_the_measure_of_a_target_is_what_the_pieces_give(datasets, target_name, model_name):
    d, target = data(), target_of(target_name)
    budget = target_budget(target)
    measure = TrialMeasure.for_target(target, d)
    model = models()[model_name]
    cost = measure(model)
    if target_name == "coral-edgetpu" and model_name in ("lgbm", "rf"):  # int8 only: trees cannot be written
        structure = structure_of(model)
        assert cost.model_bytes == load_cost_model().predict_bytes(structure)
        assert cost.arena_bytes is None and len(cost.unmapped) == 1
        assert cost.unmapped[0].startswith("int8: tree ensembles are not exported in int8")
        assert budget.broken(cost) == ("tflite_ops",)
        return
    assert cost == by_hand(target_name, model)
    assert budget.broken(cost) == ()


def test_the_measure_takes_the_target_speed_factor_and_inputs(datasets):
    d = data()
    rpi4, zero = (TrialMeasure.for_target(load_target(n), d) for n in ("rpi4", "rpi-zero-2w"))
    model = models()["lgbm"]
    fast, slow = rpi4(model), zero(model)
    assert slow.model_bytes == fast.model_bytes
    assert slow.latency_ms == pytest.approx(fast.latency_ms * zero.speed_factor / rpi4.speed_factor)
    assert rpi4.n_inputs == len(d.inputs.features) and rpi4.tflite_overhead_bytes == () and rpi4.calibration is None
    cortex_m7 = target_of("cortex-m7-tflm")
    cortex = TrialMeasure.for_target(cortex_m7, d)
    assert [p for p, _ in cortex.tflite_overhead_bytes] == list(cortex_m7.precisions) == list(cortex.tflite_precisions)
    assert cortex.tflite_ops == cortex_m7.tflite_ops and cortex.max_arena_bytes == cortex_m7.budgets.max_arena_bytes
    in_c = TrialMeasure.for_target(load_target("cortex-m7"), d)  # plain C: sized from the model, no TFLite file
    assert in_c.firmware == "c" and in_c.tflite_precisions == () and in_c.c_overhead_bytes > 0
    assert in_c.max_arena_bytes == cortex_m7.budgets.max_arena_bytes


def test_the_budget_of_a_target_holds_its_limits_only():
    cortex_m7 = load_target("cortex-m7")
    b = target_budget(cortex_m7)
    assert (b.max_model_bytes, b.latency_budget_ms, b.max_arena_bytes, b.tflite_ops) == (
        cortex_m7.budgets.max_model_bytes, cortex_m7.budgets.latency_budget_ms, cortex_m7.budgets.max_arena_bytes,
        cortex_m7.tflite_ops)
    assert target_budget(load_target("rpi4")).tflite_ops == ""  # runs ONNX: no operator set to map to
