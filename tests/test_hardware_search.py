"""Hardware-aware search: budgets judged in every trial, trials recorded, the frontier, and a clear failure.

Real data (ai4i2020, ccpp) from ../shared/datasets; FLAML's max_iter and a seed, never a wall-clock budget.
"""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pytest
from conftest import AI4I_DROP, DATASETS

from edgeml.errors import SearchError
from edgeml.search.automl import SearchSettings, run_search
from edgeml.search.trials import INFEASIBLE, Cost, HardwareBudget, Trial, frontier, infeasible_message, small_learners
from edgeml.targets.measure import TrialMeasure, target_budget
from edgeml.targets.profiles import load_target

CASES = {
    "ai4i2020": ("ai4i2020.csv", "Machine failure", AI4I_DROP),
    "ccpp": ("ccpp.csv", "PE", ()),
}


@cache
def prepared(name: str) -> dict:
    """One real data set split and preprocessed as ``edgeml build`` does (train / valid / test)."""
    from edgeml.data.ingest import read_table
    from edgeml.data.prepare import prepare

    file, label, drop = CASES[name]
    data = prepare(read_table(DATASETS / file).frame, label, drop=drop)
    return {
        "task": data.task, "inputs": data.inputs, "pre": data.preprocessor, "features": data.features, "y": data.y,
        "X": data.X, "feeds": {p: data.feeds(p) for p in ("train", "test")},
    }


def measure_of(data, speed_factor=1.0):
    """The measure ``edgeml build`` gives the search for a target that runs ONNX this many times slower."""
    return TrialMeasure(data["task"], data["X"]["train"].shape[1], len(data["inputs"].features), speed_factor)


def search(data, learners, budgets=None, max_iter=4, progress=None, speed_factor=1.0):
    """The search as ``edgeml build`` runs it: every trial measured (on this machine, or ``speed_factor`` times
    slower) and judged on ``budgets``."""
    X, y = data["X"], data["y"]
    settings = SearchSettings(task=data["task"], learners=learners, max_iter=max_iter, seed=0, n_jobs=1)
    measure = measure_of(data, speed_factor)
    return run_search(X["train"], y["train"], X["valid"], y["valid"], settings, progress=progress, budgets=budgets,
                      measure=measure)


# --- trials and budgets on real data ---------------------------------------------------------------


def test_every_trial_carries_its_size_latency_and_verdict(datasets):
    data = prepared("ai4i2020")
    zero = load_target("rpi-zero-2w")
    budget = target_budget(zero)
    result = search(data, ("lgbm", "lrl2"), budget, max_iter=5, speed_factor=zero.budgets.speed_factor)

    assert len(result.trials) == 5
    for t in result.trials:
        assert t.config and t.learner in ("lgbm", "lrl2")
        assert 0 <= t.loss < 1 and t.cost.model_bytes > 100 and 0 < t.cost.latency_ms < 1
        assert t.feasible == (t.cost.model_bytes <= budget.max_model_bytes
                              and t.cost.latency_ms <= budget.latency_budget_ms)
        assert t.feasible == (not t.broken)
        d = t.to_dict()  # the manifest keeps the cost's fields flat
        assert (d["model_bytes"], d["latency_ms"]) == (t.cost.model_bytes, round(t.cost.latency_ms, 6))
    json.dumps([t.to_dict() for t in result.trials])  # goes into the manifest as is
    assert result.metric == "roc_auc"  # metric "auto" keeps FLAML's meaning
    assert result.cost.model_bytes and result.cost.latency_ms  # the refitted model, measured the same way
    # The latency is the cost model's prediction for this machine times the profile's speed factor.
    again = search(data, ("lgbm", "lrl2"), HardwareBudget(), max_iter=5)
    for a, b in zip(result.trials, again.trials, strict=False):
        assert a.cost.latency_ms == pytest.approx(b.cost.latency_ms * 18.0)


