"""Two builds of the same bundle, each in its own process with its own PYTHONHASHSEED and --out, once per session.

A pytest plugin (test modules load it with ``pytest_plugins = ["twin_builds"]``)
so that the determinism and ``edgeml verify`` tests share the same builds.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import run_env

#: Targets built twice: rpi4 ships ONNX, .ort and TFLite; cortex-m7 TFLite for TFLite Micro (and firmware).
TARGETS = ("rpi4", "cortex-m7")
NAME = "demo-1"
MAX_TRIALS = 3
SEED = 1

_SCRIPT = f"""
import sys
from edgeml.build import build
from edgeml.config import BuildConfig
from edgeml.export.tflite.firmware import write_firmware

out, target, firmware = sys.argv[1:]
build(BuildConfig(out=out, target=target, seed={SEED}, max_iter={MAX_TRIALS}))
if firmware != "-":
    write_firmware(out, firmware)
"""


@dataclass(frozen=True)
class Twins:
    target: str
    bundles: tuple[Path, Path]  #: the two bundle folders (same name, different parents)
    firmware: tuple[Path, Path] | None  #: the C sources written from each, for TFLite Micro targets

    @property
    def archives(self) -> tuple[Path, Path]:
        return tuple(b.parent / f"{b.name}.tar.gz" for b in self.bundles)


def _start(root: Path, target: str, hash_seed: str, firmware: bool) -> tuple[subprocess.Popen, Path, Path | None]:
    out = root / f"hashseed-{hash_seed}" / NAME
    fw = root / f"hashseed-{hash_seed}" / "firmware" if firmware else None
    env = {**run_env(), "PYTHONHASHSEED": hash_seed}
    proc = subprocess.Popen([sys.executable, "-c", _SCRIPT, str(out), target, str(fw or "-")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, out, fw


def _build_twins(root: Path, target: str) -> Twins:
    firmware = target == "cortex-m7"
    started = [_start(root, target, seed, firmware) for seed in ("1", "4242")]  # both at once: two cores
    for proc, _, _ in started:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"build for {target} failed:\n{err[-3000:]}"
    (_, a, fa), (_, b, fb) = started
    return Twins(target, (a, b), (fa, fb) if firmware else None)


@pytest.fixture(scope="session")
def twins(tmp_path_factory) -> dict[str, Twins]:
    """``{target: Twins}`` for every target in :data:`TARGETS`."""
    root = tmp_path_factory.mktemp("twins")
    return {t: _build_twins(root / t, t) for t in TARGETS}
