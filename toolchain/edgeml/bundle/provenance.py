"""The manifest's ``provenance`` section: what a model was made from — the table, the seed, the model — and with
which package versions.

>>> package_versions()["python"].count(".")
2
"""

from __future__ import annotations

import platform
from importlib import metadata

#: Packages whose versions go into every manifest's provenance.
PROVENANCE_PACKAGES = (
    "edgeml", "edgeml-runtime", "flaml", "scikit-learn", "lightgbm", "xgboost", "onnx", "skl2onnx",
    "onnxmltools", "onnxruntime", "numpy", "pandas",
)


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PROVENANCE_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def provenance_record(table, data, seed: int, learner: str, model, config: dict) -> dict:
    """The section for a model fitted on ``data`` (a :class:`~edgeml.data.prepare.Prepared` split of the
    :class:`~edgeml.data.ingest.Table` ``table``) with ``seed``: ``learner``, its class and ``config``."""
    outliers = {"label_outliers": [{"row": row, "value": value} for row, value in data.label_outliers]}
    return {
        "data": {"source": table.source, "format": table.format, "sha256": table.sha256,
                 "rows": table.rows, "labelled_rows": len(data.frame), "split": data.split.sizes,
                 **(outliers if data.label_outliers else {})},
        "seed": seed,
        "model": {"learner": learner, "class": type(model).__name__, "config": config},
        "packages": package_versions(),
    }


__all__ = ["PROVENANCE_PACKAGES", "package_versions", "provenance_record"]