def test_the_chosen_model_fits_even_when_better_ones_do_not(datasets):
    data = prepared("ai4i2020")
    unlimited = search(data, ("lgbm",), HardwareBudget(), max_iter=8)
    winner = min(unlimited.trials, key=lambda t: t.loss)
    cap = winner.cost.model_bytes - 1  # the unconstrained winner breaks it
    assert any(t.cost.model_bytes <= cap for t in unlimited.trials)

    capped = search(data, ("lgbm",), HardwareBudget(max_model_bytes=cap), max_iter=8)
    feasible = [t for t in capped.trials if t.feasible]
    assert feasible and all(t.cost.model_bytes <= cap for t in feasible)
    assert all("max_model_bytes" in t.broken for t in capped.trials if t.cost.model_bytes > cap)
    assert capped.best_loss == min(t.loss for t in feasible) >= winner.loss
    assert capped.trials[-1].best_loss == capped.best_loss  # progress reports the best model that fits
    assert capped.config != winner.config


def test_a_budget_nothing_meets_fails_with_counts_per_budget(datasets):
    data = prepared("ccpp")
    with pytest.raises(SearchError) as err:
        search(data, ("lgbm", "enet"), HardwareBudget(max_model_bytes=50, latency_budget_ms=5.0), max_iter=3)
    msg = str(err.value)
    assert "no model fits the target's budgets: all 3 trial(s) broke at least one" in msg
    assert "budgets.max_model_bytes = 50: broken by 3 trial(s); the smallest was" in msg
    assert "latency_budget_ms" not in msg.split("To relax")[0]  # 5 ms is met by every trial
    assert "To relax: raise budgets.max_model_bytes to " in msg


def test_a_latency_budget_nothing_meets_names_latency(datasets):
    data = prepared("ccpp")
    budget = HardwareBudget(latency_budget_ms=0.001)
    with pytest.raises(SearchError, match=r"budgets.latency_budget_ms = 0.001: broken by 2 trial\(s\); the fastest"
                                          r" was [\d.]+ ms \(predicted on the target\)"):
        search(data, ("enet",), budget, max_iter=2, speed_factor=18.0)


def test_the_trial_log_is_every_metric_call_in_order(datasets):
    data = prepared("ai4i2020")
    zero = load_target("rpi-zero-2w")
    budget, real = target_budget(zero), measure_of(data, zero.budgets.speed_factor)
    calls, seen = [], []

    def measure(model):  # the real measure, counting its calls
        calls.append(real(model))
        return calls[-1]

    X, y = data["X"], data["y"]
    settings = SearchSettings(task=data["task"], learners=("lgbm", "lrl2"), max_iter=6, seed=0, n_jobs=1)
    result = run_search(X["train"], y["train"], X["valid"], y["valid"], settings, progress=seen.append,
                        budgets=budget, measure=measure)
    trials = result.trials
    # One trial per metric call (the judge measures once per call), then the refitted model once more.
    assert len(trials) == settings.max_iter == len(calls) - 1 and list(trials) == seen
    assert [t.iteration for t in trials] == list(range(len(trials)))
    assert [t.cost for t in trials] == calls[:-1]
    assert result.cost == calls[-1]
    assert all(a.elapsed <= b.elapsed for a, b in zip(trials, trials[1:], strict=False))
    assert {t.learner for t in trials} == {"lgbm", "lrl2"}
    for i, t in enumerate(trials):
        fits = [u for u in trials[:i + 1] if u.feasible]
        best = min(fits, key=lambda u: u.loss) if fits else None
        assert (t.best_loss, t.best_learner) == ((best.loss, best.learner) if best else (None, None))
    losses = [t.best_loss for t in trials if t.best_loss is not None]
    assert losses and all(a >= b for a, b in zip(losses, losses[1:], strict=False))  # best so far never rises


def test_the_trial_log_does_not_depend_on_flamls_log(datasets):
    import logging

    data = prepared("ccpp")
    logged = [t.to_dict() for t in search(data, ("lgbm", "enet"), max_iter=5).trials]
    flaml_logger = logging.getLogger("flaml.automl.logger")
    flaml_logger.disabled = True  # FLAML's log lines go nowhere: no handler, no filter sees them
    try:
        silent = [t.to_dict() for t in search(data, ("lgbm", "enet"), max_iter=5).trials]
    finally:
        flaml_logger.disabled = False
    assert len(silent) == 5
    for a, b in zip(logged, silent, strict=True):
        assert {**a, "elapsed": None} == {**b, "elapsed": None}


