"""Build settings: defaults, then ``edgeml.toml``, then command-line flags.

``edgeml.toml`` holds a ``[build]`` table whose keys are the long option names
of ``edgeml build`` with underscores (``time_budget = 120``). Unknown keys and
values of the wrong type are errors that name the file and the key.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, fields, replace
from pathlib import Path

from edgeml.errors import ConfigError
from edgeml_runtime.tomlfile import read_toml

CONFIG_FILE = "edgeml.toml"
TASKS = ("classification", "regression")


@dataclass(frozen=True)
class BuildConfig:
    """Everything ``edgeml build`` needs; the CLI and ``edgeml.toml`` both fill one of these."""

    data: str | None = None
    label: str | None = None
    target: str = "rpi4"
    task: str | None = None
    time_budget: float = 60.0
    max_iter: int | None = None
    metric: str = "auto"
    drop: tuple[str, ...] = ()
    estimators: tuple[str, ...] = ()
    seed: int = 0
    out: str | None = None
    name: str | None = None
    time_column: str | None = None
    query: str | None = None
    force: bool = False
    synthetic_samples: bool = False  #: draw the bundle's sample rows from the drift reference, not the test split

    def __post_init__(self):
        if self.task is not None and self.task not in TASKS:
            raise ConfigError(f"task {self.task!r} is not one of {', '.join(TASKS)}")
        if self.time_budget <= 0:
            raise ConfigError(f"time_budget must be positive seconds, not {self.time_budget!r}")
        if self.max_iter is not None and self.max_iter < 1:
            raise ConfigError(f"max_iter must be at least 1, not {self.max_iter!r}")


_TYPES = {
    "data": str, "label": str, "target": str, "task": str, "time_budget": (int, float), "max_iter": int,
    "max_trials": int,
    "metric": str, "drop": (list, str), "estimators": (list, str), "seed": int, "out": str, "name": str,
    "time_column": str, "query": str, "force": bool, "synthetic_samples": bool,
}


def read_config_file(path: Path) -> dict:
    """The ``[build]`` settings of a config file, checked for unknown keys and types."""
    doc = read_toml(path, ConfigError, "config file")
    extra = [k for k in doc if k != "build"]
    if extra:
        raise ConfigError(f"{path}: unknown table or key {extra[0]!r}; settings go in a [build] table")
    table = doc.get("build", {})
    out = {}
    for key, value in table.items():
        if key == "max_trials":  # the CLI's --max-trials; BuildConfig calls it max_iter, as FLAML does
            key = "max_iter"
        if key not in _TYPES:
            near = difflib.get_close_matches(key, _TYPES, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; known keys: {', '.join(_TYPES)}"
            raise ConfigError(f"{path}: unknown key {key!r} in [build]{hint}")
        want = _TYPES[key]
        if isinstance(value, bool) and want is not bool or not isinstance(value, want):
            raise ConfigError(f"{path}: [build] {key} = {value!r} has the wrong type; expected {_type_name(want)}")
        if key in ("drop", "estimators"):
            value = split_list(value)
        if key == "data" and not str(value).startswith("sqlite:"):
            value = str(path.parent / value) if not Path(value).is_absolute() else value
        out[key] = value
    return out


def split_list(value) -> tuple[str, ...]:
    """``"a,b"`` or ``["a", "b"]`` as a tuple of names."""
    items = value.split(",") if isinstance(value, str) else value
    return tuple(str(v).strip() for v in items if str(v).strip())


def _type_name(t) -> str:
    ts = t if isinstance(t, tuple) else (t,)
    return " or ".join({int: "an integer", float: "a number", str: "a string", list: "a list", bool: "true/false"}[x]
                       for x in ts)


def resolve(cli: dict, config_path: str | None = None, cwd: Path | None = None) -> BuildConfig:
    """Defaults, overridden by the config file (``--config`` or ``./edgeml.toml``), overridden by flags.

    ``cli`` holds only the flags the user gave (``None`` means not given).
    """
    path = Path(config_path) if config_path else (cwd or Path.cwd()) / CONFIG_FILE
    settings = read_config_file(path) if (config_path or path.is_file()) else {}
    settings.update({k: v for k, v in cli.items() if v is not None and v != ()})
    known = {f.name for f in fields(BuildConfig)}
    return replace(BuildConfig(), **{k: v for k, v in settings.items() if k in known})
