"""The text of ``edgeml_model.h`` and ``edgeml_model.c`` for a :class:`~edgeml.export.c.program.Program`.

The public API (fixed: firmware and the Cortex-M emulation harness call exactly this)::

    #define EDGEML_N_FEATURES n   /* the float row, in edgeml_feature_names order; NAN = missing; a category =
                                     its code */
    #define EDGEML_N_OUTPUTS k    /* class probabilities, or 1 value */
    #define EDGEML_CLASSIFIER 1   /* or 0 */
    extern const char *const edgeml_feature_names[EDGEML_N_FEATURES];
    extern const char *const edgeml_codes_<i>[...];   /* categorical feature i: a category's code is its position */
    extern const char *const edgeml_classes[EDGEML_N_OUTPUTS];   /* classification only */
    void edgeml_predict(const float *x, float *out);   /* out: EDGEML_N_OUTPUTS floats */
    int edgeml_label(const float *p);                  /* classification only: an index into edgeml_classes */

``edgeml_label`` applies the manifest's decision threshold as the runtime
does (``p[1] > threshold``, compared in float32: NumPy compares a float32
probability with the threshold rounded to float32), else the first most
likely class. The source is C99, float32 only (no ``double``; every literal
a hexadecimal float with an ``f`` suffix), with no heap, no recursion and no
arena; it refuses ``-ffast-math`` and turns off floating-point contraction.
"""

from __future__ import annotations

from edgeml.export.c.program import Program, step_name
from edgeml.export.c.steps import KERNELS
from edgeml.export.csource import STRICT_FLOAT, c_array, c_comment, c_float, c_string

HEADER, SOURCE = "edgeml_model.h", "edgeml_model.c"

_ISNAN = ("/* NaN, tested on the bits (the row's NAN for a missing number). */\n"
          "static int edgeml_isnan(float v) {\n"
          "    uint32_t bits;\n"
          "    memcpy(&bits, &v, sizeof bits);\n"
          "    return (bits & 0x7fffffffu) > 0x7f800000u;\n"
          "}")


def c_sources(program: Program, title: str, classes: list[str], threshold: float | None,
              note: str = "") -> tuple[str, str]:
    """The header's and the source's text (``title`` and ``note`` already :func:`c_comment` safe)."""
    inputs = program.inputs
    declarations = [
        "#define EDGEML_FORM_C 1  /* plain C: no TensorFlow Lite Micro, no tensor arena, no heap */",
        f"#define EDGEML_N_FEATURES {len(inputs.features)}  /* the float row, in edgeml_feature_names order; NAN = "
        "missing; a category = its code */",
        f"#define EDGEML_N_OUTPUTS {program.outputs}  /* {'class probabilities' if classes else 'the value'} */",
        f"#define EDGEML_CLASSIFIER {1 if classes else 0}",
        f"#define EDGEML_CONST_BYTES {program.const_bytes(classes)['total']}  /* const data "
        "(tables, names) for 4-byte pointers */",
        *([f"/* {note} */"] if note else []), "",
        "extern const char *const edgeml_feature_names[EDGEML_N_FEATURES];"]
    definitions = [c_array("char *const", "edgeml_feature_names", (c_string(f) for f in inputs.features), 4)]
    for i, codes in sorted(inputs.codes.items()):
        declarations.append(f"extern const char *const edgeml_codes_{i}[{len(codes)}];  /* "
                            f"{c_comment(inputs.features[i])}: a category's code is its position here, -1 if "
                            "unknown */")
        definitions.append(c_array("char *const", f"edgeml_codes_{i}", (c_string(v) for v in codes), 6))
    if classes:
        declarations.append("extern const char *const edgeml_classes[EDGEML_N_OUTPUTS];")
        definitions.append(c_array("char *const", "edgeml_classes", (c_string(v) for v in classes), 6))
    declarations += ["", "/* x: EDGEML_N_FEATURES floats; out: EDGEML_N_OUTPUTS floats. */",
                     "void edgeml_predict(const float *x, float *out);"]
    label_head, label_body = _label(len(classes), threshold) if classes else ([], [])
    header = "\n".join([
        f"/* {title} */", "#ifndef EDGEML_MODEL_H", "#define EDGEML_MODEL_H", "", "#include <stdint.h>", "",
        "#ifdef __cplusplus", 'extern "C" {', "#endif", "", *declarations, *label_head, "",
        "#ifdef __cplusplus", "}", "#endif", "#endif  /* EDGEML_MODEL_H */", ""])
    source = "\n".join([
        f"/* {title} */", "#include <math.h>", "#include <stdint.h>", "#include <string.h>", f'#include "{HEADER}"',
        "", *STRICT_FLOAT, "", *definitions, "", *(t.c() for t in program.tables()), "",
        *_functions(program), "", *_predict(program), *label_body, ""])
    return header, source


def _functions(program: Program) -> list[str]:
    """The static functions: NaN test, kernels the steps call (once each), the preprocessing, each step's own."""
    out = [_ISNAN] if program.inputs.encoding.numeric else []
    used = []
    for step in program.steps:
        used += [k for k in step.kernels if k not in used]
    out += [KERNELS[k] for k in KERNELS if k in used]  # in KERNELS' order: a kernel may call one before it
    out.append(program.inputs.function())
    for i, step in enumerate(program.steps):
        out += step.functions(step_name(step, i))
    return ["\n\n".join(out)]


def _predict(program: Program) -> list[str]:
    widths = program.widths()
    lines = ["void edgeml_predict(const float *x, float *out) {",
             *(f"    float b{i}[{w}];" for i, w in enumerate(widths)), "    edgeml_inputs(x, b0);"]
    for i, step in enumerate(program.steps):
        ins = [f"b{j}" for j in step.inputs]
        lines += [f"    {line}" for line in step.call(step_name(step, i), ins, f"b{i + 1}")]
    lines += [f"    for (int i = 0; i < EDGEML_N_OUTPUTS; i++) out[i] = b{program.output}[i];", "}"]
    return lines


def _label(k: int, threshold: float | None) -> tuple[list[str], list[str]]:
    if threshold is not None and k == 2:
        head = [f"#define EDGEML_THRESHOLD {c_float(threshold)}  /* the manifest's decision.threshold "
                f"{c_comment(repr(float(threshold)))} in float32: edgeml_classes[1] when its probability is above "
                "it, edgeml_classes[0] otherwise (equal too) */"]
        rule = ["    return p[1] > EDGEML_THRESHOLD ? 1 : 0;"]
    else:
        head = ["/* edgeml_label: the first most likely class (argmax), as edgeml_runtime labels. */"]
        rule = ["    int best = 0;", "    for (int k = 1; k < EDGEML_N_OUTPUTS; k++) {",
                "        if (p[k] > p[best]) best = k;", "    }", "    return best;"]
    head.append("int edgeml_label(const float *p);  /* p: EDGEML_N_OUTPUTS probabilities -> an edgeml_classes index */")
    return head, ["", "int edgeml_label(const float *p) {", *rule, "}"]


__all__ = ["HEADER", "SOURCE", "c_sources"]
