"""Build the example firmware with ``arm-none-eabi-gcc`` and run it in QEMU: what the tests and the benchmark use.

:func:`build` runs the project's own Makefile (so a user's ``make`` and the tests build the same way)
and reads the link map: flash is every loaded section (``.text``, ``.rodata``, ``.ARM.exidx`` and
``.data``'s initial values), static RAM is ``.data`` + ``.bss``. :func:`run` starts the profile's
QEMU board with semihosting and reads what ``main.c`` printed: each row's outputs, the checksum and
the stack's high-water mark (the reset handler paints the stack; the bytes whose paint is gone).

Example (needs the cross-compiler and QEMU)::

    write_project(folder, "cortex-m7"); write_rows(folder, rows, outputs)   # plus edgeml_model.h/.c
    done = build(folder)                  # Build(elf, flash_bytes=..., ram_bytes=..., sections=...)
    got = run(done.elf, "mps2-an500")     # Run(checksum=..., stack_bytes=..., outputs=..., labels=...)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeml.errors import EdgeMLError
from edgeml.firmware.project import QEMU_FLAGS
from edgeml.targets.mcu import Board, McuSpec

ELF, MAP = "edgeml.elf", "edgeml.map"
#: The Debian package that brings each tool (``make system-deps`` installs them).
PACKAGES = {"make": "make", "arm-none-eabi-gcc": "gcc-arm-none-eabi", "arm-none-eabi-size": "binutils-arm-none-eabi",
            "qemu-system-arm": "qemu-system-arm"}
#: Output sections that are not loaded into the device (debug information, notes, attributes).
_NOT_LOADED = re.compile(r"\.(debug|comment|ARM\.attributes|stab|note|gnu\.attributes)")
_SECTION = re.compile(r"^(\.\S+)(?:\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)(?:\s+load address 0x([0-9a-f]+))?)?\s*$")
_ADDRESS = re.compile(r"^\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)(?:\s+load address 0x([0-9a-f]+))?\s*$")
_REGION = re.compile(r"^(\w+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)")


class FirmwareError(EdgeMLError):
    """The cross-compiler or the emulator is missing, or the firmware did not build or run as it should."""


def require(tool: str) -> str:
    """The path of ``tool``, or a FirmwareError naming the Debian package to install."""
    path = shutil.which(tool)
    if path is None:
        package = PACKAGES.get(tool, tool)
        raise FirmwareError(f"{tool} is not on the PATH: install it (Debian/Ubuntu: sudo apt-get install {package}; "
                            "or `make system-deps` in the edgeml checkout)")
    return path


@dataclass(frozen=True)
class Section:
    """One output section of the link map: where it runs, its size, and where it is stored (``load``)."""

    address: int
    size: int
    load: int


@dataclass(frozen=True)
class Build:
    """A built firmware: the ELF and its link map, flash and static RAM in bytes, every loaded section."""

    elf: Path
    map: Path
    flash_bytes: int
    ram_bytes: int  #: .data + .bss (the stack is ``stack_reserved``)
    stack_reserved: int
    sections: dict[str, Section] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True, eq=False)
class Run:
    """What the firmware printed in QEMU: its outputs per row, the checksum, the stack used, its exit code."""

    stdout: str
    exit_code: int
    checksum: int | None
    stack_bytes: int | None
    outputs: np.ndarray  #: (rows, EDGEML_N_OUTPUTS) float32, exactly as the device computed them
    labels: np.ndarray | None  #: int32 class indices for a classifier
    seconds: float


def build(project, *, timeout: float = 300) -> Build:
    """Run ``make`` in the project folder and read ``edgeml.map``; a failed compile or link is a FirmwareError."""
    project = Path(project)
    make, gcc = require("make"), require("arm-none-eabi-gcc")
    found = subprocess.run([gcc, "-print-file-name=nano.specs"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(found):
        raise FirmwareError("arm-none-eabi-gcc has no newlib (nano.specs is missing): install it (Debian/Ubuntu: "
                            "sudo apt-get install libnewlib-arm-none-eabi)")
    started = time.perf_counter()
    try:
        done = subprocess.run([make, "-C", str(project), "--no-print-directory", ELF], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise FirmwareError(f"make in {project} did not finish in {timeout:g} s") from None
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        log = (done.stdout + done.stderr).strip()
        overflow = re.search(r"region [`']?(FLASH|RAM)'? overflowed by (\d+) bytes", log)
        if overflow:
            raise FirmwareError(f"the firmware does not fit the part: {overflow[1]} is {overflow[2]} bytes short "
                                f"(link.ld; the target's [mcu] flash_bytes / ram_bytes); use a smaller model")
        raise FirmwareError(f"make in {project} failed (exit {done.returncode}):\n" + "\n".join(log.splitlines()[-25:]))
    regions, sections = read_map(project / MAP)
    flash, ram = regions["FLASH"], regions["RAM"]

    def inside(address: int, region: tuple[int, int]) -> bool:
        return region[0] <= address < region[0] + region[1]

    # ld prints a load address for NOLOAD sections too: which ones are is link.ld's to say.
    noload = set(re.findall(r"^\s*(\.\S+)\s*\(NOLOAD\)", (project / "link.ld").read_text(), re.M))
    flash_bytes = sum(s.size for n, s in sections.items() if inside(s.load, flash) and n not in noload)
    stack = sections.get(".stack", Section(0, 0, 0)).size
    ram_bytes = sum(s.size for n, s in sections.items() if inside(s.address, ram) and n != ".stack")
    return Build(project / ELF, project / MAP, flash_bytes, ram_bytes, stack, sections, seconds)


def read_map(path) -> tuple[dict[str, tuple[int, int]], dict[str, Section]]:
    """The memory regions (name -> origin, length) and the loaded output sections of a GNU ld map file."""
    regions: dict[str, tuple[int, int]] = {}
    sections: dict[str, Section] = {}
    pending = None
    in_regions = False
    for line in Path(path).read_text(errors="replace").splitlines():
        if line.startswith("Memory Configuration"):
            in_regions = True
        elif line.startswith("Linker script and memory map"):
            in_regions = False
        elif in_regions and (m := _REGION.match(line)):
            regions[m[1]] = (int(m[2], 16), int(m[3], 16))
        elif m := _SECTION.match(line):
            pending = m[1]
            if m[2] is not None:
                _add(sections, pending, m[2], m[3], m[4])
                pending = None
        elif pending and (m := _ADDRESS.match(line)):  # a long name has its address on the next line
            _add(sections, pending, *m.groups())
            pending = None
        else:
            pending = None
    if not {"FLASH", "RAM"} <= set(regions):
        raise FirmwareError(f"{path} names no FLASH and RAM memory regions; is it the map of the project's link.ld?")
    return regions, sections


def _add(sections: dict, name: str, address: str, size: str, load: str | None) -> None:
    if not _NOT_LOADED.match(name) and int(size, 16):
        sections[name] = Section(int(address, 16), int(size, 16), int(load or address, 16))


def run(elf, board: str | Board | McuSpec, *, timeout: float = 60, check: bool = True) -> Run:
    """Run ``elf`` on QEMU's ``board`` (a machine name such as ``mps2-an500``) and read what it printed.

    With ``check`` a non-zero exit (a fault, a stack overflow, features that are not the model's) is a
    FirmwareError quoting the firmware's last lines.
    """
    machine = board.board.machine if isinstance(board, McuSpec) else getattr(board, "machine", board)
    qemu = require("qemu-system-arm")
    started = time.perf_counter()
    try:
        done = subprocess.run([qemu, "-M", machine, *QEMU_FLAGS, "-kernel", str(elf)], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise FirmwareError(f"{elf} did not finish in {timeout:g} s on {machine} (a fault loop, or scoring that "
                            "slow): raise the timeout or score fewer rows") from None
    seconds = time.perf_counter() - started
    if check and done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise FirmwareError(f"{elf} exited with status {done.returncode} on {machine}:\n{tail}")
    return _parse(done.stdout, done.returncode, seconds)


def _parse(stdout: str, exit_code: int, seconds: float) -> Run:
    """The rows, checksum and stack lines main.c prints (see its header comment)."""
    values: dict[str, int] = {}
    outputs, labels = [], []
    classifier = False
    for line in stdout.splitlines():
        words = line.split()
        if words[:1] == ["edgeml"] and len(words) == 7:
            classifier = words[6] == "1"
        elif words[:1] == ["row"]:
            bits = words[2:-1] if classifier else words[2:]
            outputs.append([int(b, 16) for b in bits])
            if classifier:
                labels.append(int(words[-1]))
        elif words[:1] in (["checksum"], ["stack"]) and len(words) == 2:
            values[words[0]] = int(words[1], 16 if words[0] == "checksum" else 10)
    floats = np.array(outputs, dtype="<u4").view("<f4") if outputs else np.zeros((0, 0), np.float32)
    return Run(stdout, exit_code, values.get("checksum"), values.get("stack"), floats.astype(np.float32),
               np.array(labels, np.int32) if classifier else None, seconds)


__all__ = ["ELF", "MAP", "PACKAGES", "Build", "FirmwareError", "Run", "Section", "build", "read_map", "require", "run"]
