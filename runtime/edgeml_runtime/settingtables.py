"""The machinery of the device's settings: keys, the sections of dataclasses they fill, a table per command, and
where values come from (flags, the environment, the TOML config file, systemd credentials, defaults).

:mod:`.settings` declares the tables (``[run]``, ``[serve]``, ``[update]``);
this module reads them: :func:`resolve_settings` takes defaults < environment
< config file < flags and builds the command's settings, each part checked by
the dataclass that owns it. A command also reads the tables named in
:data:`_SHARED` before its own (``run`` and ``serve`` take the ``update_*``
keys of ``[update]``). Unknown tables and keys are errors that name the file
and the key; a config file holding a secret that every user may read is
refused.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import SettingsError
from .tomlfile import exposure, read_toml

CONFIG_ENV = "EDGEML_RUNTIME_CONFIG"
#: The systemd credential that holds the MQTT password (in ``$CREDENTIALS_DIRECTORY``).
PASSWORD_CREDENTIAL = "mqtt_password"
#: systemd credentials (in ``$CREDENTIALS_DIRECTORY``) -> the secret key and the file key they stand in for,
#: when neither is given: ``LoadCredential=mqtt_password:…`` for run and serve, ``LoadCredential=token:…`` for serve,
#: ``LoadCredential=update_token:…`` (the controller's token) for updates.
CREDENTIALS = {PASSWORD_CREDENTIAL: ("mqtt_password", "mqtt_password_file"), "token": ("token", "token_file"),
               "update_token": ("update_token", "update_token_file")}
#: Keys whose value is a secret: a config file holding one must not be readable by every user.
SECRET_KEYS = ("mqtt_password", "token")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_KINDS = {str: "a text", int: "a whole number", float: "a number", bool: "true or false"}


@dataclass(frozen=True)
class Key:
    """One setting: its key (flag ``--key``, variable ``EDGEML_KEY``), the dataclass ``field`` it fills, its type.

    A dotted ``field`` (``rule.min_rows``) fills a field of a dataclass the
    owner holds (``DriftSettings.rule``, a ``VerdictRule``).
    """

    name: str
    kind: type
    help: str
    field: str = ""

    def __post_init__(self):
        object.__setattr__(self, "field", self.field or self.name)


@dataclass(frozen=True)
class Section:
    """The keys one dataclass owns; its defaults are the settings' defaults, its checks the settings' checks."""

    owner: type
    keys: tuple[Key, ...]
    #: When none of its keys is given, the part is None rather than the owner's defaults (MQTT without a broker).
    optional: bool = False

    def _field(self, name: str) -> dataclasses.Field:
        return {f.name: f for f in dataclasses.fields(self.owner)}[name]

    def default(self, key: Key):
        part, _, name = key.field.rpartition(".")
        if part:
            return getattr(self._field(part).default, name)
        f = self._field(name)
        return None if f.default is dataclasses.MISSING else f.default

    def required(self, key: Key) -> bool:
        if "." in key.field:
            return False
        f = self._field(key.field)
        return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING

    def build(self, values: Mapping[str, object]):
        """The owner from ``values`` (field → value); dotted fields are gathered into the part they name."""
        flat: dict = {}
        parts: dict[str, dict] = {}
        for name, value in values.items():
            part, _, sub = name.rpartition(".")
            (parts.setdefault(part, {}) if part else flat)[sub] = value
        for part, sub in parts.items():
            flat[part] = type(self._field(part).default)(**sub)
        return self.owner(**flat)


@dataclass(frozen=True)
class Table:
    """A command's table: the composite dataclass it builds (``settings``), one :class:`Section` per field."""

    name: str
    settings: type
    sections: Mapping[str, Section]

    @property
    def keys(self) -> dict[str, tuple[Section, Key]]:
        return {k.name: (section, k) for section in self.sections.values() for k in section.keys}

    def build(self, given: Mapping[str, tuple[object, str]]) -> object:
        """The composite settings from ``given`` (key → (value, source)); the owners validate each part."""
        parts = {}
        for attr, section in self.sections.items():
            if section.optional and not any(k.name in given for k in section.keys):
                parts[attr] = None
                continue
            for k in section.keys:
                if section.required(k) and k.name not in given:
                    raise SettingsError(f"no {k.name.replace('_', ' ')} given: pass {flag_name(k.name)}, set "
                                        f"{env_name(k.name)}, or put {k.name} in the [{self.name}] table of the "
                                        "config file")
            try:
                parts[attr] = section.build({k.field: given[k.name][0] for k in section.keys if k.name in given})
            except SettingsError as exc:
                # an owner names its own field; a part's field is named without the part (``min_rows``)
                names = {k.field.rpartition(".")[2]: k.name for k in section.keys}
                sources = {k.name: given[k.name][1] if k.name in given else "the default" for k in section.keys}
                raise exc.located(names, sources) from None
        return self.settings(**parts)


#: Command name -> its table; the TOML config file has one table per command.
TABLES: dict[str, Table] = {}


