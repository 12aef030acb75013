"""TFLite operator sets: what an interpreter or accelerator compiler can run, and checking a model against one.

The sets are data, in ``_tflite_op_sets.toml`` next to the target profiles
(a profile names one with ``tflite_ops``). A set lists the builtin
operators, and says whether every tensor must be integer (the Edge TPU) and
whether the batch must be fixed at one row (compilers for fixed-function
hardware). :func:`problems` says what keeps a model off a set, in words a
user can act on.

Example:

>>> micro = load_op_set("tflite-micro")
>>> "FULLY_CONNECTED" in micro.ops, "SELECT" in micro.ops
(True, False)
>>> problems(("FULLY_CONNECTED", "SELECT"), ("float32", "int32"),
...          load_op_set("edgetpu"))  # doctest: +NORMALIZE_WHITESPACE
['operator(s) SELECT are not in the edgetpu set',
 'tensors of type float32 (the edgetpu set takes int8, uint8 and int32 biases only)']
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import cache

from edgeml.errors import TargetError
from edgeml.targets.files import targets_dir
from edgeml_runtime.tomlfile import read_toml

OP_SETS_FILE = "_tflite_op_sets.toml"
#: Tensor types an integer-only set accepts (int32 holds biases and shapes).
INTEGER_TYPES = ("int8", "uint8", "int32")
#: Interpreters the build can run an artifact in, beyond LiteRT (see :mod:`edgeml.export.tflite.micro`).
VERIFIERS = ("tflite-micro",)


@dataclass(frozen=True)
class OpSet:
    name: str
    description: str
    source: str
    ops: frozenset[str]
    integer_only: bool = False
    static_batch: bool = False
    verify_with: str = ""  # an interpreter of :data:`VERIFIERS` that runs every artifact, "" for none


@cache
def _load(path_text: str) -> dict[str, OpSet]:
    import tflite

    raw = read_toml(path_text, TargetError, "file of TFLite operator sets", missing_ok=True)
    sets = {}
    for name, table in raw.items():
        where = f"{path_text}: [{name}]"
        if not isinstance(table, dict) or not isinstance(table.get("ops"), list) or not table["ops"]:
            raise TargetError(f"{where} needs ops = [...], a non-empty list of TFLite builtin operator names")
        unknown = [op for op in table["ops"] if not hasattr(tflite.BuiltinOperator, str(op))]
        if unknown:
            close = difflib.get_close_matches(str(unknown[0]), dir(tflite.BuiltinOperator), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TargetError(f"{where}: {unknown[0]!r} is not a TFLite builtin operator{hint}")
        extra = set(table) - {"description", "source", "ops", "integer_only", "static_batch", "verify_with"}
        if extra:
            raise TargetError(f"{where}: unknown key {sorted(extra)[0]!r}; a set has description, source, ops, "
                              "integer_only, static_batch, verify_with")
        if table.get("verify_with", "") not in ("", *VERIFIERS):
            raise TargetError(f"{where}: verify_with = {table['verify_with']!r} is unknown; it takes "
                              f"{', '.join(VERIFIERS)} (or leave it out)")
        for flag in ("integer_only", "static_batch"):
            if type(table.get(flag, False)) is not bool:
                raise TargetError(f"{where}: {flag} = {table[flag]!r} must be true or false")
        sets[name] = OpSet(name, str(table.get("description", "")), str(table.get("source", "")),
                           frozenset(table["ops"]), table.get("integer_only", False), table.get("static_batch", False),
                           table.get("verify_with", ""))
    return sets


def op_sets() -> dict[str, OpSet]:
    """Every operator set in the targets folder, by name."""
    return _load(str(targets_dir() / OP_SETS_FILE))


def load_op_set(name: str) -> OpSet:
    sets = op_sets()
    if name not in sets:
        close = difflib.get_close_matches(name, list(sets), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise TargetError(f"unknown TFLite operator set {name!r}{hint} (known: {', '.join(sorted(sets)) or 'none'}; "
                          f"add one to {OP_SETS_FILE} in the targets folder)")
    return sets[name]


def problems(ops, tensor_types, op_set: OpSet) -> list[str]:
    """What keeps a model with these operators and tensor types off ``op_set`` (empty when nothing does)."""
    out = []
    missing = sorted(set(ops) - op_set.ops)
    if missing:
        out.append(f"operator(s) {', '.join(missing)} are not in the {op_set.name} set")
    if op_set.integer_only:
        floats = sorted(set(tensor_types) - set(INTEGER_TYPES))
        if floats:
            out.append(f"tensors of type {', '.join(floats)} (the {op_set.name} set takes int8, uint8 and int32 "
                       "biases only)")
    return out


__all__ = ["INTEGER_TYPES", "OP_SETS_FILE", "VERIFIERS", "OpSet", "load_op_set", "op_sets", "problems"]