def test_budgets_need_a_measure(datasets):
    data = prepared("ccpp")
    X, y = data["X"], data["y"]
    settings = SearchSettings(task="regression", learners=("enet",), max_iter=2, seed=0, n_jobs=1)
    with pytest.raises(SearchError, match=r"the budgets max_model_bytes can only be judged on measured trials; "
                                          r"pass measure="):
        run_search(X["train"], y["train"], X["valid"], y["valid"], settings, budgets=HardwareBudget(max_model_bytes=9))
    result = run_search(X["train"], y["train"], X["valid"], y["valid"], settings)
    assert [(t.cost, t.feasible) for t in result.trials] == [(None, True)] * 2
    assert result.cost is None
    assert [(d["model_bytes"], d["latency_ms"]) for d in (t.to_dict() for t in result.trials)] == [(None, None)] * 2


def test_mlp_learner_trains_and_exports_with_parity(datasets):
    import onnxruntime as ort
    from sklearn.pipeline import Pipeline

    from edgeml.export.onnx import to_onnx
    from edgeml.models.estimators import model_steps

    for name in ("ai4i2020", "ccpp"):
        data = prepared(name)
        result = search(data, ("mlp",), max_iter=3)
        assert result.learner == "mlp" and result.trials[0].config["hidden"]
        pipeline = Pipeline([("pre", data["pre"]), *model_steps(result.model)])
        model = to_onnx(pipeline, data["inputs"], data["task"], name=name)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        out = session.run(None, data["feeds"]["test"])
        host_in = data["features"]["test"]
        if data["task"] == "classification":
            assert result.metric == "roc_auc" and result.best_loss < 0.2
            np.testing.assert_allclose(out[1], pipeline.predict_proba(host_in), atol=1e-4)
            assert (out[0].ravel() == pipeline.predict(host_in)).all()
        else:
            assert result.metric == "r2" and result.best_loss < 0.1
            np.testing.assert_allclose(out[0].ravel(), pipeline.predict(host_in), rtol=1e-4)


# --- the frontier and the failure message, on hand-made trials ----------------------------------


def trial(i, loss, size, ms, broken=(), learner="lgbm"):
    return Trial(i, learner, float(i), None, None, config={"i": i}, loss=loss, cost=Cost(size, ms),
                 feasible=not broken, broken=tuple(broken))


def test_frontier_keeps_the_best_loss_at_each_size_and_latency():
    trials = [
        trial(0, 0.30, 1_000, 0.010),          # smallest and fastest: on the frontier
        trial(1, 0.35, 2_000, 0.020),          # worse than 0 on everything: off
        trial(2, 0.20, 5_000, 0.015),          # better loss, bigger: on
        trial(3, 0.20, 5_000, 0.015),          # a duplicate of 2: kept once
        trial(4, 0.10, 50_000, 0.050, ["max_model_bytes"]),  # best loss, over budget: on, marked infeasible
        trial(5, 0.25, 4_000, 0.030),          # smaller than 2 but slower: on (nothing beats it on all three)
        trial(6, float("inf"), 100, 0.001),    # failed trial: never on the frontier
        trial(7, 0.20, 6_000, 0.015),          # as good as 2 but bigger: off
        Trial(8, "lgbm", 8.0, None, None),     # not measured: ignored
    ]
    front = frontier(trials)
    assert [t.iteration for t in front] == [0, 5, 2, 4]
    assert [t.feasible for t in front] == [True, True, True, False]
    assert frontier([]) == []


