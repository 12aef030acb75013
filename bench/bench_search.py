"""Trials per time budget on a device target: predicted TFLite costs against exporting every trial, and x86-64.

The search is run as ``edgeml build`` runs it (same preparation, validation,
learners, budgets and measure as :func:`edgeml.build._search`), on the same
data with the same ``--time-budget``, side by side in one run:

* ``x86-64`` (ONNX: every trial exported by the ONNX exporter, as always);
* ``android-arm64`` and ``cortex-m7`` with every trial exported to TFLite
  (and run in TFLite Micro on the M7), as before issue #12;
* the same two with trial costs predicted from the model's shape
  (:mod:`edgeml.targets.predict`), the frontier exported after the search.

For each: the trials, their ratio to x86-64's, the seconds spent measuring
trials, the chosen learner and loss, what the frontier check did, and the
predictor's error on the whole frontier: every frontier trial's configuration
refitted on train+validation, predicted and exported for real.

    .venv/bin/python bench/bench_search.py [--time-budget 30] [--results bench/results]
    .venv/bin/python bench/bench_search.py --time-budget 5 --results /tmp/s   # smoke
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS_DIR, classification_data, publish

#: (target, predict trial costs, whose learners: the target's own or x86-64's). x86-64's learners on the device
#: targets leave out their MLP, whose first five-fold trial alone can take a 30 s budget: the same learners
#: isolate what measuring costs.
RUNS = (("x86-64", False, None), ("android-arm64", False, None), ("android-arm64", True, None),
        ("cortex-m7", False, None), ("cortex-m7", True, None),
        ("android-arm64", False, "x86-64"), ("android-arm64", True, "x86-64"),
        ("cortex-m7", False, "x86-64"), ("cortex-m7", True, "x86-64"))


class Timed:
    """A measure that keeps the seconds its calls took (its ``exact`` and ``predicts`` pass through)."""

    def __init__(self, measure):
        self.measure, self.seconds, self.calls = measure, 0.0, 0
        self.exact = measure.exact
        self.predicts = measure.predicts

    def __call__(self, model):
        started = time.perf_counter()
        try:
            return self.measure(model)
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1


def prepared(work: Path, seed: int):
    from edgeml.data.ingest import read_table
    from edgeml.data.prepare import prepare

    path, label, drop = classification_data(work, seed)
    return Path(path).name, prepare(read_table(path).frame, label, drop=drop, seed=seed)


def search(data, target_name: str, predict: bool, time_budget: float, seed: int, learners_of: str | None = None):
    """One search as the build runs it (with ``learners_of``'s learners instead of the target's own); the result,
    the timed measure and the wall-clock seconds."""
    from edgeml.search.automl import SearchSettings, run_search, usable_learners
    from edgeml.search.validation import choose_validation
    from edgeml.targets.measure import TrialMeasure, target_budget
    from edgeml.targets.profiles import load_target

    target = load_target(target_name)
    measure = Timed(TrialMeasure.for_target(target, data, predict=predict))
    learners = load_target(learners_of).estimators if learners_of else target.estimators
    settings = SearchSettings(data.task, usable_learners(learners, data.task), time_budget=time_budget, seed=seed)
    validation = choose_validation(len(data.y["train"]) + len(data.y["valid"]), data.task,
                                   valid_rows=len(data.y["valid"]), columns=data.X["train"].shape[1],
                                   time_budget=settings.seconds)
    started = time.perf_counter()
    result = run_search(data.X["train"], data.y["train"], data.X["valid"], data.y["valid"], settings,
                        budgets=target_budget(target), measure=measure, validation=validation)
    return result, measure, time.perf_counter() - started


def frontier_error(data, result, measure) -> dict:
    """The predictor against the real export on every frontier trial, refitted on train+validation."""
    from edgeml.search.refit import refit

    X, y = data.fit_matrix()
    size, arena = [], []
    for trial in result.frontier:
        model = refit(trial.learner, dict(trial.config or {}), X, y, data.task).estimator
        p, m = measure.measure(model), measure.exact(model)
        size.append((p.model_bytes - m.model_bytes) / m.model_bytes)
        if p.arena_bytes is not None and m.arena_bytes:
            arena.append((p.arena_bytes - m.arena_bytes) / m.arena_bytes)
    return {"n": len(result.frontier), "size": size, "arena": arena}


def _err(values) -> str:
    if not values:
        return "–"
    a = np.abs(values)
    return f"{a.max():.1%} (mean {a.mean():.1%})"


def run(time_budget: float, seed: int, results: Path) -> Path:
    with tempfile.TemporaryDirectory() as work:
        data_name, data = prepared(Path(work), seed)
    rows, base = [], None
    for target_name, predict, learners_of in RUNS:
        result, measure, seconds = search(data, target_name, predict, time_budget, seed, learners_of)
        base = base or len(result.trials)
        errors = frontier_error(data, result, measure) if measure.predicts else None
        check = result.check
        rows.append((target_name, "predicted" if measure.predicts else "exported",
                     "own" if learners_of is None else learners_of, len(result.trials), len(result.trials) / base,
                     measure.seconds, seconds, result.learner, result.best_loss, check, errors))
        print(f"{target_name} ({rows[-1][1]}, {rows[-1][2]} learners): {len(result.trials)} trials in "
              f"{seconds:.1f} s, {measure.seconds:.1f} s measuring", flush=True)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    lines = [
        "# Trials per time budget: predicted TFLite costs vs exporting every trial",
        "",
        f"`python bench/bench_search.py --time-budget {time_budget:g}` on {data_name} "
        f"({len(data.y['train']) + len(data.y['valid']):,} train+validation rows, validated as the build does), "
        f"seed {seed}, each target's own learners and budgets; {os.cpu_count()} CPUs, load average {load} "
        "(other work on the machine moves these numbers).",
        "",
        "| target | trial costs | learners | trials | vs x86-64 | s measuring trials | s in all | learner | loss | "
        "candidates exported | fallback | predictor's error on the frontier: size | arena |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|---|---|---|",
    ]
    for name, how, learners, n, ratio, measuring, seconds, learner, loss, check, errors in rows:
        fallback = (check.fallback or "none") if check is not None else "–"
        size = _err(errors["size"]) + f" over {errors['n']}" if errors else "–"
        arena = _err(errors["arena"]) if errors else "–"
        lines.append(f"| {name} | {how} | {learners} | {n} | {ratio:.2f}× | {measuring:.1f} | {seconds:.1f} | "
                     f"{learner} | {loss:.4f} | {len(check.candidates) if check else 0} | {fallback} | {size} | "
                     f"{arena} |")
    lines += ["", "Size is the TFLite file (model alone plus the data set's preprocessing); the arena is what TFLite "
              "Micro reports (cortex-m7) or the planned tensors (android-arm64). Errors are |predicted − "
              "measured| / measured on every frontier trial refitted on train+validation.",
              "", "Each target searches its own profile's learners in the profile's order (FLAML starts with the "
              "first); the rows with x86-64's learners compare the measures on the same learners. \"s measuring "
              "trials\" is the part of the budget the device measure took: where it is a small share, the trial "
              "counts differ by how long each learner's fits took, and by other work on the machine."]
    return publish("search", "\n".join(lines), results)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-budget", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    run(args.time_budget, args.seed, args.results)


if __name__ == "__main__":
    main()
