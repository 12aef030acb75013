"""The on-target harness: the example firmware cross-compiled with arm-none-eabi-gcc and run in QEMU's MPS2 boards.

The plain-C model here is the test's own: a fixed linear model (and a clamped-linear classifier) over
ccpp's four inputs, whose float32 outputs numpy computes exactly (each operation rounded to float32,
no fused multiply-add), so the device's outputs and checksum must equal numpy's bit for bit. This
tests the harness (project, startup, linker script, map reading, stack painting, QEMU), not a model.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from edgeml.errors import ExportError, TargetError
from edgeml.export.tflite.firmware import c_float, c_string
from edgeml.firmware import (
    FirmwareError,
    build,
    checksum,
    float_rows,
    run,
    write_bundle_project,
    write_bundle_rows,
    write_project,
    write_rows,
)
from edgeml.targets.profiles import load_target
from edgeml_runtime.bundle import read_manifest
from edgeml_runtime.samples import read_samples
from edgeml_runtime.schema import InputColumn, InputSchema

needs_arm = pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                               reason="needs arm-none-eabi-gcc and qemu-system-arm (make system-deps)")
FEATURES = ("AT", "EV", "AP", "RH")
W = np.array([-1.98, -0.23, 0.062, -0.158], np.float32)
B = np.float32(454.6)
F32 = np.float32


def model_sources(folder, *, classifier=False, scratch=0, names=FEATURES):
    """A linear model implementing the plain-C model's API; ``scratch`` floats of stack it touches per row."""
    touch = (f"    volatile float scratch[{scratch}];\n"
             f"    for (int i = 0; i < {scratch}; i++) scratch[i] = acc;\n"
             f"    acc = scratch[{scratch - 1}];\n") if scratch else ""
    head = [f"#define EDGEML_N_FEATURES {len(names)}", f"#define EDGEML_N_OUTPUTS {2 if classifier else 1}",
            f"#define EDGEML_CLASSIFIER {int(classifier)}",
            "extern const char *const edgeml_feature_names[EDGEML_N_FEATURES];",
            "void edgeml_predict(const float *x, float *out);", "int edgeml_label(const float *p);", ""]
    if classifier:  # p1 = clamp((z - 450) * 0.05 + 0.5, 0, 1)
        result = ("    float p1 = (acc - 450.0f) * 0.05f + 0.5f;\n"
                  "    p1 = p1 < 0.0f ? 0.0f : (p1 > 1.0f ? 1.0f : p1);\n"
                  "    out[0] = 1.0f - p1;\n    out[1] = p1;\n")
    else:
        result = "    out[0] = acc;\n"
    source = (f'#include "edgeml_model.h"\nconst char *const edgeml_feature_names[EDGEML_N_FEATURES] = '
              f'{{{", ".join(c_string(n) for n in names)}}};\n'
              f'static const float w[EDGEML_N_FEATURES] = {{{", ".join(c_float(v) for v in W)}}};\n'
              "void edgeml_predict(const float *x, float *out) {\n"
              f"    float acc = {c_float(B)};\n"
              "    for (int j = 0; j < EDGEML_N_FEATURES; j++) acc += w[j] * x[j];\n"
              f"{touch}{result}}}\n"
              "int edgeml_label(const float *p) { return p[1] > p[0] ? 1 : 0; }\n")
    (folder / "edgeml_model.h").write_text("\n".join(head))
    (folder / "edgeml_model.c").write_text(source)


def numpy_model(X, classifier=False):
    """What the C computes, in numpy float32: the outputs (rows, k) and the labels (or None)."""
    acc = np.full(len(X), B, F32)
    for j in range(X.shape[1]):
        acc = acc + W[j] * X[:, j]
    if not classifier:
        return acc.reshape(-1, 1), None
    p1 = np.clip((acc - F32(450)) * F32(0.05) + F32(0.5), F32(0), F32(1))
    p = np.stack([F32(1) - p1, p1], axis=1)
    return p, (p[:, 1] > p[:, 0]).astype(np.int32)


@pytest.fixture(scope="module")
def ccpp(datasets):
    import pandas as pd

    frame = pd.read_csv(datasets / "ccpp.csv", nrows=1200)
    return frame[list(FEATURES)].to_numpy(np.float32)


