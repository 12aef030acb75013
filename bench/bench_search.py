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

A search's trial count moves with the path FLAML takes (which learner it
tries next depends on how long the last fits took), so every run is repeated
with ``--repeats`` search seeds on the same prepared data, the runs of one
seed back to back, and the table gives the mean and spread; the ratio is of
the mean trial counts.

    .venv/bin/python bench/bench_search.py [--time-budget 30] [--repeats 2] [--results bench/results]
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


def _ms(values, digits: int = 0) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.{digits}f}" + (f" ± {values.std(ddof=1):.{digits}f}" if len(values) > 1 else "")


def run(time_budget: float, seed: int, results: Path, repeats: int = 1) -> Path:
    with tempfile.TemporaryDirectory() as work:
        data_name, data = prepared(Path(work), seed)
    runs = {run: [] for run in RUNS}
    for search_seed in range(seed, seed + repeats):
        for target_name, predict, learners_of in RUNS:
            result, measure, seconds = search(data, target_name, predict, time_budget, search_seed, learners_of)
            errors = frontier_error(data, result, measure) if measure.predicts else None
            runs[target_name, predict, learners_of].append(
                {"trials": len(result.trials), "measuring": measure.seconds, "seconds": seconds,
                 "learner": result.learner, "loss": result.best_loss, "check": result.check, "errors": errors})
            print(f"seed {search_seed}: {target_name} ({'predicted' if measure.predicts else 'exported'}, "
                  f"{learners_of or 'own'} learners): {len(result.trials)} trials in {seconds:.1f} s, "
                  f"{measure.seconds:.1f} s measuring", flush=True)
    base = np.mean([r["trials"] for r in runs[RUNS[0]]])
    rows = []
    for (target_name, predict, learners_of), done in runs.items():
        pooled = [r["errors"] for r in done if r["errors"]]
        errors = ({"n": sum(e["n"] for e in pooled), "size": [v for e in pooled for v in e["size"]],
                   "arena": [v for e in pooled for v in e["arena"]]} if pooled else None)
        trials = [r["trials"] for r in done]
        rows.append((target_name, "predicted" if predict else "exported", learners_of or "own", _ms(trials),
                     np.mean(trials) / base, _ms([r["measuring"] for r in done], 1),
                     _ms([r["seconds"] for r in done], 1), " / ".join(sorted({r["learner"] for r in done})),
                     _ms([r["loss"] for r in done], 4), done[-1]["check"], errors))
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    lines = [
        "# Trials per time budget: predicted TFLite costs vs exporting every trial",
        "",
        f"`python bench/bench_search.py --time-budget {time_budget:g} --repeats {repeats}` on {data_name} "
        f"({len(data.y['train']) + len(data.y['valid']):,} train+validation rows, validated as the build does), "
        f"split seed {seed}, search seeds {seed} to {seed + repeats - 1} (mean ± standard deviation over them; the "
        f"ratio is of the mean trial counts), each target's own learners and budgets; {os.cpu_count()} CPUs, load "
        f"average {load} at the end (other work on the machine moves these numbers).",
        "",
        "| target | trial costs | learners | trials | vs x86-64 | s measuring trials | s in all | learner | loss | "
        "candidates exported | fallback | predictor's error on the frontier: size | arena |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|---|---|---|",
    ]
    for name, how, learners, n, ratio, measuring, seconds, learner, loss, check, errors in rows:
        fallback = (check.fallback or "none") if check is not None else "–"
        size = _err(errors["size"]) + f" over {errors['n']}" if errors else "–"
        arena = _err(errors["arena"]) if errors else "–"
        lines.append(f"| {name} | {how} | {learners} | {n} | {ratio:.2f}× | {measuring} | {seconds} | "
                     f"{learner} | {loss} | {len(check.candidates) if check else 0} | {fallback} | {size} | "
                     f"{arena} |")
    lines += ["", "Size is the TFLite file (model alone plus the data set's preprocessing); the arena is what TFLite "
              "Micro reports (cortex-m7) or the planned tensors (android-arm64). Errors are |predicted − "
              "measured| / measured on every frontier trial refitted on train+validation, over every repeat; "
              "candidates exported and fallback are the last repeat's.",
              "", "Each target searches its own profile's learners in the profile's order (FLAML starts with the "
              "first); the rows with x86-64's learners compare the measures on the same learners. \"s measuring "
              "trials\" is the part of the budget the device measure took: where it is a small share, the trial "
              "counts differ by how long each learner's fits took, and by other work on the machine."]
    return publish("search", "\n".join(lines), results)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-budget", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0, help="the split's seed, and the first search seed")
    parser.add_argument("--repeats", type=int, default=2, help="search seeds each run is repeated with")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    run(args.time_budget, args.seed, args.results, args.repeats)


if __name__ == "__main__":
    main()
