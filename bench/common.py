"""What the benchmarks share: the data they run on and where their Markdown results go.

Each benchmark is a script (``python bench/<name>.py``) that measures side by
side in one run and writes ``bench/results/<name>.md``.
"""

from __future__ import annotations

import sys
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


def publish(name: str, text: str) -> Path:
    """Write ``bench/results/<name>.md`` and print it."""
    path = RESULTS_DIR / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n")
    print(text, file=sys.stdout)
    return path
