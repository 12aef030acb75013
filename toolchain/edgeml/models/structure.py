"""What a fitted model is made of, as far as running it costs: trees, nodes, leaves, weights.

Each model family (:mod:`edgeml.models.families`) names the reader here that
turns its fitted estimator into a :class:`Structure`; the cost model
(:mod:`edgeml.search.costmodel`) predicts latency and size from it.

Example:

>>> from sklearn.linear_model import LogisticRegression
>>> import numpy as np
>>> s = linear_structure(LogisticRegression().fit(np.eye(4), [0, 1, 0, 1]))
>>> s.family, s.n_features, s.n_outputs, s.n_weights
('linear', 4, 2, 5)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Structure:
    """What a fitted estimator is made of, as far as running it costs.

    ``family`` is the family's kind (``trees``, ``linear``, ``mlp``: how it
    computes). ``path_length`` is the number of comparisons one row makes:
    the sum over trees of the mean depth of their leaves. ``n_weights``
    counts linear coefficients and intercepts, or an MLP's weights and biases.
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
    max_tree_leaves: int = 0  #: the leaves of the ensemble's largest tree (what the TFLite GEMM form pads to)

    def to_dict(self) -> dict:
        return asdict(self)


def _n_outputs(estimator) -> int:
    classes = getattr(estimator, "classes_", None)
    return 1 if classes is None else len(classes)


def _inner(estimator):
    """The model inside one of edgeml's standardising wrappers (:mod:`edgeml.models.estimators`), else itself."""
    steps = getattr(estimator, "named_steps", None)
    return estimator if steps is None else steps["model"]


def _lightgbm_children(node: dict) -> list[dict]:
    """The children of one node of a LightGBM JSON dump (none for a leaf)."""
    return [node[k] for k in ("left_child", "right_child") if k in node]


def lightgbm_structure(est) -> Structure:
    trees = est.booster_.dump_model()["tree_info"]
    return _tree_structure(est, [_leaf_depths(t["tree_structure"], _lightgbm_children) for t in trees])


def xgboost_structure(est) -> Structure:
    dumps = est.get_booster().get_dump(dump_format="json")
    return _tree_structure(est, [_leaf_depths(json.loads(d), lambda node: node.get("children", [])) for d in dumps])


def forest_structure(est) -> Structure:
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
        max_tree_leaves=max((len(d) for d in depths), default=0),
    )


def linear_structure(est) -> Structure:
    est = _inner(est)
    coef = np.atleast_2d(est.coef_)
    return Structure(family="linear", n_features=int(coef.shape[1]), n_outputs=_n_outputs(est),
                     n_weights=int(coef.size + np.size(est.intercept_)))


def mlp_structure(est) -> Structure:
    est = _inner(est)
    weights = sum(w.size for w in est.coefs_) + sum(b.size for b in est.intercepts_)
    return Structure(family="mlp", n_features=int(est.coefs_[0].shape[0]), n_outputs=_n_outputs(est),
                     n_weights=int(weights), max_depth=len(est.coefs_))


__all__ = ["Structure", "forest_structure", "lightgbm_structure", "linear_structure", "mlp_structure",
           "xgboost_structure"]
