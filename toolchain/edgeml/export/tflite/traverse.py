"""Tree ensembles as node tables walked by gathers (the tree-traversal strategy of Hummingbird), in TFLite builtin ops.

The GEMM form of :mod:`.trees` pads every tree to the largest one and
stores a [internal nodes × leaves] path matrix per tree, so its size grows
with the square of a tree's size: a depth-10 random forest of 50 trees is
~23 MB. Here every node of every tree is stored once, in four flat tables,
and each row walks its trees one level per step:

* ``feature[i]``, ``threshold[i]``: the test of node ``i``; a row goes
  right when ``x[feature] > threshold`` (the complement of scikit-learn's
  and LightGBM's ``<=``; ``>=`` for XGBoost's ``<``);
* ``left[i]``: node ``i``'s left child; its right child is ``left[i] + 1``
  (children are numbered next to each other), so no ``right`` table is
  needed: the next node is ``left[i] + went_right``;
* a leaf points at itself and has a NaN threshold, which no comparison
  passes, so once a row reaches a leaf the remaining steps keep it there;
* ``values[i]`` [K]: the leaf's contribution to each output (0 for
  internal nodes), ``roots[t]``: the node where tree ``t`` starts.

After ``depth`` steps (the longest root-to-leaf path) every row sits on a
leaf in every tree; the raw output is the sum of those leaves' values plus
``bias``. The file grows with the node count (16 + 4·K bytes a node) and the
graph with the depth (9 operators a level): the depth-10 forest above is
~1 MB and answers a row in ~10 µs instead of ~2 ms. "Go right" is the exact
complement of "go left" because the inputs hold no NaN (the exporter's
preprocessing imputes them). :func:`gemm_bytes` and :func:`traversal_bytes`
predict both forms' sizes before anything is built, and
:func:`preferred_form` picks the one expected to answer sooner
(bench/results/tflite_traverse.md).

Example (two stumps on one feature):

>>> from edgeml.export.tflite.trees import Forest, Node
>>> stump = (Node(0, 0.5, 1, 2), Node(value=(1.0,)), Node(value=(3.0,)))
>>> arrays = traversal_arrays(Forest((stump, stump), 1, (0.0,), "LESS_EQUAL", "identity"))
>>> arrays.raw(np.array([[0.0], [1.0]], np.float32)).ravel().tolist()
[2.0, 6.0]
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgeml.errors import ExportError
from edgeml.export.tflite.graph import Graph, Tensor
from edgeml.export.tflite.trees import Forest, exact_thresholds, split_trees

#: The test that sends a row right, for each library's "go left" test.
_GOES_RIGHT = {"LESS_EQUAL": "GREATER", "LESS": "GREATER_EQUAL"}


@dataclass(frozen=True)
class Traversal:
    """The node tables of a whole ensemble (see the module docstring), and how the raw sum becomes the output."""

    feature: np.ndarray    # [N] int32, 0 at leaves (read, never used)
    threshold: np.ndarray  # [N] float32, NaN at leaves
    left: np.ndarray       # [N] int32: the left child (the right one is next to it); a leaf's own position
    values: np.ndarray     # [N, K] float32, 0 at internal nodes
    roots: np.ndarray      # [T] int32
    bias: np.ndarray       # [K] float32
    depth: int             # splits on the longest root-to-leaf path: the number of steps
    compare: str           # the library's "go left" test: "LESS_EQUAL" or "LESS"
    head: str              # as Ensemble.head

    @property
    def nodes(self) -> int:
        return len(self.feature)

    @property
    def trees(self) -> int:
        return len(self.roots)

    def raw(self, Z: np.ndarray) -> np.ndarray:
        """The raw sum for the model inputs ``Z`` [n, D], in numpy, step by step as the graph computes it."""
        Z = np.asarray(Z, np.float32)
        rows = np.arange(len(Z))[:, None]
        at = np.broadcast_to(self.roots, (len(Z), self.trees))
        for _ in range(self.depth):
            x, thr = Z[rows, self.feature[at]], self.threshold[at]
            right = (x > thr) if self.compare == "LESS_EQUAL" else (x >= thr)
            at = self.left[at] + right.astype(np.int32)
        return self.values[at].sum(axis=1) + self.bias


#: The most nodes a walk can index: its node tables are float32, which hold every integer up to 2**24 exactly.
MAX_NODES = 2 ** 24


def traversal_arrays(forest: Forest) -> Traversal:
    """Number the nodes of ``forest`` breadth first, tree after tree, and lay them out as flat tables.

    Breadth-first numbering puts the two children of a node next to each
    other. Single-leaf trees are constants and go into ``bias``, as in
    :func:`.trees.pack`.
    """
    kept, bias = split_trees(forest.trees, forest.k, forest.bias)
    feature, threshold, left, values, roots = [], [], [], [], []
    depth = 0
    zeros = (0.0,) * forest.k
    for nodes in kept:
        base = len(feature)
        order, depths = _breadth_first(nodes)
        position = {node: base + j for j, node in enumerate(order)}
        roots.append(base)
        depth = max(depth, max(depths))
        for i in order:
            n = nodes[i]
            if n.feature >= 0:
                feature.append(n.feature)
                threshold.append(n.threshold)
                left.append(position[n.left])
                values.append(zeros)
            else:
                feature.append(0)
                threshold.append(np.nan)
                left.append(position[i])
                values.append(n.value)
    if len(feature) > MAX_NODES:
        raise ExportError(f"the forest has {len(feature):,} nodes; the tree walk indexes nodes through float32 "
                          f"tables, exact up to {MAX_NODES:,}: train fewer or smaller trees (n_estimators, max_depth)")
    return Traversal(
        feature=np.array(feature, np.int32),
        threshold=exact_thresholds(threshold, forest.compare),
        left=np.array(left, np.int32),
        values=np.array(values, np.float32).reshape(len(feature), forest.k),
        roots=np.array(roots, np.int32),
        bias=bias.astype(np.float32),
        depth=depth,
        compare=forest.compare,
        head=forest.head,
    )


def _breadth_first(nodes) -> tuple[list[int], list[int]]:
    """Node ids in breadth-first order (each node's children enqueued together), and each one's depth."""
    order, depths = [0], [0]
    queue = deque([(0, 0)])
    while queue:
        i, d = queue.popleft()
        n = nodes[i]
        if n.feature >= 0:
            for child in (n.left, n.right):
                order.append(child)
                depths.append(d + 1)
                queue.append((child, d + 1))
    return order, depths


def emit_traversal(g: Graph, z: Tensor, arrays: Traversal, weights: Callable[[str, np.ndarray], Tensor]) -> Tensor:
    """The raw score [n, K] of ``arrays`` for the model inputs ``z`` [n, D] (float32, no NaN).

    ``weights(name, float32 array)`` makes the leaf values' constant (the
    exporter's precision: fp16 stores them half and widens them); the
    thresholds are always float32, so every decision is exact. The first
    step reads the roots' tests from constants; each further step is::

        f   = CAST(GATHER(feature, at))                       # [n, T] the input each tree tests
        x   = GATHER(z, f, axis=1, batch_dims=1)              # [n, T] that input's value in the row
        thr = GATHER(threshold, at)
        at  = CAST(GATHER(left, at)) + CAST(GREATER(x, thr))  # GREATER_EQUAL for XGBoost's "<"

    The node tables ``feature`` and ``left`` are stored as float32 (exact
    for indices below 2**24) and cast after the gather: TFLite Micro's GATHER
    takes no int32 table, and in LiteRT the two casts cost nothing
    measurable (7.8 against 8.1 µs a row for 30 trees of depth 10).
    """
    t, k = arrays.trees, arrays.values.shape[1]
    goes_right = _GOES_RIGHT[arrays.compare]
    roots = arrays.roots
    x = g.op("GATHER", [z, g.const("root_features", arrays.feature[roots])], (t,), name="root_inputs", Axis=1)
    right = g.op(goes_right, [x, g.const("root_thresholds", arrays.threshold[roots])], (t,), np.bool_,
                 name="root_goes_right")
    step = g.op("CAST", [right], (t,), np.int32, name="root_step")
    at = g.op("ADD", [g.const("root_lefts", arrays.left[roots]), step], (t,), np.int32, name="level1_nodes")
    if arrays.depth > 1:
        feature = g.const("node_features", arrays.feature.astype(np.float32))
        threshold = g.const("node_thresholds", arrays.threshold)
        left = g.const("node_lefts", arrays.left.astype(np.float32))
    for level in range(1, arrays.depth):
        f = g.op("GATHER", [feature, at], (t,), name=f"level{level}_features_f", Axis=0)
        f = g.op("CAST", [f], (t,), np.int32, name=f"level{level}_features")
        x = g.op("GATHER", [z, f], (t,), name=f"level{level}_inputs", Axis=1, BatchDims=1)
        thr = g.op("GATHER", [threshold, at], (t,), name=f"level{level}_thresholds", Axis=0)
        right = g.op(goes_right, [x, thr], (t,), np.bool_, name=f"level{level}_goes_right")
        step = g.op("CAST", [right], (t,), np.int32, name=f"level{level}_step")
        lefts = g.op("GATHER", [left, at], (t,), name=f"level{level}_lefts_f", Axis=0)
        lefts = g.op("CAST", [lefts], (t,), np.int32, name=f"level{level}_lefts")
        at = g.op("ADD", [lefts, step], (t,), np.int32, name=f"level{level + 1}_nodes")
    reached = g.op("GATHER", [weights("leaf_values", arrays.values), at], (t, k), name="leaf_values_reached", Axis=0)
    total = g.op("SUM", [reached, g.const("tree_axis", np.array([1], np.int32))], (k,), name="tree_sum")
    return g.op("ADD", [total, g.const("base_score", arrays.bias)], (k,), name="raw_score")


# --- how big and how fast each form is ---------------------------------------------------------------

#: Flatbuffer bytes per tensor (its table, name, shape and signature), per operator (table, input and output
#: lists, options) and per constant buffer (table and 16-byte alignment), measured on files this builder writes.
_TENSOR_BYTES, _OPERATOR_BYTES, _BUFFER_BYTES = 72, 56, 24


@dataclass(frozen=True)
class _Shape:
    """What both forms' sizes depend on: trees with a split, outputs, reachable nodes, depth, and the largest tree."""

    trees: int
    k: int
    nodes: int
    depth: int
    max_internal: int
    max_leaves: int


def _shape(forest: Forest) -> _Shape:
    kept, _ = split_trees(forest.trees, forest.k, forest.bias)
    walks = [_breadth_first(nodes) for nodes in kept]
    return _Shape(
        trees=len(kept),
        k=forest.k,
        nodes=sum(len(order) for order, _ in walks),
        depth=max(max(depths) for _, depths in walks),
        max_internal=max(sum(1 for n in nodes if n.feature >= 0) for nodes in kept),
        max_leaves=max(sum(1 for n in nodes if n.feature < 0) for nodes in kept),
    )


def _file_bytes(constants: list[int], operators: int) -> int:
    """Bytes a graph part adds to the file: ``constants`` (their sizes) and ``operators`` (each with one output)."""
    data = sum(-(-c // 16) * 16 + _BUFFER_BYTES for c in constants)
    return data + (len(constants) + operators) * _TENSOR_BYTES + operators * _OPERATOR_BYTES


def traversal_bytes(forest: Forest, precision: str = "fp32") -> int:
    """Bytes :func:`emit_traversal` adds to a ``.tflite`` file for ``forest`` at ``precision`` ("fp32", "fp16").

    Counted from the node counts without building anything, so an exporter
    can compare it with :func:`gemm_bytes` before choosing a form.
    """
    s = _shape(forest)
    value_bytes = 2 if precision == "fp16" else 4
    constants = [4 * s.trees] * 3 + [s.nodes * s.k * value_bytes, 4, 4 * s.k]
    if s.depth > 1:
        constants += [4 * s.nodes] * 3
    operators = 4 + 9 * (s.depth - 1) + 3 + (precision == "fp16")
    return _file_bytes(constants, operators)


def gemm_bytes(forest: Forest, precision: str = "fp32") -> int:
    """Bytes :func:`.tflite.emit_trees` (the GEMM form) adds to a ``.tflite`` file for ``forest`` at ``precision``.

    Every tree is padded to the largest tree's internal nodes ``I`` and leaves
    ``L``; the int8 path matrix alone is ``T·I·L`` bytes.
    """
    s = _shape(forest)
    t, n_int, n_leaf = s.trees, s.max_internal, s.max_leaves
    value_bytes = 2 if precision == "fp16" else 4
    constants = [4 * t * n_int, 4 * t * n_int, 16, t * n_int * n_leaf, 8, 4 * t * n_leaf,
                 t * n_leaf * s.k * value_bytes, s.k * value_bytes]
    operators = 10 + (2 if precision == "fp16" else 0)
    return _file_bytes(constants, operators)


#: One-row latency model of the two forms in LiteRT, µs, fitted on bench/results/tflite_traverse.md (x86-64, one
#: thread; it orders the forms, it does not promise device timings). The GEMM form multiplies its whole path
#: matrices, so it costs with its size: ~4 µs + 1 µs per 17 kB. A traversal costs with its depth: ~1 µs, plus
#: per level 0.5 µs + 0.007 µs per tree (9 operators over [rows, trees], two of them casts that cost ~nothing).
GEMM_US, GEMM_BYTES_PER_US = 4.0, 17_000
TRAVERSAL_US, TRAVERSAL_LEVEL_US, TRAVERSAL_TREE_LEVEL_US = 1.0, 0.5, 0.007


def preferred_form(forest: Forest) -> str:
    """``"traversal"`` or ``"gemm"``: the form the latency model above expects to answer one row sooner.

    Deep forests and depth-limited boosting walk sooner (a depth-12 random
    forest ~900× sooner, and ~45× smaller); LightGBM grows its trees
    leaf-wise, ~20 levels deep for 31 leaves, and there the small GEMM
    form multiplies sooner than 20 levels of gathers.
    """
    s = _shape(forest)
    gemm = GEMM_US + gemm_bytes(forest) / GEMM_BYTES_PER_US
    walk = TRAVERSAL_US + s.depth * (TRAVERSAL_LEVEL_US + TRAVERSAL_TREE_LEVEL_US * s.trees)
    return "traversal" if walk <= gemm else "gemm"


__all__ = ["Traversal", "emit_traversal", "gemm_bytes", "preferred_form", "traversal_arrays", "traversal_bytes"]
