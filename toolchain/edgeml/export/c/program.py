"""A model as plain C computes it: the preprocessing of a float row, then steps over float32 buffers.

:class:`Program` is what :mod:`edgeml.export.c.reader` reads a bundle's ONNX
model into and :mod:`edgeml.export.c.sources` writes as C: :class:`Inputs`
(the row in ``edgeml_feature_names`` order, NaN for a missing number, a
category as its code, turned into the model inputs exactly as the exported
pipeline does: imputation, one-hot, scaling), then steps
(:mod:`edgeml.export.c.steps`, :class:`Trees`), buffer 0 being the model
inputs and buffer ``i`` the output of step ``i - 1``.

:meth:`Program.const_bytes` is the exact size of the const data the
generated C holds, table by table (``sizeof`` of each array, summed; the
strings of names, codes and classes and the pointer arrays to them counted
for a ``pointer_bytes``-wide pointer, 4 on a Cortex-M).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgeml.export.c.forest import TreeTables
from edgeml.export.c.steps import Step, Table, float_table
from edgeml.export.csource import c_float, smallest_unsigned
from edgeml_runtime.litert import Encoding


@dataclass(frozen=True)
class Inputs:
    """The float row to the model inputs: ``encoding`` over the row's ``features`` (see :class:`Encoding`)."""

    encoding: Encoding
    features: tuple[str, ...]
    codes: dict[int, tuple[str, ...]] = field(default_factory=dict)  # a categorical feature's position -> its codes

    @property
    def width(self) -> int:
        return self.encoding.width

    def may_be_nan(self, j: int) -> bool:
        """Whether model input ``j`` can be NaN: a number the pipeline does not impute (a one-hot input cannot)."""
        e = self.encoding
        return j < len(e.numeric) and bool(np.isnan(e.median[j]))

    def tables(self) -> list[Table]:
        e = self.encoding
        take, _, n_numeric, codes = e.layout
        out = [Table(smallest_unsigned(max(len(self.features) - 1, 0)), "edgeml_take", tuple(int(t) for t in take))]
        if n_numeric:
            out.append(float_table("edgeml_fill", e.median))
        if len(codes):
            out.append(float_table("edgeml_code", codes))
        if e.mean is not None:
            out += [float_table("edgeml_offset", e.mean), float_table("edgeml_scale", e.inv_scale)]
        return out

    def function(self) -> str:
        e = self.encoding
        n_numeric = len(e.numeric)
        lines = ["/* The row (edgeml_feature_names order, NAN = missing, a category = its code) -> the model inputs:",
                 "   missing numbers imputed, one 1/0 input per category, then scaled, as the exported pipeline. */",
                 "static void edgeml_inputs(const float *x, float *z) {",
                 f"    for (int j = 0; j < {self.width}; j++) {{", "        float v = x[edgeml_take[j]];"]
        if n_numeric and len(e.onehot):
            lines += [f"        if (j < {n_numeric}) {{", "            if (edgeml_isnan(v)) v = edgeml_fill[j];",
                      "        } else {", f"            v = (v == edgeml_code[j - {n_numeric}]) ? 1.0f : 0.0f;",
                      "        }"]
        elif n_numeric:
            lines.append("        if (edgeml_isnan(v)) v = edgeml_fill[j];")
        else:
            lines.append("        v = (v == edgeml_code[j]) ? 1.0f : 0.0f;")
        if e.mean is not None:
            lines.append("        v = (v - edgeml_offset[j]) * edgeml_scale[j];")
        return "\n".join([*lines, "        z[j] = v;", "    }", "}"])


