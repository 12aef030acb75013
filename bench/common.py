"""What the benchmarks share: the data they run on, where their Markdown results go, and the ``search``
section of a bundle whose model a benchmark fitted itself.

Each benchmark is a script (``python bench/<name>.py``) that measures side by
side in one run and writes ``bench/results/<name>.md``. Importing one runs
nothing (``tests/test_benchmarks_run.py`` imports them all).
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
RESULTS_DIR = ROOT / "bench" / "results"


def classification_data(work: Path, seed: int = 0) -> tuple[str, str, tuple[str, ...]]:
    """(data file, label, columns to drop): ai4i2020 from the shared data sets, else 12,000 rows of demo data."""
    if (DATASETS / "ai4i2020.csv").is_file():
        return (str(DATASETS / "ai4i2020.csv"), "Machine failure",
                ("UDI", "Product ID", "TWF", "HDF", "PWF", "OSF", "RNF"))
    from edgeml.data.demo import DEMO_LABEL, write_demo_csv

    return str(write_demo_csv(work / "demo.csv", rows=12_000, seed=seed)), DEMO_LABEL, ()


def publish(name: str, text: str, directory: Path = RESULTS_DIR) -> Path:
    """Write ``<directory>/<name>.md`` (``bench/results`` unless told) and print it."""
    path = Path(directory) / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n")
    print(text, file=sys.stdout)
    return path


def trained_directly(learner: str, model, data, target, seconds: float) -> dict:
    """The manifest's ``search`` section for a ``model`` a benchmark fitted itself, without a search.

    ``data`` is the :class:`~edgeml.data.prepare.Prepared` table it was fitted
    on and ``target`` the profile the bundle is for (its budgets are recorded
    as a build records them); no trial was run, so the log is empty.
    """
    from edgeml.targets.measure import target_budget

    return {"learners": [learner], "metric": "none (trained directly, not searched)", "best_learner": learner,
            "best_config": model_config(model), "best_valid_loss": None, "best_model_bytes": None,
            "best_predicted_latency_ms": None, "budgets": asdict(target_budget(target)), "trials": 0,
            "seconds": round(seconds, 2), "trial_log": [], "frontier": []}


def model_config(model) -> dict:
    """A fitted estimator's own parameters that JSON holds exactly (numbers, strings, flags, tuples of them)."""
    def plain(v):
        return v is None or isinstance(v, str | bool | int) or isinstance(v, float) and math.isfinite(v)

    return {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(model.get_params(deep=False).items())
            if plain(v) or isinstance(v, tuple) and all(plain(x) for x in v)}
