"""The plain-C model of a real bundle, in the example firmware, on emulated Cortex-M7 and Cortex-M4 boards.

For a forest, a boosted regressor and an MLP built for ``cortex-m7``, the
generated C (``edgeml firmware --form c``) is linked into the example project
(:mod:`edgeml.firmware`) with arm-none-eabi-gcc and run in QEMU's
``mps2-an500`` (M7) and ``mps2-an386`` (M4, single-precision FPU) on 1,200
rows of the data set. The checksum the firmware prints over its outputs and
labels equals the one of the same C compiled for the host (every float32
operation rounds alike: no contraction, no double), its labels are the
runtime's on every row, its outputs the runtime's within the manifest's
tolerance, and its flash and stack are the ones the link map and the painted
stack give, within the part's memory.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from conftest import AI4I_DROP, build_bundle

from edgeml.firmware import emulate, project
from edgeml.firmware.host import compiler, host_outputs
from edgeml.firmware.parity import compare_outputs
from edgeml.targets.profiles import load_target
from edgeml_runtime.bundle import read_manifest

pytestmark = pytest.mark.skipif(
    compiler() is None or any(shutil.which(t) is None for t in ("arm-none-eabi-gcc", "qemu-system-arm")),
    reason="needs cc, arm-none-eabi-gcc and qemu-system-arm (make system-deps installs them)")

ROWS = 1200
CASES = {
    "forest": ({"data": "ai4i2020.csv", "label": "Machine failure", "drop": AI4I_DROP}, "rf"),
    "boosted-regressor": ({"data": "ccpp.csv", "label": "PE"}, "lgbm"),
    "mlp": ({"data": "ai4i2020.csv", "label": "Machine failure", "drop": AI4I_DROP}, "mlp"),
}
BOARDS = {"cortex-m7": "mps2-an500", "cortex-m4": "mps2-an386"}


@pytest.fixture(scope="module")
def bundles(datasets, tmp_path_factory):
    root, built = tmp_path_factory.mktemp("on_target"), {}

    def get(case: str):
        if case not in built:
            data, learner = CASES[case]
            settings = {k: v for k, v in data.items() if k != "data"}
            built[case] = build_bundle(root / case, data=str(datasets / data["data"]), target="cortex-m7",
                                       estimators=(learner,), select_inputs=False, **settings).bundle_dir
        return built[case]

    return get


def _records(datasets, case: str, schema) -> list[dict]:
    frame = pd.read_csv(datasets / CASES[case][0]["data"]).tail(ROWS)  # rows from the end of the file
    return [{c.name: row[c.name] for c in schema.columns} for _, row in frame.iterrows()]


@pytest.mark.parametrize("cpu", list(BOARDS))
@pytest.mark.parametrize("case", list(CASES))
def test_the_c_model_runs_on_the_board_as_on_the_host(case, cpu, bundles, datasets, tmp_path):
    from edgeml.export.c import write_c_firmware

    bundle = bundles(case)
    manifest = read_manifest(bundle)
    records = _records(datasets, case, manifest.schema)
    write_c_firmware(bundle, tmp_path)
    project.write_bundle_project(bundle, tmp_path, target=cpu, records=records)  # 1,200 rows, the runtime's outputs
    built = emulate.build(tmp_path)
    ran = emulate.run(built.elf, BOARDS[cpu], check=False)
    assert ran.exit_code == 0, ran.stdout[-500:]
    assert len(ran.outputs) == ROWS

    classifier = bool(manifest.classes)
    rows, _, want_labels = project.bundle_rows(manifest, bundle, records=records)
    host_out, host_labels = host_outputs(tmp_path, rows)
    assert ran.checksum == project.checksum(host_out, host_labels), "the board computes otherwise than the host"
    assert np.array_equal(ran.outputs.view(np.uint32), host_out.view(np.uint32))
    if classifier:
        assert np.array_equal(ran.labels, want_labels), "a label differs from the runtime's"
    verdict = compare_outputs(bundle, ran.outputs, ran.labels, records=records)
    assert verdict.passed, verdict.differences[:3]

    mcu = load_target(cpu).mcu
    assert 0 < built.flash_bytes < mcu.flash_bytes
    assert 0 < ran.stack_bytes < 2048, f"{ran.stack_bytes} bytes of stack for one row"
    figures = {"case": case, "cpu": cpu, "flash_bytes": built.flash_bytes, "ram_bytes": built.ram_bytes,
               "stack_bytes": ran.stack_bytes, "run_seconds": round(ran.seconds, 3)}
    print(json.dumps(figures))


def test_edgeml_firmware_writes_a_project_whose_make_check_passes_on_the_board(bundles, tmp_path):
    """``edgeml firmware --form c`` on a cortex-m7 bundle: the model and the example project, on the bundle's
    sample rows, with the checksum of the same C on the host; ``make check`` runs it in QEMU and agrees."""
    from click.testing import CliRunner

    from edgeml.cli import main

    done = CliRunner().invoke(main, ["firmware", str(bundles("mlp")), "-o", str(tmp_path)])
    assert done.exit_code == 0, done.output
    assert {"edgeml_model.c", "main.c", "startup.c", "link.ld", "Makefile", "expected.mk"} <= {
        p.name for p in tmp_path.iterdir()}
    checked = subprocess.run(["make", "-s", "check"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "matches the host's" in checked.stdout

