"""A microcontroller profile's ``[mcu]`` table: compiler flags, the part's memory, and the board QEMU emulates.

The table is data for the example firmware (:mod:`edgeml.firmware`, docs/firmware.md): its Makefile
compiles with ``cflags``, its linker script cuts the board's memories to the part's ``flash_bytes``
and ``ram_bytes`` (a model too large for the real chip does not link) and reserves ``stack_bytes``,
and ``make run`` starts ``qemu-system-arm -M <board>``. The search does not read it, and a bundle's
manifest does not record it (``target.source`` names the profile it came from). Like ``[budgets]``,
a profile that ``extends`` another merges the table key by key.

:data:`BOARDS` holds the memory maps of the MPS2 boards QEMU emulates.

Example:

>>> spec = McuSpec.from_table("m7.toml", check_mcu_table("m7.toml", {
...     "board": "mps2-an500", "cflags": ["-mcpu=cortex-m7", "-mthumb"], "flash_bytes": 2_097_152,
...     "ram_bytes": 1_048_576}))
>>> spec.board.cpu, spec.stack_bytes
('cortex-m7', 8192)
>>> check_mcu_table("m7.toml", {"board": "mps2-an505"})
Traceback (most recent call last):
...
edgeml.errors.TargetError: m7.toml: mcu.board = 'mps2-an505' is not allowed; it must be one of mps2-an385, \
mps2-an386, mps2-an500 (a QEMU machine, see qemu-system-arm -M help)
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from edgeml.errors import TargetError

MB = 1024 * 1024


@dataclass(frozen=True)
class Board:
    """A board QEMU emulates: its machine name, its core, and where its code and data memories are."""

    machine: str
    cpu: str
    flash_origin: int
    flash_bytes: int
    ram_origin: int
    ram_bytes: int


#: QEMU's MPS2 machines with ARMv7-M cores (hw/arm/mps2.c): 4 MB of ZBT SSRAM at 0 holds the code (our
#: flash), 4 MB of SSRAM at 0x20000000 the data (our RAM).
BOARDS = {b.machine: b for b in (
    Board("mps2-an385", "cortex-m3", 0x0, 4 * MB, 0x20000000, 4 * MB),
    Board("mps2-an386", "cortex-m4", 0x0, 4 * MB, 0x20000000, 4 * MB),
    Board("mps2-an500", "cortex-m7", 0x0, 4 * MB, 0x20000000, 4 * MB),
)}
#: A compiler flag: it lands in a Makefile, so a '-', then letters, digits and ``=.,_+-`` only.
_FLAG = re.compile(r"-[A-Za-z0-9][A-Za-z0-9=.,_+-]*")
DEFAULT_STACK = 8192


def _bytes(v) -> bool:
    return type(v) is int and v >= 1


_RULES = {
    "board": ("one of " + ", ".join(BOARDS) + " (a QEMU machine, see qemu-system-arm -M help)", lambda v: v in BOARDS),
    "cflags": ('a list of the compiler\'s flags for the core and its FPU, e.g. ["-mcpu=cortex-m4", "-mthumb", '
               '"-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"] (each a \'-\', then letters, digits and =.,_+-)',
               lambda v: isinstance(v, list) and bool(v) and all(isinstance(f, str) and _FLAG.fullmatch(f) for f in v)),
    "flash_bytes": ("the part's flash in bytes: an integer >= 1", _bytes),
    "ram_bytes": ("the part's RAM in bytes: an integer >= 1", _bytes),
    "stack_bytes": ("the stack reserved in RAM, in bytes: a multiple of 8, >= 1024", lambda v: _bytes(v)
                    and v >= 1024 and v % 8 == 0),
}
KEYS = tuple(_RULES)
_NEEDED = ("board", "cflags", "flash_bytes", "ram_bytes")


def check_mcu_table(where: str, table) -> dict:
    """The values of one file's ``[mcu]`` table, each checked; an unknown key or a bad value names the fix."""
    if not isinstance(table, dict):
        raise TargetError(f"{where}: mcu = {table!r} is not allowed; write it as an [mcu] table")
    out = {}
    for key, value in table.items():
        if key not in _RULES:
            close = difflib.get_close_matches(key, KEYS, n=1)
            hint = f"; did you mean 'mcu.{close[0]}'?" if close else ""
            raise TargetError(f"{where}: unknown key 'mcu.{key}'{hint} (valid keys of [mcu]: {', '.join(KEYS)})")
        allowed, ok = _RULES[key]
        if not ok(value):
            raise TargetError(f"{where}: mcu.{key} = {value!r} is not allowed; it must be {allowed}")
        out[key] = tuple(value) if key == "cflags" else value
    return out


@dataclass(frozen=True)
class McuSpec:
    """The resolved ``[mcu]`` table: every key but ``stack_bytes`` must be set by the profile or its parent."""

    board: Board
    cflags: tuple[str, ...]
    flash_bytes: int
    ram_bytes: int
    stack_bytes: int = DEFAULT_STACK

    @classmethod
    def from_table(cls, where: str, table: dict) -> McuSpec:
        """The spec of a checked, merged table; a missing key or memory the board lacks is a TargetError."""
        missing = [k for k in _NEEDED if k not in table]
        if missing:
            raise TargetError(f"{where}: [mcu] lacks {', '.join(missing)}; set them here or in the profile it "
                              f"extends (see targets/cortex-m7.toml)")
        board = BOARDS[table["board"]]
        for key, room in (("flash_bytes", board.flash_bytes), ("ram_bytes", board.ram_bytes)):
            if table[key] > room:
                raise TargetError(f"{where}: mcu.{key} = {table[key]} is more than QEMU's {board.machine} has "
                                  f"({room}); lower it, or emulate the part on another board")
        stack = table.get("stack_bytes", DEFAULT_STACK)
        if stack >= table["ram_bytes"]:
            raise TargetError(f"{where}: mcu.stack_bytes = {stack} leaves no RAM of ram_bytes = "
                              f"{table['ram_bytes']}; lower it")
        return cls(board, tuple(table["cflags"]), table["flash_bytes"], table["ram_bytes"], stack)

    def to_dict(self) -> dict:
        """As a profile file spells the table."""
        return {"board": self.board.machine, "cflags": list(self.cflags), "flash_bytes": self.flash_bytes,
                "ram_bytes": self.ram_bytes, "stack_bytes": self.stack_bytes}


__all__ = ["BOARDS", "DEFAULT_STACK", "KEYS", "Board", "McuSpec", "check_mcu_table"]
