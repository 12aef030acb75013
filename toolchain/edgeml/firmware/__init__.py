"""Firmware for a microcontroller profile: the example project around a plain-C model, built and run in QEMU.

:mod:`edgeml.firmware.project` writes the project (``main.c``, startup, linker script, Makefile, the
rows and the checksum the host expects); :mod:`edgeml.firmware.emulate` builds it with
``arm-none-eabi-gcc`` and runs it on the profile's QEMU board, reading flash, RAM and stack use;
:mod:`edgeml.firmware.parity` holds what it computed against the bundle's artifact, at its tolerance.
See docs/firmware.md.
"""

from edgeml.firmware.emulate import Build, FirmwareError, Run, build, run
from edgeml.firmware.parity import compare_outputs
from edgeml.firmware.project import (
    checksum,
    float_rows,
    write_bundle_project,
    write_bundle_rows,
    write_project,
    write_rows,
)

__all__ = ["Build", "FirmwareError", "Run", "build", "checksum", "compare_outputs", "float_rows", "run",
           "write_bundle_project", "write_bundle_rows", "write_project", "write_rows"]
