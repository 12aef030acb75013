"""Build settings: defaults, then ``edgeml.toml``, then command-line flags.

``edgeml.toml`` holds a ``[build]`` table whose keys are the long option names
of ``edgeml build`` with underscores (``time_budget = 120``), and a ``[search]``
table for where the search's trials run (:data:`SEARCH_KEYS`: ``backend``,
``address``, ``concurrent_trials``; the flags ``--backend``,
``--cluster-address``, ``--concurrent-trials``). They have a table of their
own because they say where the build runs, not what it builds: the bundle is
the same whichever backend ran the trials. Unknown keys and values of the
wrong type are errors that name the file, the table and the key.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass, fields, replace
from pathlib import Path

from edgeml.errors import ConfigError
from edgeml.models.learners import LEARNERS
from edgeml.search.cluster import BACKENDS
from edgeml.search.metrics import METRICS, check_metric
from edgeml_runtime.tomlfile import read_toml

CONFIG_FILE = "edgeml.toml"
#: The largest seed: scikit-learn, NumPy's legacy generator and FLAML take 0 to 2**32 - 1.
SEED_MAX = 2**32 - 1
TASKS = tuple(METRICS)
VALIDATIONS = ("auto", "cv", "holdout")
#: Where a setting is given, for the fix in a message.
_GIVEN = "the --{flag} flag or {key} in edgeml.toml's [{table}] table"
#: The ``[search]`` table's keys and the :class:`BuildConfig` fields they set (the flags are the fields' names).
SEARCH_KEYS = {"backend": "backend", "address": "cluster_address", "concurrent_trials": "concurrent_trials"}


@dataclass(frozen=True)
class BuildConfig:
    """Everything ``edgeml build`` needs; the CLI and ``edgeml.toml`` both fill one of these, checked here once.

    >>> BuildConfig(task="regression", metric="accuracy")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    edgeml.errors.ConfigError: metric 'accuracy' does not apply to regression; use one of auto, r2, ... (set it ...)
    """

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
    refit_all: bool = False  #: after evaluation, refit the model on every labelled row, the test split's too
    #: keep regression labels far outside the rest (:mod:`edgeml.data.outliers`), which a build leaves out
    keep_label_outliers: bool = False
    validation: str = "auto"  #: how trials are scored: edgeml's rule (auto), cross-validation (cv) or a holdout
    folds: int = 5  #: cross-validation folds
    #: drop the inputs that do not help the validation metric (:mod:`edgeml.search.inputs`); None: the target's
    #: default (on for microcontroller targets, off for the others)
    select_inputs: bool | None = None
    backend: str = "local"  #: where the search's trials run (:mod:`edgeml.search.cluster`)
    cluster_address: str | None = None  #: the cluster's address; None: the engine's environment (MASTER)
    concurrent_trials: int = 2  #: trials run at once on a cluster backend

    def __post_init__(self):
        for key, want in _types().items():
            value = getattr(self, key)
            if not (value is None and _optional(key)) and not _is(value, want):
                raise ConfigError(f"{key} = {value!r} has the wrong type; expected {_type_name(want)} "
                                  f"(set it with {_given(key)})")
        if self.task is not None and self.task not in TASKS:
            raise ConfigError(f"task {self.task!r} is not one of {', '.join(TASKS)} (set it with {_given('task')})")
        if self.time_budget <= 0:
            raise ConfigError(f"time_budget = {self.time_budget!r} is not allowed; give a positive number of seconds "
                              f"(set it with {_given('time_budget')})")
        if not 0 <= self.seed <= SEED_MAX:
            raise ConfigError(f"seed = {self.seed!r} is out of range; give a whole number from 0 to {SEED_MAX} "
                              f"(set it with {_given('seed')})")
        if self.max_iter is not None and self.max_iter < 1:
            raise ConfigError(f"max_iter = {self.max_iter!r} is not allowed; give at least 1 trial "
                              f"(set it with {_given('max_iter')})")
        if self.validation not in VALIDATIONS:
            raise ConfigError(f"validation = {self.validation!r} is not one of {', '.join(VALIDATIONS)} "
                              f"(set it with {_given('validation')})")
        if not 2 <= self.folds <= 20:
            raise ConfigError(f"folds = {self.folds!r} is not allowed; give 2 to 20 folds (set it with "
                              f"{_given('folds')})")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend = {self.backend!r} is not one of {', '.join(BACKENDS)} (set it with "
                              f"{_given('backend')})")
        if self.concurrent_trials < 1:
            raise ConfigError(f"concurrent_trials = {self.concurrent_trials!r} is not allowed; give at least 1 "
                              f"(set it with {_given('concurrent_trials')})")
        self._check_choices()

    def _check_choices(self) -> None:
        """The metric (for the task, where it is given; else for some task) and the estimators (the learners
        registered now)."""
        tasks = (self.task,) if self.task else TASKS
        if all(check_metric(t, self.metric) for t in tasks):
            allowed = sorted({m for t in tasks for m in METRICS[t]}) if len(tasks) > 1 else METRICS[tasks[0]]
            problem = (check_metric(self.task, self.metric) if self.task else
                       f"metric {self.metric!r} is unknown; use one of {', '.join(allowed)}")
            raise ConfigError(f"{problem} (set it with {_given('metric')})")
        unknown = [e for e in self.estimators if e not in LEARNERS]
        if unknown:
            close = difflib.get_close_matches(unknown[0], LEARNERS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"estimators: {unknown[0]!r} is not a registered learner{hint}; use names from "
                              f"{', '.join(LEARNERS)} (set them with {_given('estimators')})")


def _given(key: str) -> str:
    table_key = next((k for k, field in SEARCH_KEYS.items() if field == key), None)
    return _GIVEN.format(flag="max-trials" if key == "max_iter" else key.replace("_", "-"), key=table_key or key,
                         table="search" if table_key else "build")


def _types() -> dict[str, type]:
    """Each :class:`BuildConfig` field's type, read from the dataclass (``X | None`` as ``X``)."""
    hints = typing.get_type_hints(BuildConfig)
    out = {}
    for f in fields(BuildConfig):
        hint = hints[f.name]
        if isinstance(hint, types.UnionType):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        out[f.name] = typing.get_origin(hint) or hint
    return out


