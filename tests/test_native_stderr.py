"""LiteRT's XNNPACK announcement never reaches the user's terminal; everything else written to fd 2 does."""

from __future__ import annotations

import subprocess
import sys

from conftest import BIN, run_env

CAUGHT = """
import os
from edgeml_runtime.native_stderr import without_lines
os.write(2, b"before\\n")
with without_lines("XNNPACK"):
    os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")
    os.write(2, b"a warning from another thread\\n")
os.write(2, b"after\\n")
"""


def test_only_the_named_lines_are_dropped_and_the_rest_come_back_in_order():
    run = subprocess.run([sys.executable, "-c", CAUGHT], capture_output=True, env=run_env(), timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stderr == b"before\na warning from another thread\nafter\n"


def test_scoring_with_the_tflite_artifact_prints_no_delegate_chatter(demo_bundle, demo_rows, tmp_path):
    run = subprocess.run([str(BIN / "edgeml-runtime"), "score", str(demo_bundle), "--input", str(demo_rows),
                          "--artifact", "model.tflite", "--output", str(tmp_path / "out.csv")],
                         capture_output=True, text=True, env=run_env(), timeout=120)
    assert run.returncode == 0, run.stderr
    assert "XNNPACK" not in run.stderr
    assert (tmp_path / "out.csv").read_text().count("\n") == 51  # header and the 50 rows
