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
profile's ``speed_factor``. The size of a model is best measured: see
:func:`exported_bytes`; :meth:`CostModel.predict_bytes` estimates it without
exporting.

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
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources

import numpy as np

from edgeml.errors import ExportError

FAMILIES = ("trees", "linear", "mlp")

#: The latency model's terms, in order: each is a number computed from a :class:`Structure` and the input count.
LATENCY_TERMS = ("base", "inputs", "trees", "tree_count", "class_trees", "tree_paths", "cold_paths", "tree_nodes_k",
                 "linear", "mlp", "weights_k")
#: Tree nodes that stay in a core's caches; beyond it, comparisons wait on memory (see ``cold_paths``).
WARM_NODES = 100_000
#: The size model's terms (bytes of the exported estimator, preprocessing excluded).
SIZE_TERMS = ("base", "tree_nodes", "leaf_values", "trees", "weights", "inputs")

DATA_FILE = "cost_model.json"


@dataclass(frozen=True)
class Structure:
    """What a fitted estimator is made of, as far as running it costs.

    ``path_length`` is the number of comparisons one row makes: the sum over
    trees of the mean depth of their leaves. ``n_weights`` counts linear
    coefficients and intercepts, or an MLP's weights and biases.
    """

    family: str
    n_features: int
    n_outputs: int = 1
    n_trees: int = 0
    n_nodes: int = 0
    n_leaves: int = 0
    max_depth: int = 0
    path_length: float = 0.0
    n_weights: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


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
    """The :class:`Structure` of a fitted estimator (a searched model, or the last step of a pipeline)."""
    from sklearn.pipeline import Pipeline

    if isinstance(estimator, Pipeline):
        estimator = estimator.steps[-1][1]
    for kind, read in _READERS:
        if _is(estimator, kind):
            return read(estimator)
    raise ExportError(
        f"edgeml has no cost model for {type(estimator).__name__}; "
        f"it knows LightGBM, XGBoost, scikit-learn forests, linear models and MLPs"
    )


def _is(estimator, names: tuple[str, ...]) -> bool:
    return any(c.__name__ in names for c in type(estimator).__mro__)


def _n_outputs(estimator) -> int:
    classes = getattr(estimator, "classes_", None)
    return 1 if classes is None else len(classes)


def _lgbm(est) -> Structure:
    trees = est.booster_.dump_model()["tree_info"]
    children = lambda node: [node[k] for k in ("left_child", "right_child") if k in node]  # noqa: E731
    return _tree_structure(est, [_leaf_depths(t["tree_structure"], children) for t in trees])


def _xgboost(est) -> Structure:
    dumps = est.get_booster().get_dump(dump_format="json")
    return _tree_structure(est, [_leaf_depths(json.loads(d), lambda node: node.get("children", [])) for d in dumps])


def _forest(est) -> Structure:
    depths = []
    for tree in est.estimators_:
        t = tree.tree_
        left, right = t.children_left, t.children_right
        depth = np.zeros(t.node_count, dtype=np.int64)
        for node in range(t.node_count):  # sklearn numbers children after their parent
            if left[node] >= 0:
                depth[left[node]] = depth[right[node]] = depth[node] + 1
        depths.append(depth[left < 0].tolist())
    return _tree_structure(est, depths)


def _leaf_depths(root: dict, children) -> list[int]:
    """Depths of the leaves of one dumped tree (LightGBM or XGBoost JSON), without recursion."""
    out, stack = [], [(root, 0)]
    while stack:
        node, depth = stack.pop()
        below = children(node)
        if below:
            stack.extend((c, depth + 1) for c in below)
        else:
            out.append(depth)
    return out


def _tree_structure(est, depths: list[list[int]]) -> Structure:
    leaves = sum(len(d) for d in depths)
    return Structure(
        family="trees",
        n_features=int(est.n_features_in_),
        n_outputs=_n_outputs(est),
        n_trees=len(depths),
        n_nodes=sum(2 * len(d) - 1 for d in depths),
        n_leaves=leaves,
        max_depth=max((max(d) for d in depths if d), default=0),
        path_length=float(sum(np.mean(d) for d in depths if d)),
    )


def _linear(est) -> Structure:
    coef = np.atleast_2d(est.coef_)
    return Structure(family="linear", n_features=int(coef.shape[1]), n_outputs=_n_outputs(est),
                     n_weights=int(coef.size + np.size(est.intercept_)))


def _mlp(est) -> Structure:
    weights = sum(w.size for w in est.coefs_) + sum(b.size for b in est.intercepts_)
    return Structure(family="mlp", n_features=int(est.coefs_[0].shape[0]), n_outputs=_n_outputs(est),
                     n_weights=int(weights), max_depth=len(est.coefs_))


def _standardized(est) -> Structure:
    return structure_of(est.named_steps["model"])


_READERS = (
    (("StandardizedModel",), _standardized),
    (("LGBMModel",), _lgbm),
    (("XGBModel",), _xgboost),
    (("BaseForest",), _forest),
    (("BaseMultilayerPerceptron",), _mlp),
    (("LinearClassifierMixin", "LinearModel"), _linear),
)


# --- the real size ------------------------------------------------------------------------------


def exported_bytes(estimator, n_features: int, task: str) -> int:
    """The size of ``estimator`` exported alone to ONNX (one float input of width ``n_features``).

    This is what the model adds to an artifact; the preprocessing in front of
    it (imputation, one-hot encoding) adds a few hundred bytes to a few KiB,
    depending on the number of categories.
    """
    import warnings

    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.pipeline import Pipeline

    from edgeml.export.onnx import OPSET, _register_tree_converters
    from edgeml.models.learners import model_steps

    _register_tree_converters()
    pipeline = Pipeline(model_steps(estimator))
    last = pipeline.steps[-1][1]
    options = {id(last): {"zipmap": False}} if task == "classification" else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = convert_sklearn(pipeline, name="size", initial_types=[("X", FloatTensorType([None, n_features]))],
                                    target_opset=dict(OPSET), options=options)
    except Exception as exc:  # converters raise RuntimeError, NotImplementedError, MissingShapeCalculator…
        raise ExportError(f"cannot export {type(last).__name__} to ONNX to measure its size: {exc}") from exc
    return model.ByteSize()


__all__ = [
    "CostModel",
    "FAMILIES",
    "LATENCY_TERMS",
    "SIZE_TERMS",
    "Structure",
    "exported_bytes",
    "fit_nonnegative",
    "latency_features",
    "load_cost_model",
    "size_features",
    "structure_of",
]