def _optional(key: str) -> bool:
    hint = typing.get_type_hints(BuildConfig)[key]
    return isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)


def _is(value, want: type) -> bool:
    """``value`` is of the field type ``want``: a number for a float, never a bool for a number."""
    if want is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if want is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if want is tuple:
        return isinstance(value, tuple) and all(isinstance(v, str) for v in value)
    return isinstance(value, want)


#: What edgeml.toml may hold for a field of each type (a list of names may be a "a,b" string too).
_FILE_TYPES = {float: (int, float), tuple: (list, str)}


def read_config_file(path: Path) -> dict:
    """The ``[build]`` and ``[search]`` settings of a config file, checked for unknown keys and types.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "edgeml.toml"
    >>> _ = p.write_text('[build]\\nmax_trials = 4\\n[search]\\nbackend = "spark"\\naddress = "local[2]"\\n')
    >>> read_config_file(p)
    {'max_iter': 4, 'backend': 'spark', 'cluster_address': 'local[2]'}
    >>> _ = p.write_text('[search]\\nbackends = "spark"\\n')
    >>> read_config_file(p)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    edgeml.errors.ConfigError: ...edgeml.toml: unknown key 'backends' in [search]; did you mean 'backend'?
    """
    doc = read_toml(path, ConfigError, "config file")
    extra = [k for k in doc if k not in ("build", "search")]
    if extra:
        raise ConfigError(f"{path}: unknown table or key {extra[0]!r}; settings go in a [build] or [search] table")
    types = _types()
    build_keys = {k: v for k, v in {**types, "max_trials": int}.items() if k not in SEARCH_KEYS.values()}
    search_keys = {key: types[field] for key, field in SEARCH_KEYS.items()}
    out = _read_table(path, "build", doc.get("build", {}), build_keys, {"max_trials": "max_iter"})
    out.update(_read_table(path, "search", doc.get("search", {}), search_keys, SEARCH_KEYS))
    return out


