"""Hardware target profiles: TOML files that describe a device, checked on load.

A profile says what a device is (arch, the wheel platform tags and Python version of its
Python, CPU, cores, RAM),
what it runs (artifact formats, precisions, estimator families) and what a
model must fit in (``[budgets]``). Profiles are ``<name>.toml`` files in
:func:`targets_dir`, one per target: adding a target means adding a file.
Each inherits ``_defaults.toml`` and may ``extends = "other-name"``; files
whose name starts with ``_`` are shared bases, not targets.

Example:

>>> rpi4 = load_target("rpi4")
>>> rpi4.arch, rpi4.cores, rpi4.ram_mb, rpi4.budgets.allowed_metric_drop
('aarch64', 4, 4096, 0.01)
>>> {"rpi4", "x86-64"} <= {p.name for p in list_targets()}
True
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeml.errors import TargetError
from edgeml.models.learners import LEARNERS
from edgeml.targets.files import DEFAULTS_FILE, targets_dir
from edgeml.targets.mcu import McuSpec, check_mcu_table
from edgeml.targets.opsets import load_op_set
from edgeml_runtime.tomlfile import read_toml

ARCHES = ("aarch64", "armv7l", "x86_64", "xtensa", "armv7em")
FORMATS = ("onnx", "ort", "tflite")
PRECISIONS = ("fp32", "fp16", "int8")
#: onnxruntime execution providers a profile may name, as onnxruntime spells them.
PROVIDERS = (
    "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider", "OpenVINOExecutionProvider",
    "DnnlExecutionProvider", "XnnpackExecutionProvider", "ACLExecutionProvider", "ArmNNExecutionProvider",
    "QNNExecutionProvider", "NnapiExecutionProvider", "CoreMLExecutionProvider", "ROCMExecutionProvider",
    "MIGraphXExecutionProvider", "DmlExecutionProvider", "VitisAIExecutionProvider",
)
#: Graph optimization levels applied offline, before the artifact ships
#: (onnxruntime's names; "none" = leave it to load time).
OPTIMIZATIONS = ("none", "basic", "extended", "all")
#: What ``edgeml firmware`` writes for a microcontroller: "tflm" (the TFLite file for TensorFlow Lite Micro) or "c"
#: (plain C tables and loops, :mod:`edgeml.export.c`); a profile's form is also the size its search judges a
#: trial by (:class:`edgeml.targets.measure.TrialMeasure`).
FIRMWARE_FORMS = ("tflm", "c")


@dataclass(frozen=True)
class Budgets:
    """What a model must fit in on the device; ``None`` means no limit.

    ``speed_factor`` is how many times slower than the build machine a
    one-row prediction runs on the device, so the predicted device latency is
    the measured host latency times ``speed_factor``. ``max_accuracy_drop``
    (absolute accuracy, classification) and ``max_rmse_increase`` (relative
    RMSE, regression) bound what a reduced-precision artifact (fp16, int8) may
    lose against the fp32 artifact on the test split. ``max_arena_bytes`` bounds
    the tensor memory a TFLite model needs for one row (what TFLite Micro's
    tensor arena holds on a microcontroller, see
    :meth:`edgeml.export.tflite.graph.Graph.planned_bytes`).
    """

    max_model_bytes: int | None = None
    max_model_ram_mb: int | None = None
    max_arena_bytes: int | None = None
    latency_budget_ms: float | None = None
    speed_factor: float | None = None
    allowed_metric_drop: float = 0.01
    max_accuracy_drop: float = 0.01
    max_rmse_increase: float = 0.02


@dataclass(frozen=True)
class TargetProfile:
    """A resolved target profile: its own file merged over what it inherits."""

    name: str
    description: str
    arch: str
    #: Wheel platform tags pip may install on the device, most specific first (``[]``: no Python, a microcontroller).
    platform_tags: tuple[str, ...]
    cpu: str
    cores: int
    ram_mb: int
    formats: tuple[str, ...]
    precisions: tuple[str, ...]
    estimators: tuple[str, ...]
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    ort_minimal: bool = False
    ort_optimization: str = "none"
    tflite_ops: str = ""
    #: The firmware form (:data:`FIRMWARE_FORMS`) `edgeml firmware` writes by default and the search sizes trials by.
    firmware: str = "tflm"
    #: The device's Python version, ``"3.11"``; ``""`` where it runs no Python.
    python: str = ""
    budgets: Budgets = field(default_factory=Budgets)
    #: A microcontroller's ``[mcu]`` table (compiler flags, flash, RAM, QEMU board), ``None`` elsewhere.
    mcu: McuSpec | None = None
    #: Where it was read from, the same on every machine: ``targets/<name>.toml`` for a built-in profile (relative
    #: to :func:`targets_dir`), else the path to the user's own file as it was given.
    source: str = ""

    @property
    def platform_tag(self) -> str:
        """The most specific platform tag, ``""`` without Python: what a bundle manifest records."""
        return self.platform_tags[0] if self.platform_tags else ""

    def to_dict(self) -> dict:
        """The resolved profile as a bundle manifest stores it (format 5: one ``platform_tag``, no ``python``)."""
        d = self.to_profile_dict()
        del d["python"], d["mcu"]
        return {("platform_tag" if k == "platform_tags" else k): (self.platform_tag if k == "platform_tags" else v)
                for k, v in d.items()}

    def to_profile_dict(self) -> dict:
        """The resolved profile as JSON-ready data, every key as a profile file spells it."""
        d = asdict(self)
        for key in ("platform_tags", "formats", "precisions", "estimators", "providers"):
            d[key] = list(d[key])
        d["mcu"] = self.mcu.to_dict() if self.mcu else None
        return d


@dataclass(frozen=True)
class _Rule:
    """What one key accepts: a test, its wording in messages, known words to suggest from."""

    allowed: str
    ok: Callable[[Any], bool]
    convert: Callable[[Any], Any] = lambda v: v
    options: tuple[str, ...] = ()


def _real(v: Any) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _text(pattern: str = r".*", allowed: str = "a string") -> _Rule:
    return _Rule(allowed, lambda v: isinstance(v, str) and re.fullmatch(pattern, v, re.S) is not None)


def _some_of(options: tuple[str, ...]) -> _Rule:
    return _Rule(
        "a non-empty list without repeats, in order of preference, drawn from " + ", ".join(options),
        lambda v: isinstance(v, list) and bool(v) and all(x in options for x in v) and len(set(v)) == len(v),
        tuple, options,
    )


def _providers() -> _Rule:
    listed = _some_of(PROVIDERS)
    return _Rule(listed.allowed + ", including CPUExecutionProvider (the fallback every artifact runs on)",
                 lambda v: listed.ok(v) and "CPUExecutionProvider" in v, tuple, PROVIDERS)


_COUNT = _Rule("an integer >= 1", lambda v: type(v) is int and v >= 1)
_SHARE = _Rule("a finite number >= 0", lambda v: _real(v) and v >= 0, float)
_POSITIVE = _Rule("a finite number > 0", lambda v: _real(v) and v > 0, float)
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_RULES: dict[str, _Rule | None] = {
    "name": _text(_NAME, "the file name without .toml (letters, digits, '.', '_', '-')"),
    "extends": _text(r".+", "the name of another profile, or a path to its .toml file"),
    "description": _text(),
    "arch": _Rule("one of " + ", ".join(ARCHES), lambda v: v in ARCHES, options=ARCHES),
    "platform_tags": _Rule(
        'a list without repeats of wheel platform tags, most specific first, such as ["manylinux_2_28_aarch64", '
        '"manylinux2014_aarch64"] (lowercase letters, digits, "_" and "."), or [] for a device without Python',
        lambda v: isinstance(v, list) and len(set(v)) == len(v)
        and all(isinstance(t, str) and re.fullmatch(r"[a-z0-9_.]+", t) for t in v), tuple),
    # The one-tag spelling of earlier profiles, read as a one-item platform_tags (see _validate).
    "platform_tag": _text(r"[a-z0-9_.]*", 'a wheel platform tag such as "manylinux2014_aarch64", or "" for an MCU '
                          '(better: platform_tags, a list)'),
    "python": _text(r"(3\.[0-9]{1,2})?", 'the device\'s Python version as "3.11" (major.minor), or "" without Python'),
    "cpu": _text(),
    "cores": _COUNT,
    "ram_mb": _COUNT,
    "formats": _some_of(FORMATS),
    "precisions": _some_of(PRECISIONS),
    "estimators": None,  # drawn from the learners registered when a profile is read: see _rules()
    "providers": _providers(),
    "ort_minimal": _Rule("true or false", lambda v: type(v) is bool),
    "ort_optimization": _Rule("one of " + ", ".join(OPTIMIZATIONS), lambda v: v in OPTIMIZATIONS,
                              options=OPTIMIZATIONS),
    "tflite_ops": _text(r"[A-Za-z0-9._-]*", 'the name of a TFLite operator set in _tflite_op_sets.toml, or "" for all'),
    "firmware": _Rule("one of " + ", ".join(FIRMWARE_FORMS), lambda v: v in FIRMWARE_FORMS, options=FIRMWARE_FORMS),
}
_BUDGET_RULES: dict[str, _Rule | None] = {
    "max_model_bytes": _COUNT,
    "max_model_ram_mb": _COUNT,
    "max_arena_bytes": _COUNT,
    "latency_budget_ms": _POSITIVE,
    "speed_factor": _POSITIVE,
    "allowed_metric_drop": _SHARE,
    "max_accuracy_drop": _SHARE,
    "max_rmse_increase": _SHARE,
}
_ALL_KEYS = [*_RULES, "budgets", *(f"budgets.{k}" for k in _BUDGET_RULES), "mcu"]
_NOT_INHERITED = ("name", "extends", "description")
_REQUIRED = ("arch", "platform_tags", "cpu", "cores", "ram_mb", "formats", "precisions", "estimators")
_OPTIONAL = ("providers", "ort_minimal", "ort_optimization", "tflite_ops", "firmware", "python")


def _unknown_key(where: str, key: str) -> TargetError:
    tail = key.rpartition(".")[2]
    home = f"budgets.{tail}" if tail in _BUDGET_RULES else tail if tail in _RULES else key
    if home != key:
        hint = f"; it belongs {'in' if home.startswith('budgets.') else 'above'} the [budgets] table"
    else:
        close = difflib.get_close_matches(key, _ALL_KEYS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
    return TargetError(f"{where}: unknown key {key!r}{hint} (valid keys: {', '.join(_ALL_KEYS)})")


def _check_table(where: str, table: dict, rules: dict[str, _Rule], prefix: str = "") -> dict:
    out = {}
    for key, value in table.items():
        if key not in rules:
            raise _unknown_key(where, prefix + key)
        rule = rules[key]
        if not rule.ok(value):
            bad = [x for x in (value if isinstance(value, list) else [value]) if rule.options and x not in rule.options]
            same_letters = [o for o in rule.options if bad and o.lower() == str(bad[0]).lower()]
            close = same_letters or (difflib.get_close_matches(str(bad[0]), rule.options, n=1) if bad else [])
            hint = f" ({bad[0]!r} is unknown; did you mean {close[0]!r}?)" if close else ""
            raise TargetError(f"{where}: {prefix}{key} = {value!r} is not allowed{hint}; it must be {rule.allowed}")
        out[key] = rule.convert(value)
    return out


def _rules() -> dict[str, _Rule]:
    """The rules of a profile's keys; ``estimators`` are drawn from the learners registered now
    (:data:`edgeml.models.learners.LEARNERS`), so a learner registered after import is allowed at once."""
    return {**_RULES, "estimators": _some_of(tuple(LEARNERS))}


def _validate(raw: dict, where: str, *, shared: bool = False) -> dict:
    """Check every key and value of one file; return the values to keep."""
    budgets = raw.get("budgets", {})
    if not isinstance(budgets, dict):
        raise TargetError(f"{where}: budgets = {budgets!r} is not allowed; write the budgets as a [budgets] table")
    out = _check_table(where, {k: v for k, v in raw.items() if k not in ("budgets", "mcu")}, _rules())
    if shared and (own := [k for k in _NOT_INHERITED if k in out]):
        raise TargetError(f"{where}: {own[0]!r} cannot be set in shared defaults (it is never inherited); remove it")
    if "platform_tag" in out:
        if "platform_tags" in out:
            raise TargetError(f"{where}: both platform_tag and platform_tags are set; keep platform_tags (a list, "
                              "most specific first) and remove platform_tag")
        tag = out.pop("platform_tag")
        out["platform_tags"] = (tag,) if tag else ()
    if budgets:
        out["budgets"] = _check_table(where, budgets, _BUDGET_RULES, "budgets.")
    if "mcu" in raw:
        out["mcu"] = check_mcu_table(where, raw["mcu"])
    return out


def _read(path: Path, *, shared: bool = False) -> dict:
    raw = read_toml(path, TargetError, "target profile")
    data = _validate(raw, str(path), shared=shared)
    if not shared and data.get("name") != path.stem:
        seen = f"name = {data['name']!r} does not match the file name" if "name" in data else "missing key 'name'"
        raise TargetError(f"{path}: {seen}; set name = {path.stem!r} (or rename the file to <name>.toml)")
    return data


def _names(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.toml") if not p.name.startswith("_"))


def _builtin(name: str, wanted_by: str = "") -> Path:
    directory = targets_dir()
    path = directory / f"{name}.toml"
    if name.startswith("_") or not re.fullmatch(_NAME, name) or not path.is_file():
        names = _names(directory)
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else "."
        raise TargetError(
            f"{wanted_by}unknown target {name!r}{hint} Available targets: {', '.join(names) or '(none)'} "
            f"(in {directory}). To use your own profile, pass the path to its .toml file."
        )
    return path


def _resolve(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """One file's values merged over its parent's (recursively) or over the shared defaults."""
    data = _read(path)
    chain = (*chain, path.resolve())
    parent = data.get("extends")
    if parent is None:
        defaults = targets_dir() / DEFAULTS_FILE
        base = _read(defaults, shared=True) if defaults.is_file() else {}
    else:
        is_path = parent.endswith(".toml") or "/" in parent or os.sep in parent
        parent_path = path.parent / parent if is_path else _builtin(parent, f"{path}: extends = {parent!r}: ")
        if not parent_path.is_file():
            raise TargetError(f"{path}: extends = {parent!r}, but {parent_path} does not exist; fix the path")
        if parent_path.resolve() in chain:
            loop = " -> ".join(p.stem for p in (*chain, parent_path.resolve()))
            raise TargetError(f"{path}: extends = {parent!r} makes a cycle ({loop}); remove one of these extends")
        base = _resolve(parent_path, chain)
    merged = {k: v for k, v in base.items() if k not in _NOT_INHERITED}
    merged.update(data)
    merged["budgets"] = {**base.get("budgets", {}), **data.get("budgets", {})}
    if "mcu" in base or "mcu" in data:
        merged["mcu"] = {**base.get("mcu", {}), **data.get("mcu", {})}
    return merged


def _build(data: dict, source: Path, recorded: str) -> TargetProfile:
    """The profile of resolved ``data`` read from ``source`` (named in errors), recording ``recorded``."""
    missing = [k for k in ("name", *_REQUIRED) if k not in data]
    if missing:
        where = f"this profile, the profile it extends, or {DEFAULTS_FILE}"
        raise TargetError(f"{source}: missing {', '.join(missing)}; set them in {where}")
    if data.get("ort_minimal") and "ort" not in data["formats"]:
        raise TargetError(
            f"{source}: ort_minimal = true, but formats = {list(data['formats'])!r} lacks 'ort'; a minimal "
            "onnxruntime build loads only .ort files: add 'ort' to formats or set ort_minimal = false"
        )
    if data.get("tflite_ops"):
        if "tflite" not in data["formats"]:
            raise TargetError(f"{source}: tflite_ops = {data['tflite_ops']!r}, but formats = {list(data['formats'])!r} "
                              "lacks 'tflite'; add it or remove tflite_ops")
        try:
            op_set = load_op_set(data["tflite_ops"])
        except TargetError as exc:
            raise TargetError(f"{source}: tflite_ops: {exc}") from None
        if op_set.integer_only and set(data["precisions"]) != {"int8"}:
            raise TargetError(f"{source}: the {op_set.name} operator set is integer-only, but precisions = "
                              f"{list(data['precisions'])!r}; set precisions = [\"int8\"]")
    return TargetProfile(
        name=data["name"], description=data.get("description", ""), **{k: data[k] for k in _REQUIRED},
        **{k: data[k] for k in _OPTIONAL if k in data},
        budgets=Budgets(**data.get("budgets", {})), source=recorded,
        mcu=McuSpec.from_table(str(source), data["mcu"]) if "mcu" in data else None,
    )


def _recorded_source(path: Path, given: str) -> str:
    """``targets/<file>`` for a file in :func:`targets_dir`, else ``given``: what a manifest records, the same in
    every checkout.

    >>> _recorded_source(targets_dir() / "rpi4.toml", "/anywhere/rpi4.toml")
    'targets/rpi4.toml'
    >>> _recorded_source(Path("boards/mine.toml"), "boards/mine.toml")
    'boards/mine.toml'
    """
    try:
        inside = path.resolve().relative_to(targets_dir().resolve())
    except ValueError:
        return given
    return f"targets/{inside.as_posix()}"


def load_target(name_or_path: str | os.PathLike) -> TargetProfile:
    """Load a built-in profile by name, or a user's own profile from a ``.toml`` path.

    >>> x86 = load_target("x86-64")
    >>> x86.platform_tags, x86.python
    (('manylinux_2_28_x86_64', 'manylinux_2_17_x86_64', 'manylinux2014_x86_64'), '3.11')
    >>> load_target("rpi5")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    edgeml.errors.TargetError: unknown target 'rpi5'; did you mean rpi4? Available targets: ...
    """
    text = os.fspath(name_or_path)
    if isinstance(name_or_path, os.PathLike) or text.endswith(".toml") or "/" in text or os.sep in text:
        path = Path(text).expanduser()
        if not path.is_file():
            names = ", ".join(_names(targets_dir()))
            raise TargetError(f"{path}: no such target profile file; check the path, or use a built-in target: {names}")
    else:
        path = _builtin(text)
    return _build(_resolve(path), path, _recorded_source(path, text))


def list_targets() -> list[TargetProfile]:
    """Every built-in profile in :func:`targets_dir`, resolved, sorted by name."""
    directory = targets_dir()
    return [load_target(directory / f"{name}.toml") for name in _names(directory)]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int) and value >= 10_000:
        return f"{value:_}"
    return repr(value)


def render_profile(profile: TargetProfile) -> str:
    """The resolved profile as TOML text (valid TOML; a starting point for a custom profile).

    >>> print(render_profile(load_target("rpi4")))  # doctest: +ELLIPSIS
    # rpi4, resolved from .../rpi4.toml
    name = "rpi4"
    ...
    [budgets]
    max_model_bytes = 20_000_000
    ...
    """
    d = profile.to_profile_dict()
    budgets, source, mcu = d.pop("budgets"), d.pop("source"), d.pop("mcu")
    lines = [f"# {profile.name}, resolved from {source or '(data)'}"]
    lines += [f"{k} = {_toml(v)}" for k, v in d.items()]
    lines += ["", "[budgets]"]
    lines += [f"{k} = {_toml(v)}" if v is not None else f"# {k}: no limit" for k, v in budgets.items()]
    lines += ["", "[mcu]", *(f"{k} = {_toml(v)}" for k, v in mcu.items())] if mcu else []
    return "\n".join(lines)
