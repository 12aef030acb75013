"""Tree ensembles as dense tensors (the GEMM formulation of Hummingbird), ready for TFLite builtin ops.

Each tree ``t`` becomes, padded to the ensemble's largest tree:

* ``feature[t, i]`` and ``threshold[t, i]`` of its internal nodes: the
  decision of node ``i`` is ``x[feature] <= threshold`` (scikit-learn,
  LightGBM) or ``x[feature] < threshold`` (XGBoost), 1 for "go left";
* ``paths[t, i, l]``: +1 if leaf ``l`` lies in the left subtree of node
  ``i``, -1 if in its right subtree, 0 otherwise;
* ``lefts[t, l]``: how many of leaf ``l``'s ancestors it lies left of;
* ``values[t, l, k]``: leaf ``l``'s contribution to output ``k``.

A row reaches leaf ``l`` exactly when ``decisions · paths[:, l] == lefts[l]``
(every ancestor it must pass on the left says yes, every one on the right
says no); the raw output is the sum over trees of the reached leaves'
values, plus ``bias``. Padded nodes have no path entries; padded leaves have
``lefts = -1``, which no row reaches.

Thresholds for ``<=`` are made exact for float32 inputs (the largest
float32 not above the threshold), as :func:`edgeml.export.onnx.align_thresholds`
does for LightGBM.

The per-family readers (:data:`FOREST_READERS`, :func:`read_forest`) read a fitted model once into a
:class:`Forest` (its trees as node lists); :func:`pack` turns that into the
GEMM arrays here, and :mod:`.traverse` into node tables for a
gather-based traversal, whose size grows with the node count instead.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from edgeml.errors import ExportError
from edgeml.models.families import family_of


@dataclass(frozen=True)
class Node:
    """An internal node (``feature`` >= 0, children ids) or a leaf (``value``, one entry per output)."""

    feature: int = -1
    threshold: float = 0.0
    left: int = -1
    right: int = -1
    value: tuple[float, ...] = ()


@dataclass(frozen=True)
class Forest:
    """A fitted tree ensemble as read from its library: every tree as a node list, and the output's link.

    ``trees[t][0]`` is tree ``t``'s root; children are positions in the same
    list. The raw output [K] is ``bias`` plus, for each tree, the ``value`` of
    the leaf a row reaches; ``head`` turns it into the model's output.
    """

    trees: tuple[tuple[Node, ...], ...]
    k: int                     # outputs per row
    bias: tuple[float, ...]    # [k]
    compare: str               # "LESS_EQUAL" or "LESS": the test that sends a row left
    head: str                  # as Ensemble.head


@dataclass(frozen=True)
class Ensemble:
    """The arrays of a whole ensemble, and how its raw sum becomes the model's output."""

    feature: np.ndarray    # [T, I] int32
    threshold: np.ndarray  # [T, I] float32
    paths: np.ndarray      # [T, I, L] int8
    lefts: np.ndarray      # [T, L] float32
    values: np.ndarray     # [T, L, K] float32
    bias: np.ndarray       # [K] float32
    compare: str           # "LESS_EQUAL" or "LESS"
    head: str              # "sigmoid2", "softmax", "identity" or "none" (already probabilities)
    trees: int             # trees with at least one split (single-leaf trees are folded into bias)

    def raw(self, Z: np.ndarray) -> np.ndarray:
        """The raw sum for the model inputs ``Z`` [n, D], in numpy: the reference the graph must match."""
        x = Z[:, self.feature]  # [n, T, I]
        go = (x <= self.threshold) if self.compare == "LESS_EQUAL" else (x < self.threshold)
        hit = np.einsum("nti,til->ntl", go.astype(np.float32), self.paths.astype(np.float32)) == self.lefts
        return np.einsum("ntl,tlk->nk", hit.astype(np.float32), self.values) + self.bias


def float32_below(t: float) -> np.float32:
    """The largest float32 not above ``t``: ``x <= t`` and ``x <= float32_below(t)`` agree for float32 ``x``.

    >>> float(float32_below(0.1)) <= 0.1 < float(np.nextafter(float32_below(0.1), np.float32(1)))
    True
    """
    w = np.float32(t)
    return np.nextafter(w, np.float32(-np.inf)) if float(w) > t else w


def exact_thresholds(thresholds, compare: str) -> np.ndarray:
    """float32 thresholds that make the float32 test ``compare`` decide as the library does in float64."""
    if compare == "LESS_EQUAL":
        return np.array([float32_below(t) for t in thresholds], np.float32)
    return np.array(thresholds, np.float32)


def split_trees(trees, k: int, bias) -> tuple[list, np.ndarray]:
    """The trees with at least one split, and ``bias`` [k] (float64) plus the single-leaf trees' constants."""
    bias = np.asarray(bias, dtype=np.float64).reshape(k).copy()
    kept = []
    for nodes in trees:
        if nodes[0].feature < 0:  # a single leaf: a constant
            bias += np.asarray(nodes[0].value, dtype=np.float64)
        else:
            kept.append(nodes)
    if not kept:
        raise ExportError("every tree of the ensemble is a single leaf: the model is a constant and not worth "
                          "exporting; train it with more data or a smaller min_child_samples")
    return kept, bias