def project(folder, target, X, *, classifier=False, scratch=0, names=FEATURES):
    write_project(folder, target)
    model_sources(folder, classifier=classifier, scratch=scratch, names=names)
    outputs, labels = numpy_model(X, classifier)
    return write_rows(folder, X, outputs, labels, FEATURES)


@pytest.fixture(scope="module")
def m7(ccpp, tmp_path_factory):
    folder = tmp_path_factory.mktemp("m7")
    expected = project(folder, "cortex-m7", ccpp)
    return folder, expected, build(folder)


@needs_arm
def test_the_m7_scores_1200_rows_bit_for_bit_as_numpy(m7, ccpp):
    folder, expected, done = m7
    got = run(done.elf, load_target("cortex-m7").mcu, timeout=30)
    want, _ = numpy_model(ccpp)
    assert got.exit_code == 0 and got.labels is None and got.outputs.shape == (1200, 1)
    np.testing.assert_array_equal(got.outputs.view(np.uint32), want.view(np.uint32))
    assert got.checksum == expected == checksum(want)
    assert got.seconds < 10 and done.seconds < 60
    assert done.flash_bytes > ccpp.nbytes  # the rows are in flash, with the code


@needs_arm
def test_make_check_passes_and_fails_on_a_wrong_checksum(m7):
    folder, expected, _ = m7
    ok = subprocess.run(["make", "-C", str(folder), "-s", "check"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"checksum {expected:08x} matches the host's" in ok.stdout
    wrong = f"{expected ^ 1:08x}"
    bad = subprocess.run(["make", "-C", str(folder), "-s", "check", f"EXPECTED_CHECKSUM={wrong}"],
                         capture_output=True, text=True)
    assert bad.returncode != 0
    assert f"the firmware printed '{expected:08x}', the host expects {wrong}" in bad.stdout


@needs_arm
def test_flash_from_the_map_is_what_arm_none_eabi_size_reports(m7):
    _, _, done = m7
    text, data, bss = map(int, subprocess.run(["arm-none-eabi-size", str(done.elf)], capture_output=True,
                                               text=True, check=True).stdout.splitlines()[1].split()[:3])
    assert done.flash_bytes == text + data
    assert done.ram_bytes + done.stack_reserved == data + bss
    assert done.stack_reserved == load_target("cortex-m7").mcu.stack_bytes
    assert {".text", ".rodata", ".stack"} <= set(done.sections)


@needs_arm
def test_the_m4_classifier_prints_labels_in_the_checksum(ccpp, tmp_path):
    X = ccpp[:300]
    expected = project(tmp_path, "cortex-m4", X, classifier=True)
    probabilities, labels = numpy_model(X, classifier=True)
    assert 0 < labels.sum() < len(labels)
    got = run(build(tmp_path).elf, "mps2-an386")
    np.testing.assert_array_equal(got.outputs.view(np.uint32), probabilities.view(np.uint32))
    np.testing.assert_array_equal(got.labels, labels)
    assert got.checksum == expected != checksum(probabilities)  # the labels count
    assert "-mfpu=fpv4-sp-d16" in (tmp_path / "Makefile").read_text()


@needs_arm
def test_the_painted_stack_shows_a_bigger_local_array(ccpp, tmp_path):
    used = {}
    for floats in (0, 1024):
        folder = tmp_path / str(floats)
        project(folder, "cortex-m7", ccpp[:50], scratch=floats)
        done = build(folder)
        used[floats] = run(done.elf, "mps2-an500").stack_bytes
        assert 0 < used[floats] < done.stack_reserved
    assert used[0] < 256  # main and a linear model: a few words
    assert used[1024] > 1024 * 4  # the array, on top of what the frames around it take


@needs_arm
def test_a_stack_overflow_fails_the_run(ccpp, tmp_path):
    project(tmp_path, "cortex-m7", ccpp[:5], scratch=2100)  # 8,400 bytes of array on an 8,192-byte stack
    got = run(build(tmp_path).elf, "mps2-an500", check=False)
    assert got.exit_code in (3, 5), got.stdout  # seen when the scoring ends (5), or a fault on the way (3)
    with pytest.raises(FirmwareError, match=r"(?s)exited with status [35].*(stack overflow|fault)"):
        run(build(tmp_path).elf, "mps2-an500")


@needs_arm
def test_rows_for_another_model_stop_the_firmware(ccpp, tmp_path):
    project(tmp_path, "cortex-m7", ccpp[:10], names=("AT", "EV", "RH", "AP"))
    done = build(tmp_path)
    with pytest.raises(FirmwareError, match=r"(?s)exited with status 4.*the rows' feature AP is the model's RH"):
        run(done.elf, "mps2-an500")
    assert run(done.elf, "mps2-an500", check=False).exit_code == 4


@needs_arm
def test_a_model_too_big_for_the_part_does_not_link(ccpp, tmp_path):
    small = tmp_path / "m7-small.toml"
    small.write_text('name = "m7-small"\nextends = "cortex-m7"\n[mcu]\nflash_bytes = 8192\n')
    project(tmp_path, load_target(small), ccpp)
    with pytest.raises(FirmwareError, match=r"does not fit the part: FLASH is \d+ bytes short"):
        build(tmp_path)


def test_missing_tools_name_their_debian_package(tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(FirmwareError, match=r"qemu-system-arm is not on the PATH.*apt-get install qemu-system-arm"):
        run(tmp_path / "edgeml.elf", "mps2-an500")
    if shutil.which("make", path="/usr/bin:/bin"):
        (empty / "make").symlink_to(shutil.which("make", path="/usr/bin:/bin"))
        with pytest.raises(FirmwareError, match=r"arm-none-eabi-gcc is not.*apt-get install gcc-arm-none-eabi"):
            build(tmp_path)


def test_a_profile_without_mcu_gets_no_firmware(tmp_path):
    with pytest.raises(TargetError, match="target 'rpi4' has no \\[mcu\\] table"):
        write_project(tmp_path, "rpi4")


@pytest.mark.parametrize(("table", "message"), [
    ('board = "mps2-an505"', r"mcu.board = 'mps2-an505' is not allowed; it must be one of mps2-an385"),
    ("flash_kb = 1024", r"unknown key 'mcu.flash_kb'.*valid keys of \[mcu\]: board, cflags"),
    ('cflags = ["-mcpu=cortex-m4; rm -rf /"]', r"mcu.cflags = .* is not allowed"),
    ("ram_bytes = 8_388_608", r"mcu.ram_bytes = 8388608 is more than QEMU's mps2-an500 has \(4194304\)"),
    ("stack_bytes = 1000", r"mcu.stack_bytes = 1000 is not allowed; it must be .* a multiple of 8"),
])
def test_the_mcu_table_is_checked(tmp_path, table, message):
    path = tmp_path / "m7-bad.toml"
    path.write_text(f'name = "m7-bad"\nextends = "cortex-m7"\n[mcu]\n{table}\n')
    with pytest.raises(TargetError, match=message):
        load_target(path)


def test_an_mcu_table_must_be_complete(tmp_path):
    path = tmp_path / "lone.toml"
    path.write_text('name = "lone"\narch = "armv7em"\nplatform_tags = []\ncpu = "M4"\ncores = 1\nram_mb = 1\n'
                    '[mcu]\nboard = "mps2-an386"\n')
    with pytest.raises(TargetError, match=r"\[mcu\] lacks cflags, flash_bytes, ram_bytes"):
        load_target(path)


def test_the_profiles_hold_the_flags_of_their_cores():
    m7, m4 = load_target("cortex-m7").mcu, load_target("cortex-m4").mcu
    assert (m7.board.machine, m7.board.cpu, m4.board.machine, m4.board.cpu) == \
           ("mps2-an500", "cortex-m7", "mps2-an386", "cortex-m4")
    assert m7.cflags == ("-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-d16", "-mfloat-abi=hard")
    assert m4.cflags == ("-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard")
    assert "mcu" not in load_target("cortex-m7").to_dict()  # the manifest's target section is unchanged


def test_raw_rows_become_the_float_rows_the_runtime_feeds():
    schema = InputSchema((InputColumn("t", "numeric", ("t",)),
                          InputColumn("kind", "categorical", ("kind",), categories=("H", "L", "M"))))
    X = float_rows(schema, [{"t": 1.5, "kind": "M"}, {"t": None, "kind": "H"}, {"t": "2", "kind": "Z"}])
    assert X.dtype == np.float32
    np.testing.assert_array_equal(X, np.array([[1.5, 2], [np.nan, 0], [2, -1]], np.float32))


def test_a_bundle_s_project_scores_its_sample_rows_against_the_stored_outputs(demo_bundle, tmp_path):
    import json

    manifest = read_manifest(demo_bundle)
    with pytest.raises(TargetError, match="has no \\[mcu\\] table"):  # built for a Linux board
        write_bundle_project(demo_bundle, tmp_path)
    written = write_bundle_project(demo_bundle, tmp_path, target="cortex-m7")
    assert {p.name for p in written} >= {"main.c", "startup.c", "link.ld", "Makefile", "edgeml_rows.h", "expected.mk"}
    samples = read_samples(demo_bundle, manifest)
    stored = samples.outputs_for(next(a.path for a in manifest.artifacts if a.precision == "fp32"))
    labels = [list(manifest.classes).index(v) for v in stored.labels]
    want = checksum(stored.probabilities.astype(np.float32), np.array(labels))
    assert (tmp_path / "expected.mk").read_text().endswith(f"EXPECTED_CHECKSUM = {want:08x}\n")
    rows = (tmp_path / "edgeml_rows.h").read_text()
    assert f"#define EDGEML_N_ROWS {len(samples.rows)}" in rows
    assert f"#define EDGEML_ROW_FEATURES {len(manifest.schema.features)}" in rows
    assert json.dumps(manifest.schema.features[0]) in rows and "NAN" in rows  # the samples have missing values


def test_raw_records_are_scored_by_the_runtime_for_the_project(demo_bundle, demo_rows, tmp_path):
    import csv

    from edgeml_runtime import Model

    records = list(csv.DictReader(demo_rows.open()))
    fp32 = next(a.path for a in read_manifest(demo_bundle).artifacts if a.precision == "fp32")
    got = Model.load(demo_bundle, artifact=fp32).predict(records)
    classes = list(read_manifest(demo_bundle).classes)
    want = checksum(np.asarray(got.probabilities, np.float32), np.array([classes.index(v) for v in got.labels]))
    assert write_bundle_rows(demo_bundle, tmp_path, records) == want
    assert f"#define EDGEML_N_ROWS {len(records)}" in (tmp_path / "edgeml_rows.h").read_text()


def test_the_firmware_s_outputs_are_held_to_the_artifact_s_tolerance(demo_bundle):
    from edgeml.firmware import compare_outputs
    from edgeml.firmware.project import bundle_rows, float_artifact

    manifest = read_manifest(demo_bundle)
    _, outputs, labels = bundle_rows(manifest, demo_bundle)
    assert compare_outputs(demo_bundle, outputs, labels).passed
    tolerance = {v.artifact: v.tolerance for v in manifest.verification}[float_artifact(manifest)].allowed
    near = np.clip(outputs + np.float32(tolerance / 2), 0, 1)  # off by half the tolerance: still the same model
    assert compare_outputs(demo_bundle, near, labels).passed
    flipped = labels.copy()
    far = outputs.copy()
    far[0] = far[0][::-1]  # one row's probabilities swapped, its label with them: not the same model
    flipped[0] = 1 - flipped[0]
    found = compare_outputs(demo_bundle, far, flipped)
    assert not found.passed and found.differences[0].row == 0 and "the firmware" in str(found)
    with pytest.raises(ExportError, match="pass the firmware's labels"):
        compare_outputs(demo_bundle, outputs)


def test_the_checksum_is_fnv1a_over_little_endian_bytes():
    data = np.array([[1.0], [-2.5]], np.float32).astype("<f4").tobytes()
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) % 2**32
    assert checksum(np.array([[1.0], [-2.5]])) == h
    assert re.fullmatch(r"[0-9a-f]{8}", f"{h:08x}")
