"""`edgeml firmware --form c`: the bundle's model as plain C, compiled here and checked row by row against the runtime.

Every case builds a real bundle for the cortex-m7 target (a few trials of one
model family on a real data set), writes its C, compiles it with the host's C
compiler (strict C99, warnings as errors, -Wdouble-promotion, no FMA
contraction) and runs it on 2,000 rows of the data set with 5% of every
column emptied and unseen categories mixed in; ``edgeml_runtime`` scores the
same rows through the bundle's ONNX model. The labels must be the same on
every row (the decision threshold included) and the outputs equal: to the bit
for tree ensembles, within float32 rounding for the dense models (ONNX
Runtime's MLAS kernels sum dot products in another order and approximate the
logistic function).
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pandas as pd
import pytest
from c_model import ARM, CC, compare, compile_arm, compile_host, rows, sections
from conftest import AI4I_DROP, build_bundle

from edgeml.errors import ExportError
from edgeml.export.c import HEADER, SOURCE, bundle_sources, const_bytes, read_bundle, write_c_firmware
from edgeml.export.c.size import c_ram_bytes, preprocessing_c_bytes, program_code_bytes, steps_c_bytes
from edgeml.export.firmware import write_firmware_form

needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler (cc) on this machine")
needs_arm = pytest.mark.skipif(ARM is None, reason="arm-none-eabi-gcc is not installed (apt install gcc-arm-none-eabi)")

AI4I = {"data": "ai4i2020.csv", "label": "Machine failure", "drop": AI4I_DROP}
AI4I_TYPE = {"data": "ai4i2020.csv", "label": "Type", "drop": AI4I_DROP[:2]}  # three classes: L, M, H
CCPP = {"data": "ccpp.csv", "label": "PE"}
TELCO = {"data": "telco-churn.csv", "label": "Churn", "drop": ("customerID",)}  # 16 categories, blank numbers
#: case -> (data set, the learner searched, the family the C holds)
CASES = {
    "random-forest": (AI4I, "rf", "trees"),
    "extra-trees": (AI4I, "extra_tree", "trees"),
    "xgboost": (AI4I, "xgboost", "trees"),
    "forest-3-classes": (AI4I_TYPE, "rf", "trees"),
    "xgboost-3-classes": (AI4I_TYPE, "xgboost", "trees"),  # one tree per class: one value a leaf
    "lightgbm-regressor": (CCPP, "lgbm", "trees"),
    "forest-regressor": (CCPP, "rf", "trees"),
    "xgboost-regressor": (CCPP, "xgboost", "trees"),
    "logistic": (AI4I, "lrl2", "linear"),
    "linear-regressor": (CCPP, "enet", "linear"),
    "mlp": (AI4I, "mlp", "mlp"),
    "mlp-regressor": (CCPP, "mlp", "mlp"),
    "categories-and-blanks": (TELCO, "lrl1", "linear"),
}


@pytest.fixture(scope="module")
def bundles(datasets, tmp_path_factory):
    """Each case's bundle (``get(case)``; ``get(case, True)``: its BuildResult), built the first time a test asks."""
    root, built = tmp_path_factory.mktemp("firmware_c"), {}

    def get(case: str, result: bool = False):
        if case not in built:
            data, learner, _ = CASES[case]
            settings = {k: v for k, v in data.items() if k != "data"}
            built[case] = build_bundle(root / case, data=str(datasets / data["data"]), target="cortex-m7",
                                       estimators=(learner,), select_inputs=False, max_iter=2, **settings)
        return built[case] if result else built[case].bundle_dir

    return get


def _frame(datasets, case: str) -> pd.DataFrame:
    return pd.read_csv(datasets / CASES[case][0]["data"], nrows=2000)


@needs_cc
@pytest.mark.parametrize("case", list(CASES))
def test_the_c_form_labels_every_row_as_the_runtime_does(case, bundles, datasets, tmp_path):
    from edgeml_runtime.bundle import read_manifest

    bundle = bundles(case)
    write_c_firmware(bundle, tmp_path)
    exe = compile_host(tmp_path)
    manifest = read_manifest(bundle)
    result = compare(bundle, exe, rows(_frame(datasets, case), manifest.schema), tmp_path)
    assert result.rows == 2000
    if manifest.classes:
        assert result.flips == 0
        assert np.allclose(result.got.sum(axis=1), 1, atol=1e-5)
    source = (tmp_path / SOURCE).read_text()
    if CASES[case][2] == "trees" and "edgeml_expf(" not in source:
        np.testing.assert_array_equal(result.got, result.want)  # the same float32 operations in the same order
    elif CASES[case][2] == "trees":  # boosting's logistic or softmax: the C's own exp, within 2 ulp of libm's
        assert result.max_ulps <= 2, result
    else:
        assert result.max_ulps <= 8, result  # float32 steps of max(|value|, 1): rounding, not a different model
    header = (tmp_path / HEADER).read_text()
    assert f"#define EDGEML_CONST_BYTES {const_bytes(bundle)['total']} " in header
    assert "double" not in source and "malloc" not in source


