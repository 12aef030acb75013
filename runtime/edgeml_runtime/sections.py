"""Typed JSON sections: frozen dataclasses read strictly from JSON objects and written back as they were read.

A :class:`Section` declares each field with :func:`key`: the JSON key, the
:class:`Kind` of value it holds, and whether it may be absent.
``from_dict`` refuses a missing key, an unknown key and a value of the wrong
kind with a :class:`~edgeml_runtime.errors.BundleError` that names where
(``manifest.json: artifacts[1].sha256 is missing; rebuild the bundle``).
:mod:`edgeml_runtime.manifest` is made of them.

Example:

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True, kw_only=True)
... class Point(Section):
...     x: int = key(INT)
...     label: str | None = key(STR, optional=True)
>>> Point.from_dict({"x": 1}, "p.json: ").to_dict()
{'x': 1}
>>> Point.from_dict({"x": 1, "y": 2}, "p.json: ")
Traceback (most recent call last):
...
edgeml_runtime.errors.BundleError: p.json: y is not a key this edgeml-runtime knows (the section takes x, label); \
rebuild the bundle, or install the runtime release that matches it
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import cache
from typing import Any, ClassVar

from .errors import BundleError

# --- kinds of value -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """What a key holds: ``read(value, where)`` checks and converts a JSON value, ``write`` gives it back.

    ``schema`` is the same rule as JSON Schema (for ``manifest.schema.json``).
    """

    what: str
    read: Callable[[Any, str], Any]
    write: Callable[[Any], Any] = lambda v: v
    schema: dict = field(default_factory=dict)


def _show(value) -> str:
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an int past Python's digit limit; nesting deeper than repr goes
        text = f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


def shown_key(key) -> str:
    """A JSON key as a message names it: as it is, unless it is long or holds what a terminal would act on."""
    key = str(key)
    return key if len(key) <= 60 and key.isprintable() else _show(key)


def wrong(where: str, value, what: str) -> BundleError:
    return BundleError(f"{where} is {_show(value)}, expected {what}; rebuild the bundle")


def _scalar(what: str, json_type, *types: type) -> Kind:
    def read(v, where):
        if isinstance(v, types) and (bool in types or not isinstance(v, bool)) and not (
                isinstance(v, float) and not math.isfinite(v)):
            return v
        raise wrong(where, v, what)

    return Kind(what, read, schema={"type": json_type})


#: The largest magnitude an integer may have: what fits in int64, as NumPy and the engines hold counts and sizes.
INT_LIMIT = 2**63 - 1

STR = _scalar("a string", "string", str)


def _int(v, where):
    if isinstance(v, int) and not isinstance(v, bool) and -INT_LIMIT <= v <= INT_LIMIT:
        return v
    raise wrong(where, v, "an integer" + (" that fits in 64 bits" if isinstance(v, int) and
                                          not isinstance(v, bool) else ""))


def _number(v, where):
    """A finite number: JSON's ``1e400`` reads as infinity in Python, and an int past float64 cannot be one."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        try:
            if math.isfinite(float(v)):
                return v
        except OverflowError:
            pass
        raise wrong(where, v, "a finite number")
    raise wrong(where, v, "a number")


INT = Kind("an integer", _int, schema={"type": "integer"})
NUMBER = Kind("a number", _number, schema={"type": "number"})
BOOL = _scalar("true or false", "boolean", bool)
LABEL = _scalar("a class label (string, number or boolean)", ["string", "number", "boolean"], str, int, float, bool)
SCALAR = _scalar("a string, number or boolean", ["string", "number", "boolean"], str, int, float, bool)


def nullable(kind: Kind) -> Kind:
    return Kind(f"{kind.what} or null", lambda v, at: None if v is None else kind.read(v, at),
                lambda v: None if v is None else kind.write(v), {"anyOf": [kind.schema, {"type": "null"}]})


def one_of(*choices: str) -> Kind:
    what = "one of " + ", ".join(choices)

    def read(v, where):
        if v in choices and isinstance(v, str):
            return v
        raise wrong(where, v, what)

    return Kind(what, read, schema={"type": "string", "enum": list(choices)})


def matching(pattern: str, what: str) -> Kind:
    compiled = re.compile(pattern)

    def read(v, where):
        if isinstance(v, str) and compiled.fullmatch(v):
            return v
        raise wrong(where, v, what)

    return Kind(what, read, schema={"type": "string", "pattern": f"^{pattern}$"})