def pack_forest(forest: Forest) -> Ensemble:
    """The GEMM arrays of ``forest``."""
    return pack(list(forest.trees), forest.k, forest.bias, forest.compare, forest.head)


def pack(trees: list[list[Node]], k: int, bias, compare: str, head: str) -> Ensemble:
    """Dense, padded arrays of ``trees`` (each a list of nodes, the root first)."""
    kept, bias = split_trees(trees, k, bias)
    shaped = [_tree_arrays(nodes, compare) for nodes in kept]
    t = len(shaped)
    n_int = max(len(s[0]) for s in shaped)
    n_leaf = max(len(s[3]) for s in shaped)
    feature = np.zeros((t, n_int), np.int32)
    threshold = np.zeros((t, n_int), np.float32)
    paths = np.zeros((t, n_int, n_leaf), np.int8)
    lefts = np.full((t, n_leaf), -1.0, np.float32)
    values = np.zeros((t, n_leaf, k), np.float32)
    for j, (f, thr, c, d, v) in enumerate(shaped):
        feature[j, :len(f)], threshold[j, :len(thr)] = f, thr
        paths[j, :c.shape[0], :c.shape[1]] = c
        lefts[j, :len(d)] = d
        values[j, :len(v)] = v
    return Ensemble(feature, threshold, paths, lefts, values, bias.astype(np.float32), compare, head, t)


def _tree_arrays(nodes: list[Node], compare: str):
    internal = [i for i, n in enumerate(nodes) if n.feature >= 0]
    leaves = [i for i, n in enumerate(nodes) if n.feature < 0]
    pos_i = {node: j for j, node in enumerate(internal)}
    pos_l = {node: j for j, node in enumerate(leaves)}
    c = np.zeros((len(internal), len(leaves)), np.int8)
    d = np.zeros(len(leaves), np.float32)
    stack = [(0, ())]  # (node, ancestors as (internal position, +1 left / -1 right))
    while stack:
        i, path = stack.pop()
        n = nodes[i]
        if n.feature < 0:
            for a, side in path:
                c[a, pos_l[i]] = side
            d[pos_l[i]] = sum(1 for _, side in path if side > 0)
            continue
        stack.append((n.left, (*path, (pos_i[i], 1))))
        stack.append((n.right, (*path, (pos_i[i], -1))))
    feats = np.array([nodes[i].feature for i in internal], np.int32)
    thr = exact_thresholds([nodes[i].threshold for i in internal], compare)
    values = np.array([nodes[i].value for i in leaves], np.float64)
    return feats, thr, c, d, values


# --- per library ----------------------------------------------------------------------------------


def read_sklearn_forest(est, task: str) -> Forest:
    """RandomForest / ExtraTrees: the mean of the trees' leaf values (class shares for classifiers)."""
    trees = []
    n = len(est.estimators_)
    k = len(est.classes_) if task == "classification" else 1
    for tree in est.estimators_:
        tr = tree.tree_
        nodes = []
        for i in range(tr.node_count):
            if tr.children_left[i] < 0:
                v = tr.value[i, 0, :].astype(np.float64)
                if task == "classification":
                    v = v / v.sum() if v.sum() > 0 else v
                nodes.append(Node(value=tuple(v[:k] / n)))
            else:
                nodes.append(Node(int(tr.feature[i]), float(tr.threshold[i]), int(tr.children_left[i]),
                                  int(tr.children_right[i])))
        trees.append(tuple(nodes))
    return Forest(tuple(trees), k, (0.0,) * k, "LESS_EQUAL", "none" if task == "classification" else "identity")


