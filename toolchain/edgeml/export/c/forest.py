"""Tree ensembles as flat const tables for a plain-C loop walker: read from an ONNX TreeEnsemble node, sized exactly.

:func:`onnx_forest` reads an ``ai.onnx.ml`` ``TreeEnsembleClassifier`` or
``TreeEnsembleRegressor`` node (as the bundle's ``model.onnx`` holds it) into
a :class:`~edgeml.export.tflite.trees.Forest`, the node lists the TFLite
exporter reads fitted models into; :func:`forest_tables` lays any
:class:`Forest` out as the tables below, so the search can size a fitted
model's C form (:mod:`edgeml.export.c.size`) with the very function that
lays out the bundle's.

The thresholds are the ONNX file's float32 values, which skl2onnx already made
exact for float32 inputs (the largest float32 not above scikit-learn's double
threshold, as :func:`edgeml.export.tflite.trees.float32_below` does;
:func:`edgeml.export.onnx.align_thresholds` does it for LightGBM), compared
as the node's mode says: ``x <= t`` (``BRANCH_LEQ``) or ``x < t``
(``BRANCH_LT``, XGBoost); ``BRANCH_GT``/``GTE`` are the same tests with the
children swapped. A row reaches no node with a NaN: the exported pipeline
imputes every number before the trees (a tree whose input may be NaN and whose
node routes a missing value down the true branch is refused, see
:func:`check_missing`).

Tables (``I`` internal nodes, ``L`` leaves, ``T`` trees, every tree's nodes
in depth-first order, numbered from 0 within the tree):

* ``feature[I]`` (``uint8_t`` or ``uint16_t``): the model input a node tests;
* ``threshold[I]`` (``float``);
* ``left[I]``, ``right[I]`` (``int8_t``, ``int16_t`` or ``int32_t``): a child
  as ``c >= 0``, internal node ``c`` of the same tree, or ``c < 0``, its leaf
  ``-1 - c``;
* ``leaf[L·V]`` (``float``): each leaf's ``V`` values: one (every leaf of a
  tree adds to the same output: regression, binary scores, boosting's one
  tree per class) or ``K`` (a random forest's class shares);
* ``tree_node[T]``, ``tree_leaf[T]`` (``uint16_t``/``uint32_t``): where each
  tree's internal nodes and leaves start; ``tree_target[T]`` (``uint8_t``/
  ``uint16_t``, only for one-value leaves of ``K > 1`` outputs) the output
  each tree adds to.

Or, where it takes fewer bytes (:func:`shared_leaves`), the leaves are shared:
``leaf`` holds each distinct leaf once (equal to the bit; a random forest's
pure leaves repeat throughout), a child ``c < 0`` names distinct leaf ``-1 - c``
directly, and there is no ``tree_leaf``. The walk and the sums are the same.

A single-leaf tree gets one internal node whose two children are that leaf
(the walker needs no special case, and sums in ONNX Runtime's order). Trees
are summed in order into float32 accumulators starting at 0, then divided by
the tree count for ``AVERAGE`` and the base values added, as ONNX Runtime
does for float32 inputs.

>>> from edgeml.export.tflite.trees import Node
>>> stump = (Node(0, 0.5, 1, 2), Node(value=(1.0,)), Node(value=(3.0,)))
>>> t = forest_tables(Forest((stump, (Node(value=(2.0,)),)), 1, (0.0,), "LESS_EQUAL", "identity"))
>>> t.left.tolist(), t.right.tolist(), t.leaf.tolist(), t.tree_node.tolist(), t.shared, t.nbytes
([-1, -3], [-2, -3], [1.0, 3.0, 2.0], [0, 1], True, 28)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper

from edgeml.errors import ExportError
from edgeml.export.csource import smallest_signed, smallest_unsigned, type_bytes
from edgeml.export.tflite.trees import Forest, Node

#: ONNX node modes: (the test that sends a row to the true child, whether the children swap to make it "go left").
_MODES = {b"BRANCH_LEQ": ("LESS_EQUAL", False), b"BRANCH_LT": ("LESS", False),
          b"BRANCH_GT": ("LESS_EQUAL", True), b"BRANCH_GTE": ("LESS", True)}


@dataclass(frozen=True)
class TreeTables:
    """The flat tables of a whole ensemble (see the module docstring) and the C types they are stored in."""

    feature: np.ndarray
    threshold: np.ndarray   # float32
    left: np.ndarray
    right: np.ndarray
    leaf: np.ndarray        # float32 [L * values], or the distinct leaves' [U * values] when shared
    tree_node: np.ndarray
    tree_leaf: np.ndarray | None  # None when shared: a child names its distinct leaf directly
    tree_target: np.ndarray | None
    k: int                  # outputs the trees add to
    values: int             # values a leaf holds: 1 or k
    compare: str            # "LESS_EQUAL" or "LESS": the test that sends a row left

    @property
    def types(self) -> dict[str, str]:
        """The C type of each integer table: the smallest that holds its values."""
        refs = np.concatenate([self.left, self.right])
        types = {"feature": smallest_unsigned(self.feature.max(initial=0)),
                 "child": smallest_signed(refs.min(initial=0), refs.max(initial=0)),
                 "tree_node": smallest_unsigned(self.tree_node.max(initial=0))}
        if self.tree_leaf is not None:
            types["tree_leaf"] = smallest_unsigned(self.tree_leaf.max(initial=0))
        if self.tree_target is not None:
            types["tree_target"] = smallest_unsigned(self.k - 1)
        return types

    @property
    def nbytes(self) -> int:
        """The bytes of const data the tables take in the generated C (``sizeof`` of each array, summed)."""
        return tables_bytes(len(self.feature), len(self.leaf) // self.values, len(self.tree_node), self.values,
                            self.types, self.tree_target is not None)

    @property
    def shared(self) -> bool:
        """Whether the leaves are the distinct ones, which children name directly (no ``tree_leaf``)."""
        return self.tree_leaf is None


def tables_bytes(internal: int, leaves: int, trees: int, values: int, types: dict[str, str], targets: bool) -> int:
    """The size formula: ``I·(f + 4 + 2c) + 4·L·V + T·(n [+ l] [+ t])`` bytes, ``f``, ``c``, ``n``, ``l``, ``t``
    the sizes of the feature, child, tree_node, tree_leaf (absent when the leaves are shared) and tree_target
    types (:attr:`TreeTables.types`), ``L`` the leaves stored."""
    per_node = type_bytes(types["feature"]) + 4 + 2 * type_bytes(types["child"])
    per_tree = type_bytes(types["tree_node"]) + (type_bytes(types["tree_leaf"]) if "tree_leaf" in types else 0)
    if targets:
        per_tree += type_bytes(types["tree_target"])
    return internal * per_node + 4 * leaves * values + trees * per_tree


def forest_tables(forest: Forest) -> TreeTables:
    """Lay ``forest`` out as flat tables (see the module docstring), its leaf values as float32."""
    targets = [_tree_target(nodes) for nodes in forest.trees]
    scalar = forest.k == 1 or all(t is not None for t in targets)
    feature, threshold, left, right, leaf, tree_node, tree_leaf = [], [], [], [], [], [], []
    for nodes in forest.trees:
        tree_node.append(len(feature))
        tree_leaf.append(len(leaf))
        if nodes[0].feature < 0:  # a single leaf: one node with the leaf on both sides
            nodes = (Node(0, 0.0, 1, 1), nodes[0])
        _walk(nodes, feature, threshold, left, right, leaf, scalar)
    per_tree = TreeTables(
        feature=np.array(feature, np.int64), threshold=np.array(threshold, np.float32),
        left=np.array(left, np.int64), right=np.array(right, np.int64),
        leaf=np.array(leaf, np.float32).ravel(), tree_node=np.array(tree_node, np.int64),
        tree_leaf=np.array(tree_leaf, np.int64),
        tree_target=(np.array([t or 0 for t in targets], np.int64) if scalar and forest.k > 1 else None),
        k=forest.k, values=1 if scalar else forest.k, compare=forest.compare)
    shared = shared_leaves(per_tree)
    return shared if shared.nbytes < per_tree.nbytes else per_tree


def shared_leaves(t: TreeTables) -> TreeTables:
    """``t`` with each distinct leaf (to the bit) stored once, in the order first reached, and every child that is
    a leaf naming it directly (``-1 - u``): smaller wherever leaves repeat, as a random forest's pure leaves do."""
    rows = t.leaf.reshape(-1, t.values)
    bits = np.ascontiguousarray(rows).view(np.uint32)
    _, first, inverse = np.unique(bits, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # distinct leaves numbered as first reached: the same bytes each run
    number = np.empty_like(order)
    number[order] = np.arange(len(order))
    tree_of = np.searchsorted(t.tree_node, np.arange(len(t.feature)), side="right") - 1

    def direct(refs: np.ndarray) -> np.ndarray:
        leaf = refs < 0
        out = refs.copy()
        out[leaf] = -1 - number[inverse.ravel()[t.tree_leaf[tree_of[leaf]] + (-1 - refs[leaf])]]
        return out

    return TreeTables(feature=t.feature, threshold=t.threshold, left=direct(t.left), right=direct(t.right),
                      leaf=rows[first[order]].ravel(), tree_node=t.tree_node, tree_leaf=None,
                      tree_target=t.tree_target, k=t.k, values=t.values, compare=t.compare)


def _tree_target(nodes) -> int | None:
    """The one output every leaf of a tree adds to (zeros add nothing), or None when its leaves add to several."""
    hit = {k for n in nodes if n.feature < 0 for k, v in enumerate(n.value) if v != 0}
    return next(iter(hit)) if len(hit) == 1 else (0 if not hit else None)


def _walk(nodes, feature, threshold, left, right, leaf, scalar: bool) -> None:
    """Append one tree's internal nodes (depth first) and leaves to the tables; children relative to the tree."""
    base_node, base_leaf = len(feature), len(leaf)
    order = []
    stack = [0]
    while stack:  # depth-first order of the internal nodes
        i = stack.pop()
        if nodes[i].feature >= 0:
            order.append(i)
            stack += [nodes[i].right, nodes[i].left]
    position = {i: j for j, i in enumerate(order)}
    leaf_of: dict[int, int] = {}

    def ref(i: int) -> int:
        if nodes[i].feature >= 0:
            return position[i]
        if i not in leaf_of:
            leaf_of[i] = len(leaf) - base_leaf
            v = nodes[i].value
            leaf.append([sum(v)] if scalar else list(v))
        return -1 - leaf_of[i]

    for i in order:
        n = nodes[i]
        feature.append(n.feature)
        threshold.append(n.threshold)
        left.append(ref(n.left))
        right.append(ref(n.right))
    assert len(feature) - base_node == len(order)


def onnx_forest(node, n_inputs: int) -> tuple[Forest, dict]:
    """The trees of an ONNX ``TreeEnsembleClassifier``/``Regressor`` node, and how ONNX Runtime finishes their sum.

    The :class:`Forest`'s ``bias`` is the node's ``base_values`` (zeros when
    absent), its ``head`` the post transform; the dict says ``aggregate``
    (``SUM`` or ``AVERAGE``), ``tracks`` (per tree and node, whether a NaN
    goes to the true branch, for :func:`check_missing`), ``classes`` and
    ``weights_positive`` (whether every leaf weight is >= 0: ONNX Runtime's
    binary classifier then reports ``[1 - s, s]``).
    """
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    if any(k.endswith("_as_tensor") for k in a):
        raise ExportError(f"the ONNX {node.op_type} holds double-precision values (*_as_tensor); the C form "
                          "computes in float32 only: rebuild the bundle")
    prefix = "class" if node.op_type == "TreeEnsembleClassifier" else "target"
    classes = a.get("classlabels_int64s") or a.get("classlabels_strings") or []
    ids = list(a.get(f"{prefix}_ids", []))
    k = int(a.get("n_targets", 1)) if prefix == "target" else len(classes)
    if prefix == "class" and k == 2 and set(ids) <= {0}:
        k = 1  # ONNX Runtime's binary case: one score, the positive class's
    tests = {}
    for t, i, f, v, mode, yes, no, miss in zip(a["nodes_treeids"], a["nodes_nodeids"], a["nodes_featureids"],
                                               a["nodes_values"], a["nodes_modes"], a["nodes_truenodeids"],
                                               a["nodes_falsenodeids"], _tracks(a), strict=True):
        tests[(t, i)] = (f, v, mode, yes, no, miss)
    compares = {_MODES[m][0] for (_, _, m, *_rest) in tests.values() if m != b"LEAF" and m in _MODES}
    modes = {m for (_, _, m, *_rest) in tests.values()} - {b"LEAF"}
    if modes - set(_MODES) or len(compares) > 1:
        raise ExportError(f"the ONNX {node.op_type} tests its nodes with {sorted(m.decode() for m in modes)}; the C "
                          "form walks trees of one test, <= or < (BRANCH_LEQ/GT, or BRANCH_LT/GTE)")
    values: dict[tuple[int, int], np.ndarray] = {}
    for t, i, c, w in zip(a[f"{prefix}_treeids"], a[f"{prefix}_nodeids"], ids, a[f"{prefix}_weights"], strict=True):
        values.setdefault((t, i), np.zeros(k, np.float64))[0 if k == 1 else c] += np.float32(w)
    trees, tracks = [], []
    for tree in sorted({t for t, _ in tests}):
        nodes, missing = _onnx_tree(tree, tests, values, k, n_inputs)
        trees.append(nodes)
        tracks.append(missing)
    base = list(a.get("base_values", [])) or [0.0] * k
    head = a.get("post_transform", b"NONE").decode()
    weights = a.get(f"{prefix}_weights", [])
    return Forest(tuple(trees), k, tuple(float(np.float32(b)) for b in base), compares.pop() if compares else
                  "LESS_EQUAL", head), {"aggregate": a.get("aggregate_function", b"SUM").decode(),
                                        "tracks": tracks, "classes": list(classes),
                                        "weights_positive": all(w >= 0 for w in weights)}


def _tracks(a: dict) -> list[int]:
    return list(a.get("nodes_missing_value_tracks_true") or [0] * len(a["nodes_nodeids"]))


def _onnx_tree(tree: int, tests: dict, values: dict, k: int, n_inputs: int) -> tuple[tuple[Node, ...], dict]:
    """One tree's nodes (position = ONNX node id), and for each internal node the feature and whether a NaN
    goes to its true branch."""
    ids = sorted(i for t, i in tests if t == tree)
    if ids != list(range(len(ids))):
        raise ExportError(f"tree {tree} of the ONNX ensemble does not number its nodes 0..{len(ids) - 1}")
    nodes, missing = [], {}
    for i in ids:
        f, thr, mode, yes, no, miss = tests[(tree, i)]
        if mode == b"LEAF":
            nodes.append(Node(value=tuple(values.get((tree, i), np.zeros(k)))))
            continue
        if not 0 <= f < n_inputs:
            raise ExportError(f"node {i} of tree {tree} tests input {f}; the ensemble's input has {n_inputs}")
        swap = _MODES[mode][1]
        nodes.append(Node(int(f), float(np.float32(thr)), int(no if swap else yes), int(yes if swap else no)))
        missing[i] = (int(f), bool(miss))
    return tuple(nodes), missing


def check_missing(tracks: list[dict], may_be_nan) -> None:
    """Refuse trees that would route a NaN other than the walker does (to the false branch of ``x <= t``).

    ``may_be_nan(j)`` says whether model input ``j`` can be NaN; after the
    exported pipeline's imputation none can, and the nodes' missing-value
    directions never matter.
    """
    for tree, nodes in enumerate(tracks):
        for i, (f, to_true) in nodes.items():
            if to_true and may_be_nan(f):
                raise ExportError(f"node {i} of tree {tree} sends a missing value of input {f} down its true "
                                  "branch, and that input is not imputed before the trees; the C form walks NaN "
                                  "to the false branch: impute the column (edgeml's preprocessing does)")


__all__ = ["TreeTables", "check_missing", "forest_tables", "onnx_forest", "tables_bytes"]
