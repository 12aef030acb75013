"""The C the other tools write for a fitted scikit-learn model, behind the API the example firmware calls.

``bench/bench_mcu.py`` builds every form into the same project (``main.c``,
startup, link script: :mod:`edgeml.firmware.project`) and reads its flash,
RAM and outputs in QEMU, so each tool's C is wrapped as ``edgeml_model.h`` /
``edgeml_model.c`` with ``edgeml_predict`` and ``edgeml_label``:

* m2cgen (``export_to_c``): ``score(double *input, double *output)`` for a
  classifier's probabilities, ``double score(double *input)`` for a regressor;
  the wrapper widens the float row to double and narrows the outputs back.
* emlearn (``convert(..., method="inline")``): ``NAME_predict_proba`` for a
  classifier, ``NAME_predict`` for a regressor, on float features
  (``dtype="float"``) or on its default int16 features (the row truncated).
* a null model, which only writes zeros: the firmware around a model, whose
  flash and RAM are subtracted from every form's to give the model's own.

The peers take the model's inputs after edgeml's preprocessing (the same
matrix the estimator was fitted on), so they carry no imputation or encoding
code; edgeml's C takes the raw row and holds its preprocessing.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

HEADER = """#ifndef EDGEML_MODEL_H
#define EDGEML_MODEL_H
#define EDGEML_N_FEATURES {n}
#define EDGEML_N_OUTPUTS {k}
#define EDGEML_CLASSIFIER {classifier}
extern const char *const edgeml_feature_names[EDGEML_N_FEATURES];
void edgeml_predict(const float *x, float *out);
int edgeml_label(const float *p);
#endif
"""

ARGMAX = """
int edgeml_label(const float *p) {
    int best = 0;
    for (int k = 1; k < EDGEML_N_OUTPUTS; k++) {
        if (p[k] > p[best]) best = k;
    }
    return best;
}
"""


def _names(n: int) -> str:
    return ("const char *const edgeml_feature_names[EDGEML_N_FEATURES] = {"
            + ", ".join(f'"x{j}"' for j in range(n)) + "};\n")


def _write(out: Path, n: int, k: int, classifier: bool, body: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "edgeml_model.h").write_text(HEADER.format(n=n, k=k, classifier=int(classifier)))
    (out / "edgeml_model.c").write_text('#include <stdint.h>\n#include "edgeml_model.h"\n' + _names(n) + body
                                        + ARGMAX)


def null_model(out: Path, n: int, k: int, classifier: bool) -> None:
    """A model that writes zeros: the firmware's own flash and RAM, without a model."""
    _write(out, n, k, classifier, """
void edgeml_predict(const float *x, float *out) {
    (void)x;
    for (int k = 0; k < EDGEML_N_OUTPUTS; k++) out[k] = 0.0f;
}
""")


def m2cgen_model(out: Path, model, n: int, k: int, classifier: bool) -> None:
    """m2cgen's C for ``model`` (double arithmetic, as it writes it) behind the firmware's API."""
    import m2cgen

    code = m2cgen.export_to_c(model)
    if classifier:
        call = ("    double o[EDGEML_N_OUTPUTS];\n    score(in, o);\n"
                "    for (int j = 0; j < EDGEML_N_OUTPUTS; j++) out[j] = (float)o[j];\n")
    else:
        call = "    out[0] = (float)score(in);\n"
    _write(out, n, k, classifier, code + """
void edgeml_predict(const float *x, float *out) {
    double in[EDGEML_N_FEATURES];
    for (int j = 0; j < EDGEML_N_FEATURES; j++) in[j] = (double)x[j];
""" + call + "}\n")


def _local_includes(text: str, names: set[str]) -> str:
    """``text`` with ``#include <name>`` as ``#include "name"`` for the headers in ``names``."""
    return re.sub(r"#include <([\w.]+)>", lambda m: f'#include "{m[1]}"' if m[1] in names else m[0], text)


def emlearn_model(out: Path, model, n: int, k: int, classifier: bool, dtype: str) -> None:
    """emlearn's inline C for ``model`` on ``dtype`` features ("float", or its default "int16_t")."""
    import emlearn

    net = hasattr(model, "coefs_")
    if net and dtype != "float":
        raise NotImplementedError("emlearn's neural networks take float inputs only")
    out.mkdir(parents=True, exist_ok=True)
    kind = "classifier" if classifier else "regressor"
    with contextlib.chdir(out):  # emlearn compiles a net in ./tmp to check it: inside the case's folder
        emlearn.convert(model, method="inline", dtype=dtype, return_type=kind).save(file="eml.h", name="eml")
    if net:  # a net's C includes emlearn's own headers (<eml_net.h>...): copied beside it as the project's
        headers = {h.name: h for h in Path(emlearn.includedir).glob("*.h")}
        for name, path in {**headers, "eml.h": out / "eml.h"}.items():
            (out / name).write_text(_local_includes(path.read_text(), set(headers)))
    ctype = "float" if dtype == "float" else "int16_t"
    if classifier and net:  # a net's inline C names the EmlNet `eml`, with no eml_predict_proba of its own
        call = "    eml_net_predict_proba(&eml, in, EDGEML_N_FEATURES, out, EDGEML_N_OUTPUTS);\n"
    elif classifier:
        call = "    eml_predict_proba(in, EDGEML_N_FEATURES, out, EDGEML_N_OUTPUTS);\n"
    else:
        call = "    out[0] = (float)eml_predict(in, EDGEML_N_FEATURES);\n"
    _write(out, n, k, classifier, f"""#include "eml.h"
void edgeml_predict(const float *x, float *out) {{
    {ctype} in[EDGEML_N_FEATURES];
    for (int j = 0; j < EDGEML_N_FEATURES; j++) in[j] = ({ctype})x[j];
{call}}}
""")