def list_of(kind: Kind, *, min_items: int = 0) -> Kind:
    what = f"a list of {kind.what.removeprefix('a ').removeprefix('an ')}" + (
        f" (at least {min_items})" if min_items else "")

    def read(v, where):
        if not isinstance(v, list) or len(v) < min_items:
            raise wrong(where, v, what)
        return tuple(kind.read(x, f"{where}[{i}]") for i, x in enumerate(v))

    schema = {"type": "array", "items": kind.schema, **({"minItems": min_items} if min_items else {})}
    return Kind(what, read, lambda v: [kind.write(x) for x in v], schema)


def mapping_of(kind: Kind) -> Kind:
    """A JSON object with free keys (names of columns, packages, metrics…) and values of one kind.

    A value is named by its key in brackets, as a key may hold dots or spaces:
    ``reference.columns['Machine failure'].edges``.
    """
    what = f"an object of {kind.what.removeprefix('a ').removeprefix('an ')} values"

    def read(v, where):
        if not isinstance(v, dict):
            raise wrong(where, v, what)
        return {str(k): kind.read(x, f"{where}[{_show(str(k))}]") for k, x in v.items()}

    return Kind(what, read, lambda v: {k: kind.write(x) for k, x in v.items()},
                {"type": "object", "additionalProperties": kind.schema})


def exactly(value) -> Kind:
    """The one value a key may hold (a section's tag, such as ``"kind": "numeric"``)."""
    what = repr(value).lower() if isinstance(value, bool) else repr(value)

    def read(v, where):
        if v == value and type(v) is type(value):
            return v
        raise wrong(where, v, what)

    return Kind(what, read, schema={"const": value})


def between(low: float, high: float) -> Kind:
    """A number from ``low`` to ``high``, both included (a share, a rate)."""
    what = f"a number from {low:g} to {high:g}"

    def read(v, where):
        if isinstance(v, int | float) and not isinstance(v, bool) and low <= v <= high:
            return v
        raise wrong(where, v, what)  # NaN compares false: refused too

    return Kind(what, read, schema={"type": "number", "minimum": low, "maximum": high})


def pair(first: Kind, second: Kind) -> Kind:
    """A two-item JSON list, ``[first, second]``; a tuple in Python."""
    what = f"a pair [{first.what}, {second.what}]"

    def read(v, where):
        if not isinstance(v, list) or len(v) != 2:
            raise wrong(where, v, what)
        return first.read(v[0], f"{where}[0]"), second.read(v[1], f"{where}[1]")

    return Kind(what, read, lambda v: [first.write(v[0]), second.write(v[1])],
                {"type": "array", "prefixItems": [first.schema, second.schema], "items": False,
                 "minItems": 2, "maxItems": 2})


SHA256 = matching(r"[0-9a-f]{64}", "a SHA-256 hex digest (64 characters 0-9a-f)")
#: A file of the bundle: a plain name in its folder, never a path. No ``/``, so no ``..`` and nothing absolute;
#: no leading dot, so never the manifest's temporary file; the loader opens it without following a link.
FILE_NAME = Kind("a plain file name in the bundle folder (letters, digits, '_', '-', '.'; not starting with '.')",
                 lambda v, at: _file_name(v, at),
                 schema={"type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$",
                         "not": {"const": "manifest.json"}})
#: A bundle's name: it names folders and archives (``dist/<name>-<N>``), so a safe charset, no path.
BUNDLE_NAME = matching(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}",
                       "a name of letters, digits, '_', '-' and '.', starting with a letter or digit (at most 100)")


_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def _file_name(v, where: str) -> str:
    if isinstance(v, str) and _FILE_NAME.fullmatch(v) and v != "manifest.json":
        return v
    raise wrong(where, v, FILE_NAME.what if v != "manifest.json" else "the name of a file other than the manifest")


def section(cls: type[Section]) -> Kind:
    return Kind("an object", cls.from_dict, lambda v: v.to_dict(), {"$ref": f"#/$defs/{cls.schema_name}"})


