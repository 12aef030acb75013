"""`edgeml firmware`: C sources for a microcontroller, compiled here with the host's C compiler and checked.

The generated ``edgeml_encode`` is compiled and run on real rows (with
missing numbers and unknown categories mixed in) and must give the same
int8 input tensor as the runtime's :class:`edgeml_runtime.litert.Encoding`;
the model array must hold the artifact's bytes.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert",
                    reason="the TFLite tests need ai-edge-litert (pip install 'edgeml-runtime[tflite]')")

from conftest import AI4I_DROP, BIN, build_bundle

from edgeml.errors import ExportError
from edgeml.export.tflite.firmware import HEADER, SOURCE, write_firmware
from edgeml_runtime.litert import TfliteEngine, feeds_to_matrix

CC = shutil.which("cc") or shutil.which("gcc")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler (cc) on this machine")

MAIN = r"""
#include <stdio.h>
#include "edgeml_model.h"
int main(int argc, char **argv) {
    (void)argc;
    FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb"), *model = fopen(argv[3], "wb");
    float x[EDGEML_N_FEATURES];
    int8_t q[EDGEML_N_INPUTS];
    while (fread(x, sizeof(float), EDGEML_N_FEATURES, in) == EDGEML_N_FEATURES) {
        edgeml_encode(x, q);
        fwrite(q, 1, EDGEML_N_INPUTS, out);
    }
    fwrite(edgeml_model, 1, edgeml_model_len, model);
    fclose(out);
    fclose(model);
    printf("%d %d %.6f\n", EDGEML_N_OPS, EDGEML_N_OUTPUTS, edgeml_output(127, 1.0f / 256, -128));
    return 0;
}
"""


@pytest.fixture(scope="module")
def m7_bundle(datasets, tmp_path_factory):
    out = tmp_path_factory.mktemp("firmware") / "m7"
    # Every ai4i input. Seed 1: TFLite Micro and LiteRT differ by an int8 step or more on many MLPs (issue #21),
    # and the build then ships float32 only, with no int8 encoder to test; this one's int8 agrees in both.
    build_bundle(out, data=str(datasets / "ai4i2020.csv"), label="Machine failure", drop=AI4I_DROP[2:],
                 target="cortex-m7", estimators=("mlp",), max_iter=3, select_inputs=False, seed=1)
    manifest = json.loads((out / "manifest.json").read_text())
    assert any(a["precision"] == "int8" for a in manifest["artifacts"]), manifest["not_shipped"]
    return out


def _compile(folder, main: str):
    """The generated C (strict C99, all warnings as errors, FMA allowed where the CPU has it) and ``main``."""
    (folder / "main.c").write_text(main)
    exe = folder / "encode"
    subprocess.run([CC, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-march=native",
                    str(folder / "main.c"), str(folder / SOURCE), "-lm", "-o", str(exe)], check=True,
                   capture_output=True, text=True)
    return exe


@needs_cc
def test_the_c_encoder_gives_the_runtime_s_int8_input(m7_bundle, datasets, tmp_path):
    import pandas as pd

    from edgeml.data.preprocess import encode_frame
    from edgeml_runtime.schema import InputSchema

    write_firmware(m7_bundle, tmp_path)
    exe = _compile(tmp_path, MAIN)
    manifest = json.loads((m7_bundle / "manifest.json").read_text())
    art = next(a for a in manifest["artifacts"] if a["format"] == "tflite" and a["precision"] == "int8")
    engine = TfliteEngine(m7_bundle / art["path"])

    rows = pd.read_csv(datasets / "ai4i2020.csv", nrows=2000)
    feeds = encode_frame(rows, InputSchema.from_list(manifest["inputs"]), "the test rows")
    X = feeds_to_matrix(feeds, engine.tables, engine.input_names)
    X[::7, 1] = np.nan                      # missing numbers
    X[::11, 0] = -1.0                       # an unknown category
    X[::13, 0] = np.nan                     # a missing category code
    X[3::17, 2] = np.inf                    # sensor glitches: beyond any int8 range, and infinite
    X[5::19, 3] = -1e20
    (tmp_path / "rows.f32").write_bytes(np.ascontiguousarray(X, np.float32).tobytes())
    done = subprocess.run([str(exe), str(tmp_path / "rows.f32"), str(tmp_path / "q.i8"), str(tmp_path / "model.bin")],
                          check=True, capture_output=True, text=True)

    got = np.frombuffer((tmp_path / "q.i8").read_bytes(), np.int8).reshape(len(X), -1)
    np.testing.assert_array_equal(got, engine.model_input(X))
    assert (tmp_path / "model.bin").read_bytes() == (m7_bundle / art["path"]).read_bytes()
    n_ops, n_outputs, top = done.stdout.split()
    assert int(n_ops) == len(art["transform"]["operators"]) and int(n_outputs) == 2
    assert float(top) == pytest.approx(255 / 256)

    header = (tmp_path / HEADER).read_text()
    assert "(resolver).AddFullyConnected();" in header and "(resolver).AddSoftmax();" in header
    micro = art["transform"]["tflite_micro"]
    if micro["ran"]:
        assert f"#define EDGEML_ARENA_BYTES {micro['arena_bytes']}  " in header
        assert micro["arena_bytes"] == micro["arena_min"] + micro["arena_margin"]


@needs_cc
def test_a_float_forest_compiles_with_its_operators(datasets, tmp_path):
    out = tmp_path / "forest"
    build_bundle(out, data=str(datasets / "ai4i2020.csv"), label="Machine failure", drop=AI4I_DROP[2:],
                 target="cortex-m7", estimators=("rf",), max_iter=3, select_inputs=False)  # its 6 features
    write_firmware(out, tmp_path / "c")
    header = (tmp_path / "c" / HEADER).read_text()
    assert "#define EDGEML_INT8 0" in header and "edgeml_encode" not in header
    assert "(resolver).AddGather();" in header
    main = ('#include "edgeml_model.h"\nint main(void) { return (int)(edgeml_model_len == 0) '
            '+ (EDGEML_N_FEATURES != 6) + (edgeml_feature_names[0][0] == 0); }\n')
    exe = _compile(tmp_path / "c", main)
    assert subprocess.run([str(exe)]).returncode == 0


def test_firmware_errors_name_the_fix(demo_bundle, tmp_path):
    with pytest.raises(ExportError, match="'model.onnx' is not a TFLite artifact of this bundle; it has model.tflite"):
        write_firmware(demo_bundle, tmp_path, artifact="model.onnx")
    done = subprocess.run([str(BIN / "edgeml"), "firmware", str(demo_bundle), "-o", str(tmp_path),
                           "--artifact", "model.int8.tflite"], capture_output=True, text=True)
    assert done.returncode == 2 and "error: --artifact 'model.int8.tflite' is not a TFLite artifact" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / HEADER).exists()


@needs_cc
def test_the_header_serves_cplusplus_and_refuses_fast_math(m7_bundle, tmp_path):
    """TFLite Micro firmware is C++: the header's functions must link from it; -ffast-math would break the encoder."""
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler on this machine")
    write_firmware(m7_bundle, tmp_path)
    obj = tmp_path / "edgeml_model.o"
    subprocess.run([CC, "-std=c99", "-O2", "-c", str(tmp_path / SOURCE), "-o", str(obj)], check=True)
    (tmp_path / "main.cc").write_text(
        '#include "edgeml_model.h"\n'
        "int main() { float row[EDGEML_N_FEATURES] = {0}; int8_t q[EDGEML_N_INPUTS];\n"
        "  edgeml_encode(row, q); return edgeml_model_len > 0 ? 0 : 1; }\n")
    subprocess.run([cxx, "-std=c++11", "-Wall", "-Werror", str(tmp_path / "main.cc"), str(obj), "-lm",
                    "-o", str(tmp_path / "cxx")], check=True, capture_output=True, text=True)
    assert subprocess.run([str(tmp_path / "cxx")]).returncode == 0
    fast = subprocess.run([CC, "-std=c99", "-Ofast", "-c", str(tmp_path / SOURCE), "-o", str(tmp_path / "f.o")],
                          capture_output=True, text=True)
    assert fast.returncode != 0 and "without -ffast-math" in fast.stderr