def test_infeasible_message_counts_each_budget_and_says_what_to_relax():
    budget = HardwareBudget(max_model_bytes=10_000, latency_budget_ms=1.0)
    trials = [
        trial(0, 0.2, 12_000, 0.5, ["max_model_bytes"]),
        trial(1, 0.1, 30_000, 2.0, ["max_model_bytes", "latency_budget_ms"]),
        trial(2, 0.3, 9_000, 1.234, ["latency_budget_ms"], learner="lrl2"),
    ]
    msg = infeasible_message(trials, budget)
    assert "all 3 trial(s) broke at least one" in msg
    assert "budgets.max_model_bytes = 10,000: broken by 2 trial(s); the smallest was 12,000 bytes" in msg
    assert "budgets.latency_budget_ms = 1.0: broken by 2 trial(s); the fastest was 1.23 ms" in msg
    assert "raise budgets.max_model_bytes to 12_000 (admits lgbm, validation loss 0.2)" in msg
    assert "raise budgets.latency_budget_ms to 1.24 (admits lrl2, validation loss 0.3)" in msg

    both = infeasible_message([trials[1]], budget)
    assert "raise several budgets" in both
    assert "estimators (lrl1, lrl2, enet, mlp)" in both


def test_the_small_families_suggested_are_read_from_the_registries(extra_learner):
    unmapped = Trial(0, "lgbm", 0.0, None, None, loss=0.1, cost=Cost(500, 0.1, unmapped=("GATHER is not in it",)),
                     feasible=False, broken=("tflite_ops",))
    msg = infeasible_message([unmapped], HardwareBudget(tflite_ops="tflite-micro"))
    assert small_learners() == ("lrl1", "lrl2", "enet", "mlp", extra_learner)
    assert f"map to the operator set (lrl1, lrl2, enet, mlp, {extra_learner})" in msg
    assert "tflite_ops = 'tflite-micro': 1 trial(s) (lgbm) cannot be written for it: GATHER is not in it" in msg


B = HardwareBudget(max_model_bytes=1_000, latency_budget_ms=2.0, max_arena_bytes=4_000, tflite_ops="tflite-micro")


@pytest.mark.parametrize(("cost", "broken", "excess"), [
    (Cost(1_000, 2.0, 4_000), (), 0.0),                                  # every budget met exactly
    (Cost(1_500, 1.0), ("max_model_bytes",), 0.5),                       # no arena measured: not judged
    (Cost(500, 3.0, 1_000), ("latency_budget_ms",), 0.5),
    (Cost(500, 1.0, 6_000), ("max_arena_bytes",), 0.5),
    (Cost(500, 1.0, 1_000, ("operator(s) SELECT are not in the tflite-micro set",)), ("tflite_ops",), 1.0),
    (Cost(3_000, 4.0, 8_000, ("GATHER",)), ("max_model_bytes", "latency_budget_ms", "max_arena_bytes", "tflite_ops"),
     2.0 + 1.0 + 1.0 + 1.0),
])
def test_a_budget_judges_a_cost(cost, broken, excess):
    assert B.broken(cost) == broken
    assert B.excess(cost) == pytest.approx(excess)
    assert HardwareBudget().broken(cost) == (("tflite_ops",) if cost.unmapped else ())


@pytest.mark.parametrize(("fields", "message"), [
    ({"model_bytes": -1, "latency_ms": 1.0}, "Cost.model_bytes must be a whole number of bytes >= 0, got -1"),
    ({"model_bytes": 1.5, "latency_ms": 1.0}, "Cost.model_bytes must be a whole number of bytes >= 0, got 1.5"),
    ({"model_bytes": 1, "latency_ms": float("nan")}, "Cost.latency_ms must be a finite number"),
    ({"model_bytes": 1, "latency_ms": 1.0, "arena_bytes": -5}, "Cost.arena_bytes must be None or a whole number"),
    ({"model_bytes": 1, "latency_ms": 1.0, "unmapped": ["x"]}, "Cost.unmapped must be a tuple of reasons"),
])
def test_a_cost_is_validated_once(fields, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        Cost(**fields)


def test_hardware_budget_from_each_profile():
    b = target_budget(load_target("jetson-nano"))
    assert (b.max_model_bytes, b.latency_budget_ms, b.max_arena_bytes, b.tflite_ops) == (50_000_000, 5.0, None, "")
    assert b.broken(Cost(60_000_000, 6.0)) == ("max_model_bytes", "latency_budget_ms")
    assert b.excess(Cost(100_000_000, 5.0)) == pytest.approx(1.0) and b.excess(Cost(1, 1.0)) == 0.0
    assert HardwareBudget().broken(Cost(10**12, 10**6)) == ()
    assert INFEASIBLE > 1e9  # beyond any validation loss FLAML computes
