"""Host-side harness for the plain-C firmware form: compile the generated C, run it on rows, score the same rows
through edgeml_runtime's ONNX model, and say how far apart they are.

The C is compiled as strict C99 with every warning an error, ``-Wdouble-promotion`` (a float32-only FPU has no
double unit) and no floating-point contraction, then fed the rows as the float32 matrix the header describes
(``edgeml_feature_names`` order, NaN for a missing number, a category as its code, -1 unknown).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from edgeml.firmware.host import HOST_FLAGS, MAIN, compile_host

CC = shutil.which("cc") or shutil.which("gcc")
ARM = shutil.which("arm-none-eabi-gcc")
#: A Cortex-M7 with its double-precision FPU, and a Cortex-M4, whose FPU is single precision only.
ARM_TARGETS = {
    "cortex-m7": ["-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-d16", "-mfloat-abi=hard"],
    "cortex-m4": ["-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"],
}

def compile_arm(folder: Path, cpu: str) -> Path:
    """``folder``'s edgeml_model.c as an object for ``cpu`` (:data:`ARM_TARGETS`), ``-Os``, warnings as errors."""
    obj = folder / f"edgeml_model.{cpu}.o"
    subprocess.run([ARM, *ARM_TARGETS[cpu], "-std=c99", "-Os", "-Wall", "-Wextra", "-Werror", "-Wdouble-promotion",
                    "-c", str(folder / "edgeml_model.c"), "-o", str(obj)], check=True, capture_output=True, text=True)
    return obj


def sections(obj: Path) -> dict[str, int]:
    """Section name -> bytes of an ELF object (``arm-none-eabi-size -A``)."""
    done = subprocess.run([shutil.which("arm-none-eabi-size"), "-A", str(obj)], check=True, capture_output=True,
                          text=True)
    out = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def rows(frame: pd.DataFrame, schema, seed: int = 0, missing: float = 0.05) -> dict[str, list]:
    """The columns of ``frame`` the schema takes, with a share ``missing`` of every column's cells emptied and,
    in categorical columns, a few values the model never saw."""
    rng = np.random.default_rng(seed)
    columns = {}
    for col in schema.columns:
        values = frame[col.name].tolist()
        for i in rng.choice(len(values), int(len(values) * missing), replace=False):
            values[i] = None
        if col.kind == "categorical":
            for i in rng.choice(len(values), len(values) // 50, replace=False):
                values[i] = "never seen"
        columns[col.name] = values
    return columns


@dataclass(frozen=True)
class Comparison:
    """The C's outputs against the runtime's on the same rows."""

    rows: int
    flips: int | None          # labels that differ (classification)
    max_diff: float            # the largest |C - runtime| over every output
    max_ulps: float            # the largest |C - runtime| in float32 steps of max(|runtime|, 1)
    exact: float               # the share of outputs equal to the bit
    got: np.ndarray
    want: np.ndarray


def compare(bundle: Path, exe: Path, columns: dict[str, list], work: Path) -> Comparison:
    """Run ``exe`` (built from the C of ``bundle``) and the runtime's ONNX model on ``columns``."""
    from edgeml_runtime import Model
    from edgeml_runtime.features import FeatureEncoder
    from edgeml_runtime.litert import feeds_to_matrix

    model = Model.load(bundle, artifact="model.onnx")
    schema = model.manifest.schema
    n = len(next(iter(columns.values())))
    feeds, errors = FeatureEncoder(schema).encode(columns, n)
    assert not errors, list(errors.values())[:3]
    tables = {c.features[0]: list(c.categories) for c in schema.columns if c.kind == "categorical"}
    X = feeds_to_matrix(feeds, tables, schema.features)
    (work / "x.f32").write_bytes(np.ascontiguousarray(X, np.float32).tobytes())
    subprocess.run([str(exe), str(work / "x.f32"), str(work / "y.f32")], check=True)
    out = np.frombuffer((work / "y.f32").read_bytes(), np.float32).reshape(n, -1)
    predicted = model.predict(columns)
    if model.classes:
        k = len(model.classes)
        want = np.asarray(predicted.probabilities, np.float32)
        got, labels = out[:, :k], out[:, k].astype(int)
        index = {c: i for i, c in enumerate(model.classes)}
        flips = int((labels != np.array([index[c] for c in predicted.labels])).sum())
    else:
        want, got, flips = np.asarray(predicted.labels, np.float32).reshape(-1, 1), out, None
    diff = np.abs(got.astype(np.float64) - want)
    steps = np.spacing(np.maximum(np.abs(want), 1).astype(np.float32)).astype(np.float64)
    return Comparison(n, flips, float(diff.max()), float((diff / steps).max()), float((got == want).mean()), got,
                      want)


__all__ = ["ARM", "ARM_TARGETS", "CC", "HOST_FLAGS", "MAIN", "Comparison", "compare", "compile_arm", "compile_host",
           "rows", "sections"]