def tagged(tag: str, choices: dict[str | bool, type[Section]]) -> Kind:
    """An object that is one of several sections, chosen by the value of its ``tag`` key (a string or a bool).

    Each section in ``choices`` holds its tag as :func:`exactly` its key here,
    so the JSON Schema's ``oneOf`` picks the same one.
    """
    what = "one of " + ", ".join(exactly(t).what for t in choices)

    def read(v, where):
        if not isinstance(v, dict):
            raise wrong(where, v, "an object")
        if tag not in v:
            raise BundleError(f"{join(where, tag)} is missing; rebuild the bundle")
        chosen = [cls for t, cls in choices.items() if v[tag] == t and type(v[tag]) is type(t)]
        if not chosen:
            raise wrong(join(where, tag), v[tag], what)
        return chosen[0].from_dict(v, where)

    return Kind("an object", read, lambda v: v.to_dict(),
                {"oneOf": [{"$ref": f"#/$defs/{cls.schema_name}"} for cls in choices.values()]})


def key(kind: Kind, *, name: str | None = None, optional: bool = False, default=None, factory=None):
    """A section's field: ``name`` is its JSON key (the field's name by default); ``optional`` keys may be absent.

    ``default``/``factory`` only make the dataclass easier to construct in
    code; ``from_dict`` still requires every key that is not ``optional``.
    """
    meta = {"kind": kind, "key": name, "optional": optional}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta) if optional or default is not None else field(metadata=meta)


# --- sections -----------------------------------------------------------------------------------


def join(where: str, key_: str) -> str:
    """``manifest.json: artifacts[1]`` + ``sha256`` -> ``manifest.json: artifacts[1].sha256``."""
    return f"{where}{key_}" if where.endswith(": ") else f"{where}.{key_}"


@dataclass(frozen=True)
class _Key:
    attr: str
    key: str
    kind: Kind
    optional: bool


class Section:
    """A part of the manifest: read strictly from a JSON object, written back as one.

    A rule across keys goes in ``__post_init__``, raising a
    :class:`~edgeml_runtime.errors.BundleError` whose message starts with the
    key it is about (``"shares has 3 values, …"``): ``from_dict`` puts where
    the section is in front of it.
    """

    #: The section's name in the JSON Schema's ``$defs``.
    schema_name: ClassVar[str] = ""
    #: Keys ``from_dict`` lets a draft leave out but a finished bundle has: the JSON Schema requires them.
    bundle_requires: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def keys(cls) -> tuple[_Key, ...]:
        return _keys(cls)

    @classmethod
    def from_dict(cls, d, where: str = ""):
        where = where or cls.schema_name
        if not isinstance(d, dict):
            raise wrong(where, d, "an object")
        spec = cls.keys()
        names = [k.key for k in spec]
        unknown = [k for k in d if k not in names]
        if unknown:
            raise BundleError(f"{join(where, shown_key(unknown[0]))} is not a key this edgeml-runtime knows (the "
                              f"section takes {', '.join(names)}); rebuild the bundle, or install the runtime release "
                              "that matches it")
        values = {}
        for k in spec:
            if k.key in d:
                values[k.attr] = k.kind.read(d[k.key], join(where, k.key))
            elif not k.optional:
                raise BundleError(f"{join(where, k.key)} is missing; rebuild the bundle")
        try:
            return cls(**values)
        except BundleError as exc:  # a rule across keys (__post_init__), its message starting with the key
            raise BundleError(join(where, str(exc))) from None

    @classmethod
    def json_schema(cls) -> dict:
        """The section as a JSON Schema object (draft 2020-12): its keys, which are required, nothing else."""
        spec = cls.keys()
        required = [k.key for k in spec if not k.optional or k.key in cls.bundle_requires]
        return {"type": "object", "description": " ".join((cls.__doc__ or "").split("\n\n")[0].split()),
                "properties": {k.key: k.kind.schema for k in spec}, "required": required,
                "additionalProperties": False}

    def to_dict(self) -> dict:
        out = {}
        for k in self.keys():
            value = getattr(self, k.attr)
            if not (k.optional and value is None):
                out[k.key] = k.kind.write(value)
        return out


@cache
def _keys(cls) -> tuple[_Key, ...]:
    return tuple(_Key(f.name, f.metadata["key"] or f.name, f.metadata["kind"], f.metadata["optional"])
                 for f in fields(cls) if "kind" in f.metadata)
