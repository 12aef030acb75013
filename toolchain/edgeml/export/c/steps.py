"""The steps of a plain-C model: each a float32 computation from buffers to one new buffer, with its const tables.

A :class:`~edgeml.export.c.program.Program` is the preprocessing
(:class:`Inputs`) then a list of these steps, in the order of the ONNX graph
they were read from (:mod:`edgeml.export.c.reader`). A step gives its const
tables (:class:`Table`, whose bytes are counted exactly), the static helper
functions it calls (:data:`KERNELS`, written once per file however many
steps call them) and the C statements of its call. Every number is written
by :func:`~edgeml.export.csource.c_float` or checked against its integer
type, so the C holds exactly the float32 values ONNX Runtime uses.

The arithmetic follows ONNX Runtime's CPU kernels operation by operation, in
float32: dot products summed in input order, then the bias added; the
logistic function as ``1 / (1 + exp(-|x|))``, mirrored for ``x < 0``; softmax
less its maximum. ONNX Runtime's own vectorised kernels (MLAS) may sum in
another order or approximate ``exp``, so values agree to float32 rounding,
not always to the bit (tests/test_firmware_c.py measures how closely).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeml.export.csource import c_array, c_float, type_bytes

#: Static helper functions, by name: C text written once into a source that calls them.
KERNELS = {
    "edgeml_expf": (
        "/* e^v in float32 operations only (no libm): the same bits on every IEEE machine without contraction, so a\n"
        "   board computes what the host computes. v = k ln2 + r (Cody-Waite, |r| <= ln2/2), e^r by its Taylor\n"
        "   polynomial to r^7 (within 2 ulp), 2^k through the exponent bits (in two steps below 2^-126). */\n"
        "static float edgeml_expf(float v) {\n"
        "    if (!(v == v)) return v;\n"
        "    if (v > 88.72283f) return INFINITY;\n"
        "    if (v < -103.97208f) return 0.0f;\n"
        "    float kf = v * 1.44269502f;\n"
        "    int k = (int)(kf < 0.0f ? kf - 0.5f : kf + 0.5f);\n"
        "    float r = (v - (float)k * 0.693145752f) - (float)k * 1.42860677e-6f;\n"
        "    float p = 1.0f + r * (1.0f + r * (0.5f + r * (0.166666672f + r * (0.0416666679f + r * (0.00833333377f\n"
        "        + r * (0.00138888892f + r * 0.000198412701f))))));\n"
        "    int e = k < -126 ? k + 64 : (k > 127 ? 127 : k);\n"
        "    union { uint32_t u; float f; } scale;\n"
        "    scale.u = (uint32_t)(e + 127) << 23;\n"
        "    p = p * scale.f;\n"
        "    if (k < -126) { scale.u = (uint32_t)(127 - 64) << 23; p = p * scale.f; }\n"
        "    if (k > 127) p = p * 2.0f;\n"
        "    return p;\n"
        "}"),
    "edgeml_tanhf": (
        "/* tanh(v) = (1 - e^-2|v|) / (1 + e^-2|v|), signed: from edgeml_expf, so the same bits everywhere. */\n"
        "static float edgeml_tanhf(float v) {\n"
        "    float t = edgeml_expf(-2.0f * fabsf(v));\n"
        "    float y = (1.0f - t) / (1.0f + t);\n"
        "    return v < 0.0f ? -y : y;\n"
        "}"),
    "edgeml_dense": (
        "/* y[o] = sum_i x[i] * w[o * n_in + i] (+ b[o]), summed in input order. */\n"
        "static void edgeml_dense(const float *w, const float *b, int n_in, int n_out, const float *x, float *y) {\n"
        "    for (int o = 0; o < n_out; o++) {\n"
        "        float acc = 0.0f;\n"
        "        for (int i = 0; i < n_in; i++) acc += x[i] * w[o * n_in + i];\n"
        "        y[o] = b ? acc + b[o] : acc;\n"
        "    }\n"
        "}"),
    "edgeml_logistic": (
        "static float edgeml_logistic(float v) {\n"
        "    float e = 1.0f / (1.0f + edgeml_expf(-fabsf(v)));\n"
        "    return v < 0.0f ? 1.0f - e : e;\n"
        "}"),
    "edgeml_softmax": (
        "static void edgeml_softmax(const float *x, float *y, int n) {\n"
        "    float top = x[0], sum = 0.0f;\n"
        "    for (int i = 1; i < n; i++) top = x[i] > top ? x[i] : top;\n"
        "    for (int i = 0; i < n; i++) { y[i] = edgeml_expf(x[i] - top); sum += y[i]; }\n"
        "    for (int i = 0; i < n; i++) y[i] = y[i] / sum;\n"
        "}"),
}


@dataclass(frozen=True)
class Table:
    """One const array of the generated C: its element type, name and values (numbers, written as C literals)."""

    ctype: str
    name: str
    values: tuple

    @property
    def nbytes(self) -> int:
        return type_bytes(self.ctype) * len(self.values)

    def c(self) -> str:
        if self.ctype == "float":
            return c_array("float", self.name, (c_float(v) for v in self.values), 6, internal=True)
        return c_array(self.ctype, self.name, self.values, 16, internal=True)


def float_table(name: str, values) -> Table:
    return Table("float", name, tuple(float(v) for v in np.asarray(values, np.float32).ravel()))


class Step:
    """One computation: reads the buffers ``inputs``, writes a new buffer of ``width`` floats."""

    inputs: tuple[int, ...]
    width: int
    kernels: tuple[str, ...] = ()

    def tables(self, name: str) -> list[Table]:
        """The const tables of this step, named from ``name`` (unique in the file)."""
        return []

    def functions(self, name: str) -> list[str]:
        """Static functions of this step's own (besides :data:`KERNELS`)."""
        return []

    def call(self, name: str, ins: list[str], out: str) -> list[str]:
        raise NotImplementedError


