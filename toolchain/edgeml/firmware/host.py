"""The plain-C model compiled for the workstation: what the board must compute, to the bit.

The generated C uses float32 operations only, with no contraction and its own
exponential (no libm), so the same source gives the same bits on the host's
``cc`` and on a Cortex-M (tests/test_firmware_on_target.py holds both).
:func:`host_outputs` runs it on float rows; ``edgeml firmware --form c`` uses
it for the example project's expected checksum, which ``make check`` then
holds the board to exactly.

Example::

    outputs, labels = host_outputs("firmware/", rows)   # rows: float32 (n, EDGEML_N_FEATURES)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from edgeml.firmware.emulate import FirmwareError

#: Strict C99, every warning an error, no fused multiply-adds (the C is exact without them).
HOST_FLAGS = ("-std=c99", "-O2", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror", "-Wdouble-promotion",
              "-Wtrigraphs", "-Wcomment")
#: Reads float32 rows from argv[1], writes each row's outputs (and its label, as a float) to argv[2].
MAIN = r"""
#include <stdio.h>
#include "edgeml_model.h"
int main(int argc, char **argv) {
    (void)argc;
    FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
    float x[EDGEML_N_FEATURES], p[EDGEML_N_OUTPUTS];
    while (fread(x, sizeof(float), EDGEML_N_FEATURES, in) == EDGEML_N_FEATURES) {
        edgeml_predict(x, p);
        fwrite(p, sizeof(float), EDGEML_N_OUTPUTS, out);
#if EDGEML_CLASSIFIER
        float label = (float)edgeml_label(p);
        fwrite(&label, sizeof(float), 1, out);
#endif
    }
    fclose(out);
    return 0;
}
"""


def compiler() -> str | None:
    """The host's C compiler (``cc``, else ``gcc``), or None."""
    return shutil.which("cc") or shutil.which("gcc")


def compile_host(folder, main: str = MAIN) -> Path:
    """``folder``'s ``edgeml_model.c`` with ``main``, built by the host's C compiler with :data:`HOST_FLAGS`."""
    folder, cc = Path(folder), compiler()
    if cc is None:
        raise FirmwareError("no C compiler on this machine (cc): install one (Debian: sudo apt-get install gcc)")
    (folder / "host_main.c").write_text(main, encoding="ascii")
    exe = folder / "host_model"
    done = subprocess.run([cc, *HOST_FLAGS, str(folder / "host_main.c"), str(folder / "edgeml_model.c"), "-lm",
                           "-o", str(exe)], capture_output=True, text=True)
    if done.returncode != 0:
        raise FirmwareError(f"the host's C compiler refused {folder / 'edgeml_model.c'}: {done.stderr[-400:]}")
    return exe


def host_outputs(folder, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """What ``folder``'s plain-C model computes on ``rows`` on this machine: ``(outputs, labels)``, labels
    ``None`` for a regressor."""
    folder = Path(folder)
    header = (folder / "edgeml_model.h").read_text(encoding="ascii")
    k = int(re.search(r"#define EDGEML_N_OUTPUTS (\d+)", header).group(1))
    classifier = re.search(r"#define EDGEML_CLASSIFIER 1\b", header) is not None
    with tempfile.TemporaryDirectory(prefix="edgeml-host-") as work:
        exe = compile_host(work_copy(folder, Path(work)))
        (Path(work) / "x.f32").write_bytes(np.ascontiguousarray(rows, np.float32).tobytes())
        subprocess.run([str(exe), str(Path(work) / "x.f32"), str(Path(work) / "y.f32")], check=True)
        out = np.frombuffer((Path(work) / "y.f32").read_bytes(), np.float32).reshape(len(rows), -1).copy()
    return (out[:, :k], out[:, k].astype(np.int32)) if classifier else (out, None)


def work_copy(folder: Path, work: Path) -> Path:
    """The model's two files copied into ``work`` (the user's folder gets no build products)."""
    for name in ("edgeml_model.h", "edgeml_model.c"):
        shutil.copy(folder / name, work / name)
    return work


__all__ = ["HOST_FLAGS", "MAIN", "compile_host", "compiler", "host_outputs"]