@needs_cc
def test_the_decision_threshold_decides_the_label(bundles, datasets, tmp_path):
    """ai4i's positives are 3.4% of the rows: the build tunes a threshold below 0.5, and the C applies it."""
    from edgeml_runtime.bundle import read_manifest

    bundle = bundles("random-forest")
    manifest = read_manifest(bundle)
    assert manifest.decision is not None and manifest.decision.threshold < 0.5
    write_c_firmware(bundle, tmp_path)
    result = compare(bundle, compile_host(tmp_path), rows(_frame(datasets, "random-forest"), manifest.schema),
                     tmp_path)
    labels = np.frombuffer((tmp_path / "y.f32").read_bytes(), np.float32).reshape(result.rows, 3)[:, 2]
    by_threshold = result.got[:, 1] > np.float32(manifest.decision.threshold)
    np.testing.assert_array_equal(labels == 1, by_threshold)
    assert (by_threshold != (result.got[:, 1] > result.got[:, 0])).any(), "no row where the threshold matters"
    assert result.flips == 0


@needs_arm
@pytest.mark.parametrize("case", list(CASES))
def test_the_c_compiles_for_cortex_m_in_single_precision(case, bundles, tmp_path):
    """-Wdouble-promotion -Werror for a Cortex-M7 and a Cortex-M4 (single-precision FPU): no double operation
    and no call into the double-precision runtime; the const data in .rodata is what const_bytes says, the code
    in .text within the family's code constant."""
    bundle = bundles(case)
    write_c_firmware(bundle, tmp_path)
    m4 = compile_arm(tmp_path, "cortex-m4")
    symbols = subprocess.run(["arm-none-eabi-nm", str(m4)], check=True, capture_output=True, text=True).stdout
    assert "__aeabi_d" not in symbols and "__aeabi_f2d" not in symbols
    m7 = compile_arm(tmp_path, "cortex-m7")
    code = subprocess.run(["arm-none-eabi-objdump", "-d", str(m7)], check=True, capture_output=True, text=True).stdout
    assert ".f64" not in code
    size = sections(m7)
    rodata = sum(v for k, v in size.items() if k.startswith(".rodata"))
    program = read_bundle(bundle)[3]
    want = const_bytes(bundle)["total"]
    assert want <= rodata <= want + 3 * len(program.tables()), (rodata, want)  # each array padded to 4 at most
    assert size.get(".data", 0) == 0 and size.get(".bss", 0) == 0  # no RAM but the stack
    task = read_bundle(bundle)[0].task
    # the constant measured here, with the C's own exp and tanh (in the same object: no libm call)
    assert abs(size[".text"] - program_code_bytes(program, task)) <= 100, size[".text"]
    assert "expf" not in symbols.replace("edgeml_expf", "") and "tanhf" not in symbols.replace("edgeml_tanhf", "")


# --- the size the search judges a trial by -------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_the_size_formula_of_the_fitted_model_is_the_generated_c_s(case, bundles):
    """From the fitted model alone (what the search has), the const bytes of the C the bundle gets, to the byte;
    and the search recorded the chosen model at that size plus its code constant (cortex-m7: firmware = "c")."""
    result = bundles(case, True)
    manifest, _, _, program = read_bundle(result.bundle_dir)
    pre, *steps = result.pipeline.steps
    flash, ram = steps_c_bytes(steps, program.inputs.width, manifest.task, len(manifest.classes or ()))
    c = const_bytes(result.bundle_dir)["total"]
    code = program_code_bytes(program, manifest.task)
    assert flash + preprocessing_c_bytes(pre[1], manifest.schema, manifest.classes or ()) == c + code
    assert ram == c_ram_bytes(program) or CASES[case][2] == "mlp"  # an MLP's bias and activation buffers: about
    assert manifest.search.best_model_bytes == c + code


# --- what comes in from the bundle ---------------------------------------------------------------------

#: Names a bundle someone else wrote may hold: each would inject code if written into a comment as it is.
HOSTILE = ["x */ int edgeml_injected_name = 1; /*", "v1\n#error injected\n", "temp ??/\nint edgeml_trigraph;",
           "température [°C] ü", "*/ */ /* //", "\\", "?" * 5]