@dataclass(frozen=True)
class Dense(Step):
    """``y = W x (+ b)``: ``weight`` [out, in] (float32), ``bias`` [out] or None."""

    inputs: tuple[int, ...]
    weight: np.ndarray
    bias: np.ndarray | None = None
    kernels = ("edgeml_dense",)

    @property
    def width(self) -> int:
        return int(self.weight.shape[0])

    def tables(self, name):
        table = self.bias is not None and self.bias.size > 1  # one value is a literal (a compiler folds it anyway)
        return [float_table(f"{name}_w", self.weight)] + ([float_table(f"{name}_b", self.bias)] if table else [])

    def call(self, name, ins, out):
        one = self.bias is not None and self.bias.size == 1
        b = "0" if self.bias is None or one else f"{name}_b"
        call = f"edgeml_dense({name}_w, {b}, {self.weight.shape[1]}, {self.width}, {ins[0]}, {out});"
        return [call, f"{out}[0] = {out}[0] + {c_float(self.bias[0])};"] if one else [call]


#: Element-wise functions: the C expression of ``v`` and the kernels it calls.
UNARY = {
    "relu": ("{x} > 0.0f ? {x} : 0.0f", ()),
    "tanh": ("edgeml_tanhf({x})", ("edgeml_tanhf",)),
    "logistic": ("edgeml_logistic({x})", ("edgeml_logistic",)),
    "exp": ("edgeml_expf({x})", ("edgeml_expf",)),
}


@dataclass(frozen=True)
class Unary(Step):
    """``y[i] = f(x[i])`` for one of :data:`UNARY`."""

    inputs: tuple[int, ...]
    width: int
    function: str

    @property
    def kernels(self):
        return UNARY[self.function][1]

    def call(self, name, ins, out):
        expr = UNARY[self.function][0].format(x=f"{ins[0]}[i]")
        return [f"for (int i = 0; i < {self.width}; i++) {out}[i] = {expr};"]


@dataclass(frozen=True)
class Const(Step):
    """``y = x + c``, ``y = c - x`` or ``y = x * c`` (``op`` "add", "sub_from", "mul"); ``c`` [1] or [width]."""

    inputs: tuple[int, ...]
    width: int
    op: str
    value: np.ndarray

    def tables(self, name):
        return [] if self.value.size == 1 else [float_table(f"{name}_c", self.value)]

    def call(self, name, ins, out):
        c = c_float(self.value.ravel()[0]) if self.value.size == 1 else f"{name}_c[i]"
        x = f"{ins[0]}[i]"
        expr = {"add": f"{x} + {c}", "sub_from": f"{c} - {x}", "mul": f"{x} * {c}"}[self.op]
        return [f"for (int i = 0; i < {self.width}; i++) {out}[i] = {expr};"]


@dataclass(frozen=True)
class Softmax(Step):
    inputs: tuple[int, ...]
    width: int
    kernels = ("edgeml_softmax",)

    def call(self, name, ins, out):
        return [f"edgeml_softmax({ins[0]}, {out}, {self.width});"]


@dataclass(frozen=True)
class Concat(Step):
    """The input buffers one after the other (``widths``: theirs)."""

    inputs: tuple[int, ...]
    widths: tuple[int, ...]

    @property
    def width(self) -> int:
        return sum(self.widths)

    def call(self, name, ins, out):
        lines, at = [], 0
        for buf, w in zip(ins, self.widths, strict=True):
            lines.append(f"for (int i = 0; i < {w}; i++) {out}[{at} + i] = {buf}[i];")
            at += w
        return lines


@dataclass(frozen=True)
class TwoClass(Step):
    """A binary model's one score ``s`` as two class probabilities, as ONNX Runtime writes them: ``complement``
    ``[1 - s, s]``, ``logistic`` ``[f(-s), f(s)]`` (f the logistic function), ``negate`` ``[-s, s]``."""

    inputs: tuple[int, ...]
    mode: str
    width: int = 2

    @property
    def kernels(self):
        return ("edgeml_logistic",) if self.mode == "logistic" else ()

    def call(self, name, ins, out):
        s = f"{ins[0]}[0]"
        first, second = {"complement": (f"1.0f - {s}", s), "negate": (f"-{s}", s),
                         "logistic": (f"edgeml_logistic(-{s})", f"edgeml_logistic({s})")}[self.mode]
        return [f"{out}[0] = {first};", f"{out}[1] = {second};"]


__all__ = ["KERNELS", "UNARY", "Concat", "Const", "Dense", "Softmax", "Step", "Table", "TwoClass", "Unary",
           "float_table"]
