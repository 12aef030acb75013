"""The JSON Schemas (draft 2020-12) of every message, shipped inside the package.

They live in ``edgeml_runtime/schemas/`` (package data, so an installed
runtime carries them), with one documented example of each kind in
``schemas/examples/``. The runtime does not validate with them (that would
need ``jsonschema`` on the device); the tests and the fleet controller do.

Example:

>>> schema("birth")["properties"]["format_version"]
{'const': 7}
>>> sorted(examples())
['announcement', 'birth', 'death', 'death-lost', 'drift', 'prediction', 'status', 'update', 'update-refused']
"""

from __future__ import annotations

import json
from importlib import resources

from ..errors import ProtocolError

#: The schema of each message kind, by file stem (``drift`` → ``drift.schema.json``).
SCHEMA_KINDS = ("announcement", "birth", "death", "drift", "prediction", "status", "update")


def _folder():
    return resources.files("edgeml_runtime") / "schemas"


def schema(kind: str) -> dict:
    """The JSON Schema of one message kind (``predictions`` messages use ``prediction``)."""
    kind = "prediction" if kind == "predictions" else kind
    if kind not in SCHEMA_KINDS:
        raise ProtocolError(f"no JSON Schema for {kind!r}; the schemas are {', '.join(SCHEMA_KINDS)}")
    return json.loads((_folder() / f"{kind}.schema.json").read_text(encoding="utf-8"))


def examples() -> dict[str, dict]:
    """The documented example messages, by name (``death-lost``); the kind is the part before the first ``-``."""
    folder = _folder() / "examples"
    return {f.name.removesuffix(".json"): json.loads(f.read_text(encoding="utf-8"))
            for f in sorted(folder.iterdir(), key=lambda f: f.name) if f.name.endswith(".json")}