@needs_cc
def test_nothing_from_the_bundle_is_injected_into_the_c(bundles, tmp_path):
    """Feature names, category codes, classes, the bundle's name and version with */, newlines, ??/ and
    non-ASCII: the C compiles cleanly, defines no symbol of its own, and gives each name back byte for byte."""
    import dataclasses

    from edgeml.export.c.sources import c_sources, title

    _, _, _, program = read_bundle(bundles("categories-and-blanks"))
    inputs = program.inputs
    features = tuple(f"{HOSTILE[i % len(HOSTILE)]}{i}" for i in range(len(inputs.features)))
    first = min(inputs.codes)
    codes = {i: tuple(f"{HOSTILE[j % len(HOSTILE)]}{j}" for j in range(len(c))) for i, c in inputs.codes.items()}
    hostile = dataclasses.replace(program, inputs=dataclasses.replace(inputs, features=features, codes=codes))
    header, source = c_sources(hostile, title(HOSTILE[0], HOSTILE[1], HOSTILE[2], "0" * 64), HOSTILE[:2], 0.5)
    (tmp_path / HEADER).write_text(header)
    (tmp_path / SOURCE).write_text(source)
    assert header.isascii() and source.isascii()
    assert not any(line.lstrip().startswith(("#error injected", "int edgeml_"))
                   and not line.startswith("int edgeml_label(const float *p)")
                   for line in (header + source).splitlines())
    main = ('#include <stdio.h>\n#include "edgeml_model.h"\nint main(void) {\n'
            '  for (int i = 0; i < EDGEML_N_FEATURES; i++) printf("%s\\x1e", edgeml_feature_names[i]);\n'
            f'  printf("%s\\x1e%s\\x1e%s", edgeml_classes[0], edgeml_classes[1], edgeml_codes_{first}[0]);\n'
            "  return 0;\n}\n")
    exe = compile_host(tmp_path, main)
    symbols = subprocess.run(["nm", str(exe)], capture_output=True, text=True).stdout
    assert "injected" not in symbols and "trigraph" not in symbols
    names = subprocess.run([str(exe)], capture_output=True, check=True).stdout.decode("utf-8").split("\x1e")
    assert names == [*features, HOSTILE[0], HOSTILE[1], codes[first][0]]


def test_an_operator_the_c_form_does_not_write_is_named(bundles):
    import onnx
    from onnx import helper

    from edgeml.export.c.reader import read_onnx

    manifest, _, data, _ = read_bundle(bundles("logistic"))
    model = onnx.load_from_string(data)
    model.graph.node.append(helper.make_node("Abs", ["probabilities"], ["absolute"], name="abs"))
    with pytest.raises(ExportError, match=r"a Abs node \(abs\), which the C form does not write .* --form tflm"):
        read_onnx(model, manifest.schema, "absolute")


def test_the_cli_writes_the_profile_s_form_unless_told(bundles, tmp_path):
    from click.testing import CliRunner

    from edgeml.cli import main

    bundle = bundles("random-forest")

    def run(out, *options):
        return CliRunner().invoke(main, ["firmware", str(bundle), "-o", str(tmp_path / out), *options])

    assert run("c").exit_code == 0
    assert "#define EDGEML_FORM_C 1" in (tmp_path / "c" / HEADER).read_text()  # cortex-m7: firmware = "c"
    assert run("tflm", "--form", "tflm").exit_code == 0
    assert "edgeml_model_len" in (tmp_path / "tflm" / HEADER).read_text()
    assert run("art", "--artifact", "model.tflite").exit_code == 0  # a TFLite file named: the TFLM form
    assert "edgeml_model_len" in (tmp_path / "art" / HEADER).read_text()
    done = run("bad", "--form", "c", "--artifact", "model.tflite")
    assert done.exit_code == 2 and "--artifact picks a TFLite file for --form tflm" in done.output
    assert not (tmp_path / "bad").exists()


def test_const_bytes_counts_every_table_and_string(bundles):
    """The size formula against the generated text: every table's declared length times its type's size."""
    import re

    bundle = bundles("xgboost")
    _, source, program = bundle_sources(bundle)
    sizes = {"float": 4, "uint8_t": 1, "int8_t": 1, "uint16_t": 2, "int16_t": 2, "uint32_t": 4, "int32_t": 4}
    declared = sum(sizes[t] * int(n) for t, n in re.findall(r"^static const (\w+) \w+\[(\d+)\]", source, re.M))
    bodies = re.findall(r"^const char \*const \w+\[\d+\] = \{\n(.*?)\n\};", source, re.M | re.S)
    texts = [json.loads(s) for body in bodies for s in re.findall(r'"(?:[^"\\]|\\.)*"', body)]
    literals = 4 * len(texts) + sum(len(t) + 1 for t in set(texts))
    counted = const_bytes(bundle)
    assert counted["tables"] == declared and counted["strings"] == literals
    assert program.family == "trees"