@dataclass(frozen=True)
class Trees(Step):
    """A tree ensemble's scores: the walk of :class:`TreeTables`, divided by the tree count for ``average``,
    plus ``bias`` [k] (float32; a literal when every output's is the same, as compilers fold it anyway)."""

    inputs: tuple[int, ...]
    tables_: TreeTables
    bias: np.ndarray
    average: bool = False

    @property
    def width(self) -> int:
        return self.tables_.k

    def tables(self, name):
        t = self.tables_
        ty = t.types
        out = [Table(ty["feature"], f"{name}_feature", tuple(t.feature.tolist())),
               float_table(f"{name}_threshold", t.threshold),
               Table(ty["child"], f"{name}_left", tuple(t.left.tolist())),
               Table(ty["child"], f"{name}_right", tuple(t.right.tolist())),
               float_table(f"{name}_leaf", t.leaf),
               Table(ty["tree_node"], f"{name}_tree_node", tuple(t.tree_node.tolist()))]
        if t.tree_leaf is not None:
            out.append(Table(ty["tree_leaf"], f"{name}_tree_leaf", tuple(t.tree_leaf.tolist())))
        if t.tree_target is not None:
            out.append(Table(ty["tree_target"], f"{name}_tree_target", tuple(t.tree_target.tolist())))
        if np.any(self.bias != 0) and len(set(self.bias.tolist())) > 1:  # one value is a literal
            out.append(float_table(f"{name}_bias", self.bias))
        return out

    def functions(self, name):
        t, k = self.tables_, self.width
        test = "<=" if t.compare == "LESS_EQUAL" else "<"
        if t.values > 1:
            add = [f"        for (int k = 0; k < {k}; k++) s[k] += {name}_leaf[l * {k}u + (uint32_t)k];"]
        elif t.tree_target is not None:
            add = [f"        s[{name}_tree_target[t]] += {name}_leaf[l];"]
        else:
            add = [f"        s[0] += {name}_leaf[l];"]
        n = len(t.tree_node)
        leaf = "leaf -1-c of the distinct leaves" if t.shared else "leaf -1-c"
        first = "(uint32_t)(-1 - c)" if t.shared else f"{name}_tree_leaf[t] + (uint32_t)(-1 - c)"
        lines = [f"/* {n} trees walked in a loop: child c >= 0 is internal node c of the tree, c < 0 its {leaf}. */",
                 f"static void {name}(const float *z, float *s) {{",
                 f"    for (int k = 0; k < {k}; k++) s[k] = 0.0f;",
                 f"    for (uint32_t t = 0; t < {n}u; t++) {{",
                 f"        const uint32_t base = {name}_tree_node[t];",
                 "        int32_t c = 0;",
                 "        do {",
                 "            const uint32_t i = base + (uint32_t)c;",
                 f"            c = z[{name}_feature[i]] {test} {name}_threshold[i] ? {name}_left[i] : {name}_right[i];",
                 "        } while (c >= 0);",
                 f"        const uint32_t l = {first};",
                 *add, "    }"]
        if self.average:
            lines.append(f"    for (int k = 0; k < {k}; k++) s[k] = s[k] / {_c_count(n)};")
        if np.any(self.bias != 0):
            bias = f"{name}_bias[k]" if len(set(self.bias.tolist())) > 1 else c_float(self.bias[0])
            lines.append(f"    for (int k = 0; k < {k}; k++) s[k] = s[k] + {bias};")
        return ["\n".join([*lines, "}"])]

    def call(self, name, ins, out):
        return [f"{name}({ins[0]}, {out});"]


def _c_count(n: int) -> str:
    return c_float(float(n))


@dataclass(frozen=True)
class Program:
    """The preprocessing, the steps, and which buffer holds the ``outputs`` (probabilities, or the value)."""

    inputs: Inputs
    steps: tuple[Step, ...]
    output: int
    outputs: int
    family: str  # "trees", "linear" or "mlp": whose code constant the size adds (edgeml.export.c.size)

    def widths(self) -> list[int]:
        """The float count of every buffer, the model inputs first."""
        return [self.inputs.width, *(s.width for s in self.steps)]

    def tables(self) -> list[Table]:
        """Every const numeric table: the preprocessing's, then each step's (named ``edgeml_s<i>``)."""
        out = self.inputs.tables()
        for i, step in enumerate(self.steps):
            out += step.tables(step_name(step, i))
        return out

    def names(self, classes) -> list[str]:
        """Every string the C holds: the feature names, each categorical feature's codes, the ``classes``."""
        return [*self.inputs.features, *(v for _, codes in sorted(self.inputs.codes.items()) for v in codes),
                *(str(c) for c in classes)]

    def const_bytes(self, classes=(), pointer_bytes: int = 4) -> dict[str, int]:
        """The const data of the generated C, in bytes: ``tables`` (numbers) and ``strings`` (:meth:`names`: a
        ``pointer_bytes`` pointer each, and each distinct text once with its NUL, as a compiler stores literals)."""
        tables = sum(t.nbytes for t in self.tables())
        strings = string_bytes(self.names(classes), pointer_bytes)
        return {"tables": tables, "strings": strings, "total": tables + strings}


def string_bytes(names, pointer_bytes: int = 4) -> int:
    """What ``names`` take as ``const char *const`` arrays: a pointer each, every distinct text once with its NUL.

    >>> string_bytes(["No", "Yes", "No"])
    19
    """
    return pointer_bytes * len(names) + sum(len(n.encode("utf-8")) + 1 for n in set(names))


def step_name(step: Step, i: int) -> str:
    """The C name of step ``i``'s tables and function: ``edgeml_trees1``, ``edgeml_dense2``..."""
    kind = {"Trees": "trees", "Dense": "dense", "Const": "const"}.get(type(step).__name__, "step")
    return f"edgeml_{kind}{i}"


__all__ = ["Inputs", "Program", "Trees", "step_name", "string_bytes"]