def register_table(table: Table) -> Table:
    """Add a command's table; a name already taken, or a key twice in one table, is refused."""
    if table.name in TABLES:
        raise ValueError(f"settings table [{table.name}] is already registered; register the new one under "
                         "another name")
    names = [k.name for s in table.sections.values() for k in s.keys]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"settings table [{table.name}] has the key(s) {twice} in more than one section")
    TABLES[table.name] = table
    return table


def env_name(key: str) -> str:
    return "EDGEML_" + key.upper()


def flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def default_text(table: Table, key: str):
    """The default of ``key``, as the help text shows it."""
    section, k = table.keys[key]
    return section.default(k)


def read_config(path: Path, command: str = "run") -> dict[str, tuple[object, str]]:
    """The ``[command]`` table of a config file: key -> (value, source); every registered table is checked."""
    doc = read_toml(path, SettingsError, "runtime config file")
    secret = next((f"[{t}] {k}" for t, body in doc.items() if isinstance(body, dict) for k in body
                   if k in SECRET_KEYS), None)
    if secret and exposure(path):
        raise SettingsError(f"{path}: holds {secret} and {exposure(path)}; or move the password to a file of its "
                            "own (mqtt_password_file) or a systemd credential")
    for name, body in doc.items():
        if name not in TABLES:
            near = difflib.get_close_matches(name, TABLES, n=1)
            hint = f"did you mean [{near[0]}]? " if near else ""
            raise SettingsError(f"{path}: unknown table or key {name!r}; {hint}settings go in a table per command: "
                                f"{', '.join(f'[{t}]' for t in TABLES)}")
        if not isinstance(body, dict):
            raise SettingsError(f"{path}: {name} = {body!r} is not a table; write [{name}] and its keys below it")
        for key in body:
            _known(TABLES[name], key, f"file {path}, [{name}]")
    table = TABLES[command]
    out = {}
    for name in _SHARED.get(command, ()) + (command,):  # a later table wins
        for key, value in doc.get(name, {}).items():
            if name == command or key in table.keys:
                source = f"file {path}, [{name}] {key}"
                out[key] = (_typed(table, key, value, source), source)
    return out


#: The tables a command also reads, before its own: ``run`` and ``serve`` take the ``update_*`` keys of
#: ``[update]``; ``edgeml-runtime update`` takes the device's id, fleet and ``update_*`` keys of ``[run]``.
_SHARED = {"run": ("update",), "serve": ("update",), "update": ("run",)}


def _known(table: Table, key: str, where: str) -> None:
    if key not in table.keys:
        near = difflib.get_close_matches(key, table.keys, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else f"; the keys are {', '.join(table.keys)}"
        raise SettingsError(f"{where}: unknown setting {key!r}{hint}")


def _typed(table: Table, key: str, value, source: str):
    """``value`` as the key's type (an int is a float where a float is wanted); refused with its source."""
    _known(table, key, source)
    kind = table.keys[key][1].kind
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise SettingsError(key=key, value=value, allowed=f"has the wrong type; expected {_KINDS[kind]}",
                            fix=f"give {key} as {_KINDS[kind]}", sources={key: source})
    return value


def _from_env(table: Table, environ: Mapping[str, str]) -> dict[str, tuple[object, str]]:
    out = {}
    for key, (_, k) in table.keys.items():
        name = env_name(key)
        if name not in environ:
            continue
        raw, source = environ[name], f"environment variable {name}"
        try:
            if k.kind is bool:
                if raw.strip().lower() not in _TRUE | _FALSE:
                    raise ValueError
                value = raw.strip().lower() in _TRUE
            else:
                value = k.kind(raw)
        except ValueError:
            raise SettingsError(key=key, value=raw, allowed=f"is not {_KINDS[k.kind]}",
                                fix=f"set {name} to {_KINDS[k.kind]}", sources={key: source}) from None
        out[key] = (value, source)
    return out


def resolve_settings(flags: Mapping, config: str | os.PathLike | None = None,
                     environ: Mapping[str, str] | None = None, *, command: str = "run"):
    """Defaults < environment < config file < flags, built into the command's settings (``AgentSettings`` for run).

    ``flags`` holds only what was given (None = not given). ``config`` is the
    config file, else ``$EDGEML_RUNTIME_CONFIG``, else none.
    """
    from . import settings  # noqa: F401 - declares (registers) the tables

    table = TABLES[command]
    environ = os.environ if environ is None else environ
    given = _from_env(table, environ)
    path = config or environ.get(CONFIG_ENV)
    if path:
        given.update(read_config(Path(path), command))
    for key, value in flags.items():
        if value is not None:
            source = f"flag {flag_name(key)}"
            given[key] = (_typed(table, key, value, source), source)
    credentials = Path(environ.get("CREDENTIALS_DIRECTORY") or "/nonexistent")
    for name, (secret, key) in CREDENTIALS.items():
        if key in table.keys and not {secret, key} & set(given) and (credentials / name).is_file():
            given[key] = (str(credentials / name), f"systemd credential {name}")
    return table.build(given)