# --- a plain-C target needs no TFLite file ----------------------------------------------------------------------

def _c_profile(tmp_path, name: str, budgets: str) -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\nextends = "cortex-m4"\n\n[budgets]\n{budgets}\n')
    return str(path)


@needs_cc
def test_a_c_target_ships_a_forest_no_tflite_file_fits_and_its_c_is_exact(datasets, tmp_path):
    """An arena budget no forest's TFLite file meets: the search judges trials by the C form (its RAM a few floats),
    the TFLite file is refused at the ship stage, and the bundle still builds: its C is what runs, exact."""
    from edgeml_runtime.bundle import read_manifest

    target = _c_profile(tmp_path, "m4-no-arena", "max_arena_bytes = 400")
    result = build_bundle(tmp_path / "b", data=str(datasets / CCPP["data"]), label="PE", target=target,
                          estimators=("rf",), select_inputs=False, max_iter=3)
    manifest = read_manifest(result.bundle_dir)
    assert [a.path for a in manifest.artifacts] == ["model.onnx"]
    (refused,) = [n for n in manifest.not_shipped if n.format == "tflite" and n.precision == "fp32"]
    assert "max_arena_bytes 400" in refused.reason
    trials = [t for t in manifest.search.trial_log if t.loss is not None]
    assert trials and all(0 < t.arena_bytes < 100 and not t.broken for t in trials)  # 4 inputs and a value: floats
    program = read_bundle(result.bundle_dir)[3]  # the report says what runs: this C, its flash and stack
    flash = const_bytes(result.bundle_dir)["total"] + program_code_bytes(program, "regression")
    report = json.loads((result.bundle_dir / "report.json").read_text())
    assert report["firmware"] == {"form": "c", "flash": flash, "ram": c_ram_bytes(program)}
    assert f'data-flash="{flash}"' in (result.bundle_dir / "report.html").read_text()
    with pytest.raises(ExportError, match=r"no TFLite artifact .*not shipped: .*fp32: TensorFlow Lite Micro needs "
                                          r"a [\d,]+-byte arena .*write the plain C instead \(--form c\)"):
        write_firmware_form(result.bundle_dir, tmp_path / "tflm", "tflm")
    out = tmp_path / "c"
    write_c_firmware(result.bundle_dir, out)
    frame = pd.read_csv(datasets / CCPP["data"], nrows=2000)
    compared = compare(result.bundle_dir, compile_host(out), rows(frame, manifest.schema), out)
    assert compared.rows == 2000
    np.testing.assert_array_equal(compared.got, compared.want)


def test_only_a_c_target_counts_its_c_as_what_runs(demo_bundle):
    """The rule the build applies once every artifact is shipped or refused (the search refuses a C form over the
    flash budget before that, so the ship stage only meets one the refit grew): model.onnx alone is enough on a
    target whose firmware form is plain C and whose C can be written; elsewhere, or with the C's reason, the error
    says why each form does not run."""
    from dataclasses import replace

    from edgeml.targets.profiles import load_target
    from edgeml.verify.ship import Outcome, require_something_runs
    from edgeml_runtime.bundle import read_manifest
    from edgeml_runtime.manifest_artifacts import NotShipped

    onnx_model = read_manifest(demo_bundle).artifacts[0]
    refused = NotShipped(format="tflite", precision="fp32", applicable=False, reason="over max_arena_bytes 400")
    outcomes = [Outcome(artifact=onnx_model), Outcome(not_shipped=refused)]
    m4 = load_target("cortex-m4")
    require_something_runs(m4, outcomes, None)
    with pytest.raises(ExportError, match=r"nothing target cortex-m4 runs could be made \(tflite fp32: over "
                                          r"max_arena_bytes 400; plain C: about 9,000 bytes of flash, over"):
        require_something_runs(m4, outcomes, "about 9,000 bytes of flash, over max_model_bytes 8,000")
    with pytest.raises(ExportError, match=r"nothing target cortex-m4 runs could be made \(tflite fp32: over "
                                          r"max_arena_bytes 400\)"):
        require_something_runs(replace(m4, firmware="tflm"), outcomes, None)