def read_build_table(path: Path, name: str, table: dict) -> dict:
    """A table with the keys of ``[build]`` (as fleet.toml's ``[retrain]`` has), as :class:`BuildConfig` fields,
    checked key by key and then as a whole by :class:`BuildConfig` itself; :class:`ConfigError` naming the key.

    >>> read_build_table(Path("/etc/edgeml/fleet.toml"), "retrain", {"data": "postgresql+psycopg://db/plant",
    ...                                                              "max_trials": 3})
    {'data': 'postgresql+psycopg://db/plant', 'max_iter': 3}
    >>> read_build_table(Path("fleet.toml"), "retrain", {"max_trails": 3})
    Traceback (most recent call last):
    ...
    edgeml.errors.ConfigError: fleet.toml: unknown key 'max_trails' in [retrain]; did you mean 'max_trials'?
    """
    known = {k: v for k, v in {**_types(), "max_trials": int}.items() if k not in SEARCH_KEYS.values()}
    checked = _read_table(path, name, table, known, {"max_trials": "max_iter"})
    allowed = {f.name for f in fields(BuildConfig)}
    BuildConfig(**{k: v for k, v in checked.items() if k in allowed})
    return checked


def _read_table(path: Path, name: str, table: dict, known: dict, renamed: dict) -> dict:
    """One table's settings, as :class:`BuildConfig` fields (``renamed`` maps a table key to its field)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: {name} must be a [{name}] table, not {table!r}")
    out = {}
    for key, value in table.items():
        if key not in known:
            elsewhere = "search" if key in SEARCH_KEYS.values() or key in SEARCH_KEYS else "build"
            if elsewhere != name and (key in _types() or key in SEARCH_KEYS or key == "max_trials"):
                raise ConfigError(f"{path}: {key!r} belongs in the [{elsewhere}] table, not [{name}]")
            near = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; known keys: {', '.join(known)}"
            raise ConfigError(f"{path}: unknown key {key!r} in [{name}]{hint}")
        want = _FILE_TYPES.get(known[key], known[key])
        if isinstance(value, bool) and want is not bool or not isinstance(value, want):
            raise ConfigError(f"{path}: [{name}] {key} = {value!r} has the wrong type; expected {_type_name(want)}")
        key = renamed.get(key, key)
        if key in ("drop", "estimators"):
            value = split_list(value)
        if key == "data" and "://" not in str(value) and not str(value).startswith("sqlite:"):  # a file
            value = str(path.parent / value) if not Path(value).is_absolute() else value
        out[key] = value
    return out


def split_list(value) -> tuple[str, ...]:
    """``"a,b"`` or ``["a", "b"]`` as a tuple of names."""
    items = value.split(",") if isinstance(value, str) else value
    return tuple(str(v).strip() for v in items if str(v).strip())


def _type_name(t) -> str:
    ts = t if isinstance(t, tuple) else (t,)
    names = {int: "an integer", float: "a number", str: "a string", list: "a list", bool: "true/false",
             tuple: "a list of names"}
    return " or ".join(names[x] for x in ts)


def resolve(cli: dict, config_path: str | None = None, cwd: Path | None = None) -> BuildConfig:
    """Defaults, overridden by the config file (``--config`` or ``./edgeml.toml``), overridden by flags.

    ``cli`` holds only the flags the user gave (``None`` means not given).
    """
    path = Path(config_path) if config_path else (cwd or Path.cwd()) / CONFIG_FILE
    settings = read_config_file(path) if (config_path or path.is_file()) else {}
    settings.update({k: v for k, v in cli.items() if v is not None and v != ()})
    known = {f.name for f in fields(BuildConfig)}
    return replace(BuildConfig(), **{k: v for k, v in settings.items() if k in known})


__all__ = ["CONFIG_FILE", "SEARCH_KEYS", "TASKS", "BuildConfig", "read_config_file", "resolve", "split_list"]