def test_c_strings_are_safe_for_any_name():
    from edgeml.export.tflite.firmware import c_string

    assert c_string("Temp ??/ [°C]\n\x01") == '"Temp \\?\\?/ [\\302\\260C]\\012\\001"'


#: Names a bundle someone else wrote may hold: each would inject code if written into a comment as it is.
HOSTILE = ["x */ int edgeml_injected_name = 1; /*", "v1\n#error injected\n", "temp ??/\nint edgeml_trigraph;",
           "température [°C] ü", "*/ */ /* //", "\\", "?" * 5]


def _compilers() -> list[list[str]]:
    found = [[CC, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-Wtrigraphs", "-Wcomment"]]
    arm = shutil.which("arm-none-eabi-gcc")
    if arm:
        found.append([arm, "-std=c99", "-O2", "-mcpu=cortex-m7", "-mthumb", "-Wall", "-Wextra", "-Werror",
                      "-Wtrigraphs", "-Wcomment"])
    return found


@needs_cc
def test_nothing_from_the_bundle_is_injected_into_the_sources(m7_bundle, tmp_path):
    """Bundle name, version, column names, categories and classes with */, newlines, ??/ and non-ASCII: the C
    compiles cleanly (every warning an error), defines no symbol of its own, and gives each name back byte for byte."""
    import dataclasses

    from edgeml.export.tflite.firmware import firmware_sources, pick_artifact
    from edgeml_runtime.bundle import read_manifest
    from edgeml_runtime.litert import read_metadata

    manifest = read_manifest(m7_bundle)
    art = pick_artifact(manifest, None)
    data = (m7_bundle / art.path).read_bytes()
    meta = json.loads(read_metadata(data))
    renamed = {c["feature"]: f"{HOSTILE[i % len(HOSTILE)]}{i}" for i, c in enumerate(meta["input"]["columns"])}
    encoding = meta["input"]["encoding"]
    for entry in [*meta["input"]["columns"], *encoding["numeric"], *encoding["onehot"]]:
        entry["feature"] = renamed[entry["feature"]]
    coded = next(c for c in meta["input"]["columns"] if "codes" in c)
    coded["codes"] = HOSTILE[:len(coded["codes"])]
    meta["outputs"]["probabilities"]["classes"] = HOSTILE[:2]
    header, source = firmware_sources(HOSTILE[0], HOSTILE[1], art, data, meta)
    (tmp_path / HEADER).write_text(header)
    (tmp_path / SOURCE).write_text(source)
    assert header.isascii() and source.isascii()
    assert not any(line.lstrip().startswith(("#error injected", "int edgeml_"))
                   and not line.startswith("int edgeml_label(const float *p)")  # the generated label rule
                   for line in (header + source).splitlines())

    for compiler in _compilers():
        obj = tmp_path / "edgeml_model.o"
        subprocess.run([*compiler, "-c", str(tmp_path / SOURCE), "-o", str(obj)], check=True, capture_output=True,
                       text=True)
        symbols = subprocess.run(["nm", str(obj)], capture_output=True, text=True).stdout
        assert "injected" not in symbols and "trigraph" not in symbols
    main = ('#include <stdio.h>\n#include "edgeml_model.h"\nint main(void) {\n'
            '  for (int i = 0; i < EDGEML_N_FEATURES; i++) printf("%s\\x1e", edgeml_feature_names[i]);\n'
            '  printf("%s\\x1e%s\\x1e%s", edgeml_classes[0], edgeml_classes[1], edgeml_codes_0[0]);\n'
            "  return 0;\n}\n")
    exe = _compile(tmp_path, main)
    names = subprocess.run([str(exe)], capture_output=True, check=True).stdout.decode("utf-8").split("\x1e")
    assert names == [*renamed.values(), HOSTILE[0], HOSTILE[1], coded["codes"][0]]

    bad = dataclasses.replace(art.transform, operators=("FULLY_CONNECTED(); system(\"rm -rf /\")",))
    with pytest.raises(ExportError, match=r"is not a TFLite builtin operator name"):
        firmware_sources("demo", "1", dataclasses.replace(art, transform=bad), data, meta)


def test_comments_keep_only_safe_text():
    from edgeml.export.tflite.firmware import c_comment

    for text in HOSTILE:
        safe = c_comment(text)
        assert safe.isascii() and safe.isprintable() and "\\" not in safe
        assert "*/" not in safe and "/*" not in safe and "??" not in safe
    assert c_comment("Air temperature [K]") == "Air temperature [K]"
