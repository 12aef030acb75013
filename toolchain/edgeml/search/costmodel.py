"""Predict what a fitted model costs on a device: its one-row latency and its ONNX size.

The latency model is linear in a few structural features of the fitted
estimator (how many trees and comparisons a row walks through a tree
ensemble, and how many of those miss the caches; how many weights a net
multiplies; how many raw inputs the runtime reads), with
coefficients fitted by ``bench/fit_cost_model.py`` on real exported models
timed in ``edgeml_runtime`` on the build machine. Coefficients are
non-negative, so a bigger model never predicts faster. The fitted data ships
in ``edgeml/search/cost_model.json`` with the fit's quality; nothing here times
anything.

The latency on a device is the prediction for this machine times the target
profile's ``speed_factor``. The size of a model is best measured (the ONNX
exporter's :func:`edgeml.export.onnx.estimator_bytes`, as a trial is measured
in :mod:`edgeml.targets.measure`); :meth:`CostModel.predict_bytes` estimates
it without exporting. What a fitted estimator is made of
(:class:`~edgeml.models.structure.Structure`) is read by its model family.

Example:

>>> from sklearn.linear_model import LogisticRegression
>>> import numpy as np
>>> model = LogisticRegression().fit(np.eye(4), [0, 1, 0, 1])
>>> s = structure_of(model)
>>> s.family, s.n_features, s.n_weights
('linear', 4, 5)
>>> cost = load_cost_model()
>>> 0 < cost.predict_ms(s, n_inputs=4) < 1
True
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

from edgeml.errors import ExportError
from edgeml.models.families import family_of, find_family
from edgeml.models.structure import Structure

#: The latency model's terms, in order: each is a number computed from a :class:`Structure` and the input count.
LATENCY_TERMS = ("base", "inputs", "trees", "tree_count", "class_trees", "tree_paths", "cold_paths", "tree_nodes_k",
                 "linear", "mlp", "weights_k")
#: Tree nodes that stay in a core's caches; beyond it, comparisons wait on memory (see ``cold_paths``).
WARM_NODES = 100_000
#: The size model's terms (bytes of the exported estimator, preprocessing excluded).
SIZE_TERMS = ("base", "tree_nodes", "leaf_values", "trees", "weights", "inputs")

DATA_FILE = "cost_model.json"


def _terms(s: Structure, n_inputs: int) -> dict[str, float]:
    return {
        "base": 1.0,
        "inputs": float(n_inputs),
        "trees": float(s.family == "trees"),
        "tree_count": float(s.n_trees),
        # onnxruntime's tree-ensemble classifiers pay more per tree than its regressors.
        "class_trees": float(s.n_trees if s.n_outputs > 1 else 0),
        "tree_paths": s.path_length,
        # The share of comparisons that miss the caches grows with the ensemble's size.
        "cold_paths": s.path_length * s.n_nodes / (s.n_nodes + WARM_NODES),
        "tree_nodes_k": s.n_nodes / 1000.0,
        "linear": float(s.family == "linear"),
        "mlp": float(s.family == "mlp"),
        "weights_k": s.n_weights / 1000.0,
    }


def _size_terms(s: Structure, n_inputs: int) -> dict[str, float]:
    return {
        "base": 1.0,
        "tree_nodes": float(s.n_nodes),
        "leaf_values": float(s.n_leaves * s.n_outputs),
        "trees": float(s.n_trees),
        "weights": float(s.n_weights),
        "inputs": float(n_inputs),
    }


def latency_features(s: Structure, n_inputs: int) -> np.ndarray:
    t = _terms(s, n_inputs)
    return np.array([t[k] for k in LATENCY_TERMS])


def size_features(s: Structure, n_inputs: int) -> np.ndarray:
    t = _size_terms(s, n_inputs)
    return np.array([t[k] for k in SIZE_TERMS])


@dataclass(frozen=True)
class CostModel:
    """Fitted coefficients: microseconds per latency term, bytes per size term, and how well they fit."""

    latency_us: dict[str, float]
    size_bytes: dict[str, float]
    quality: dict
    machine: dict

    def predict_ms(self, s: Structure, n_inputs: int | None = None, speed_factor: float = 1.0) -> float:
        """One-row latency in ``edgeml_runtime``, in milliseconds: on this machine, times ``speed_factor``."""
        t = _terms(s, s.n_features if n_inputs is None else n_inputs)
        micro = sum(self.latency_us[k] * t[k] for k in LATENCY_TERMS)
        return micro / 1000.0 * speed_factor

    def predict_bytes(self, s: Structure, n_inputs: int | None = None) -> int:
        """Estimated size of the estimator's ONNX graph (the preprocessing adds a little)."""
        t = _size_terms(s, s.n_features if n_inputs is None else n_inputs)
        return int(round(sum(self.size_bytes[k] * t[k] for k in SIZE_TERMS)))

    def to_dict(self) -> dict:
        return {"latency_us": self.latency_us, "size_bytes": self.size_bytes, "quality": self.quality,
                "machine": self.machine}

    @classmethod
    def from_dict(cls, d: dict) -> CostModel:
        missing = [k for k in LATENCY_TERMS if k not in d.get("latency_us", {})]
        missing += [k for k in SIZE_TERMS if k not in d.get("size_bytes", {})]
        if missing:
            raise ExportError(f"the cost model data lacks {', '.join(missing)}; refit it with bench/fit_cost_model.py")
        return cls(dict(d["latency_us"]), dict(d["size_bytes"]), dict(d.get("quality", {})), dict(d.get("machine", {})))


@cache
def load_cost_model() -> CostModel:
    """The cost model shipped with edgeml (``edgeml/search/cost_model.json``)."""
    try:
        text = resources.files("edgeml.search").joinpath(DATA_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExportError(
            f"edgeml/search/{DATA_FILE} is missing; reinstall edgeml, or fit it with bench/fit_cost_model.py"
        ) from None
    return CostModel.from_dict(json.loads(text))


def fit_nonnegative(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Coefficients >= 0 minimising the squared *relative* error of ``X @ coef`` against ``y``."""
    from scipy.optimize import nnls

    scale = 1.0 / np.asarray(y, dtype=float)
    coef, _ = nnls(X * scale[:, None], np.ones(len(y)))
    return coef


# --- structure of a fitted estimator ------------------------------------------------------------


def structure_of(estimator) -> Structure:
    """The :class:`Structure` of a fitted estimator (a searched model, or a pipeline ending in one).

    Read by the estimator's family (:func:`edgeml.models.families.family_of`); an estimator no family
    covers is an :class:`ExportError` naming its class and the known families.
    """
    from edgeml.models.target import unwrap_target

    estimator = unwrap_target(estimator)  # a model of the label's log scale: its inverse is two element-wise ops
    steps = getattr(estimator, "steps", None)
    if steps is not None and find_family(estimator) is None:  # a plain Pipeline: its model is the last step
        estimator = steps[-1][1]
    return family_of(estimator).structure(estimator)


__all__ = [
    "CostModel",
    "LATENCY_TERMS",
    "SIZE_TERMS",
    "fit_nonnegative",
    "latency_features",
    "load_cost_model",
    "size_features",
    "structure_of",
]