def read_lightgbm(est, task: str) -> Forest:
    """LightGBM (binary, multiclass, regression objectives) from ``booster_.dump_model()``."""
    dump = est.booster_.dump_model()
    objective = str(dump.get("objective", "")).split()
    name = objective[0] if objective else ""
    k_trees = int(dump.get("num_tree_per_iteration", 1))
    if name == "binary":
        sigmoid = float(next((p.split(":")[1] for p in objective if p.startswith("sigmoid:")), 1.0))
        if sigmoid != 1.0:
            raise ExportError(f"LightGBM objective {' '.join(objective)!r}: only sigmoid:1 is supported in TFLite; "
                              "train with the default sigmoid")
        head, k = "sigmoid2", 1
    elif name in ("multiclass", "softmax"):
        head, k = "softmax", k_trees
    elif name in ("regression", "regression_l2", "l2", "regression_l1", "huber", "fair", "quantile", "mape"):
        head, k = "identity", 1
    else:
        raise ExportError(f"LightGBM objective {name!r} is not supported by the TFLite exporter (it takes binary, "
                          "multiclass and the regression objectives with an identity link)")
    trees = []
    per_class = []
    for info in dump["tree_info"]:
        nodes: list[Node] = []
        _lgbm_nodes(info["tree_structure"], nodes)
        trees.append(nodes)
        per_class.append(int(info["tree_index"]) % k_trees)
    scale = 1.0
    if dump.get("average_output"):
        scale = 1.0 / max(1, len(trees) // k_trees)
    trees = tuple(tuple(_spread(n, c, k, scale) for n in nodes) for nodes, c in zip(trees, per_class, strict=False))
    return Forest(trees, k, (0.0,) * k, "LESS_EQUAL", head)


def _lgbm_nodes(tree: dict, nodes: list[Node]) -> int:
    me = len(nodes)
    if "leaf_value" in tree:
        nodes.append(Node(value=(float(tree["leaf_value"]),)))
        return me
    if tree.get("decision_type", "<=") != "<=":
        raise ExportError(f"LightGBM split with decision type {tree['decision_type']!r} (categorical split): "
                          "the TFLite exporter takes numeric '<=' splits only; edgeml one-hot encodes categories "
                          "before the model, so retrain without LightGBM's categorical_feature")
    nodes.append(Node())
    left = _lgbm_nodes(tree["left_child"], nodes)
    right = _lgbm_nodes(tree["right_child"], nodes)
    nodes[me] = Node(int(tree["split_feature"]), float(tree["threshold"]), left, right)
    return me


def read_xgboost(est, task: str) -> Forest:
    """XGBoost gbtree models from the booster's JSON (exact float32 thresholds and leaf values)."""
    booster = est.get_booster()
    learner = json.loads(booster.save_raw("json"))["learner"]
    gb = learner["gradient_booster"]
    if gb.get("name") != "gbtree":
        raise ExportError(f"XGBoost booster {gb.get('name')!r} is not supported by the TFLite exporter; use gbtree")
    objective = learner["objective"]["name"]
    base = float(str(learner["learner_model_param"]["base_score"]).strip("[]"))
    n_class = int(learner["learner_model_param"].get("num_class", "0") or 0)
    if objective == "binary:logistic":
        head, k, bias = "sigmoid2", 1, [math.log(base / (1 - base))]
    elif objective in ("multi:softprob", "multi:softmax"):
        head, k, bias = "softmax", n_class, [base] * n_class
    elif objective.startswith("reg:") and objective in ("reg:squarederror", "reg:absoluteerror", "reg:pseudohubererror",
                                                         "reg:linear", "reg:quantileerror"):
        head, k, bias = "identity", 1, [base]
    else:
        raise ExportError(f"XGBoost objective {objective!r} is not supported by the TFLite exporter (it takes "
                          "binary:logistic, multi:softprob and identity-link regression)")
    model = gb["model"]
    limit = len(model["trees"])
    best = getattr(est, "best_iteration", None)
    if best is not None and getattr(est, "early_stopping_rounds", None):
        limit = (best + 1) * max(1, k)
    trees = []
    for tree, group in zip(model["trees"][:limit], model["tree_info"][:limit], strict=False):
        lc, rc = tree["left_children"], tree["right_children"]
        feats, conds = tree["split_indices"], tree["split_conditions"]
        nodes = []
        for i in range(len(lc)):
            if lc[i] < 0:
                nodes.append(_spread(Node(value=(float(conds[i]),)), int(group), k, 1.0))
            else:
                nodes.append(Node(int(feats[i]), float(np.float32(conds[i])), int(lc[i]), int(rc[i])))
        trees.append(tuple(nodes))
    return Forest(tuple(trees), k, tuple(float(b) for b in bias), "LESS", head)


def _spread(node: Node, column: int, k: int, scale: float) -> Node:
    """A one-output leaf placed in output ``column`` of ``k`` (multiclass boosting: one tree per class)."""
    if node.feature >= 0:
        return node
    v = [0.0] * k
    v[column if k > 1 else 0] = node.value[0] * scale
    return Node(value=tuple(v))


#: Model family name (:mod:`edgeml.models.families`, kind ``trees``) -> the function that reads a fitted model of
#: that family into a :class:`Forest` (the one place tree models are parsed).
FOREST_READERS = {
    "forest": read_sklearn_forest,
    "lightgbm": read_lightgbm,
    "xgboost": read_xgboost,
}


def read_forest(est, task: str) -> Forest:
    """The fitted tree ensemble ``est`` as a :class:`Forest`, read as its model family says.

    >>> read_forest(object(), "regression")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    edgeml.errors.ExportError: edgeml has no model family for object (builtins.object); it knows ...
    """
    family = family_of(est)
    reader = FOREST_READERS.get(family.name)
    if reader is None:
        trees = ", ".join(sorted(FOREST_READERS))
        raise ExportError(f"{type(est).__name__} ({family.title}) is not a tree ensemble the TFLite exporter reads; "
                          f"it reads the {trees} families")
    return reader(est, task)


__all__ = ["FOREST_READERS", "Ensemble", "Forest", "Node", "exact_thresholds", "float32_below", "pack",
           "pack_forest", "read_forest", "split_trees"]
