"""Sample rows stored in every bundle, with what each artifact computes on them (``samples.json``).

At build time :func:`store_samples` picks at least :data:`SAMPLE_ROWS` rows
from the test split (:mod:`edgeml.verify.cover`: every class, every category,
missing values, both ends of each range), or draws them from the drift
reference (:mod:`edgeml.verify.synthetic`) when the data must not leave the
workstation. It scores them through ``edgeml_runtime`` with every shipped
artifact and writes the raw rows, as a device receives them, with each
artifact's outputs. ``edgeml verify`` scores them again and compares; devices
will self-test with them. The layout is documented in docs/bundle.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from edgeml.data.prepare import Prepared
from edgeml.errors import VerificationError
from edgeml.verify.cover import device_values, pick_rows
from edgeml.verify.synthetic import synthetic_columns
from edgeml_runtime import Model
from edgeml_runtime.bundle import sha256_file
from edgeml_runtime.schema import InputSchema

SAMPLES = "samples.json"
#: The layout of samples.json.
SAMPLES_FORMAT = 1
#: How many rows a bundle carries at least (all of the test split when it has fewer).
SAMPLE_ROWS = 50
#: Random rows drawn from the reference before the cover picks among them.
SYNTHETIC_POOL = 1000


def json_value(v):
    """A raw cell as JSON holds it: numbers, text, booleans, or None for anything missing.

    >>> json_value(np.int64(3)), json_value(float("nan")), json_value(pd.NA), json_value(pd.Timestamp("2024-01-02"))
    (3, None, None, '2024-01-02T00:00:00')
    """
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else float(v)
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    return str(v)


@dataclass(frozen=True)
class Samples:
    """The contents of ``samples.json``."""

    source: str  #: "test" or "synthetic"
    columns: tuple[str, ...]
    rows: tuple[dict, ...]
    expected: dict  #: artifact path -> {"labels", "probabilities"} or {"values"}

    def to_dict(self, seed: int) -> dict:
        return {"format": SAMPLES_FORMAT, "source": self.source, "seed": seed, "columns": list(self.columns),
                "rows": list(self.rows), "expected": self.expected}

    @classmethod
    def from_dict(cls, doc, where: str = SAMPLES) -> Samples:
        """Checked for shape; a malformed file is a :class:`VerificationError` naming what is wrong."""
        if not isinstance(doc, dict) or doc.get("format") != SAMPLES_FORMAT:
            raise VerificationError(f"{where} is not a samples file of format {SAMPLES_FORMAT}; rebuild the bundle")
        try:
            columns, rows, expected = tuple(doc["columns"]), tuple(doc["rows"]), dict(doc["expected"])
            source = doc["source"]
        except (KeyError, TypeError) as exc:
            raise VerificationError(f"{where} lacks or misshapes {exc}; rebuild the bundle") from None
        bad = [i for i, r in enumerate(rows) if not isinstance(r, dict) or set(columns) - set(r)]
        if bad:
            raise VerificationError(f"{where}: row {bad[0]} is not an object with every column "
                                    f"({', '.join(columns)}); rebuild the bundle")
        return cls(source, columns, rows, expected)


def score_rows(folder: Path, artifact: str, rows: Sequence[dict], columns: Sequence[str]) -> dict:
    """What ``artifact`` computes on ``rows`` through ``edgeml_runtime``, as samples.json stores it."""
    model = Model.load(folder, artifact=artifact)
    result = model.predict({name: [r[name] for r in rows] for name in columns})
    if result.probabilities is None:
        return {"values": _float32(result.labels)}
    return {"labels": [json_value(v) for v in result.labels],
            "probabilities": [_float32(row) for row in np.asarray(result.probabilities)]}


def _float32(values) -> list[float]:
    """float32 values in their shortest decimal form (it reads back as the same float32)."""
    return [float(str(v)) for v in np.asarray(values, dtype=np.float32).ravel()]


def _dumps(doc: dict) -> str:
    """JSON with one line per row and per artifact's outputs: short, and easy to read and diff."""
    def line(v) -> str:
        return json.dumps(v, ensure_ascii=False)

    head = ",\n".join(f" {line(k)}: {line(doc[k])}" for k in ("format", "source", "seed", "columns"))
    rows = ",\n".join(f"  {line(r)}" for r in doc["rows"])
    expected = ",\n".join(f"  {line(k)}: {line(v)}" for k, v in doc["expected"].items())
    return f'{{\n{head},\n "rows": [\n{rows}\n ],\n "expected": {{\n{expected}\n }}\n}}\n'


def _device_rows(columns: dict, schema: InputSchema) -> list[tuple]:
    """Each row as the tuple of values a device reads (numbers in float32, missing as None)."""
    parts = []
    for column in schema.columns:
        values = device_values(column, columns[column.name])
        if column.kind in ("numeric", "boolean"):
            values = [None if v is None or math.isnan(v) else float(np.float32(v)) for v in values]
        parts.append(values)
    return list(zip(*parts, strict=True))


def _synthetic(stage: Path, manifest: dict, data: Prepared, seed: int) -> tuple[dict, list]:
    """Rows drawn from the reference, none equal to a training row; the labels the first artifact gives them."""
    schema = data.inputs
    drawn = synthetic_columns(manifest["reference"], schema, SYNTHETIC_POOL, seed)
    train = data.split.train
    seen = set(_device_rows({n: [json_value(v) for v in train[n].tolist()] for n in schema.names}, schema))
    keep = [i for i, row in enumerate(_device_rows(drawn, schema)) if row not in seen]
    columns = {name: [values[i] for i in keep] for name, values in drawn.items()}
    if data.task != "classification":
        return columns, None
    rows = [{name: columns[name][i] for name in schema.names} for i in range(len(keep))]
    return columns, score_rows(stage, manifest["artifacts"][0]["path"], rows, schema.names)["labels"]


def store_samples(stage: Path, manifest: dict, data: Prepared, *, seed: int, synthetic: bool = False) -> dict:
    """Pick the sample rows, score them with every artifact, write :data:`SAMPLES`; the manifest's section."""
    schema = data.inputs
    if synthetic:
        columns, labels = _synthetic(stage, manifest, data, seed)
    else:
        test = data.split.test
        columns = {name: [json_value(v) for v in test[name].tolist()] for name in schema.names}
        labels = [data.classes[i] for i in data.y["test"]] if data.task == "classification" else None
    picked = pick_rows(columns, schema, labels, SAMPLE_ROWS, seed)
    rows = tuple({name: columns[name][i] for name in schema.names} for i in picked)
    expected = {a["path"]: score_rows(stage, a["path"], rows, schema.names) for a in manifest["artifacts"]}
    samples = Samples("synthetic" if synthetic else "test", tuple(schema.names), rows, expected)
    path = stage / SAMPLES
    path.write_text(_dumps(samples.to_dict(seed)), encoding="utf-8")
    return {"path": SAMPLES, "bytes": path.stat().st_size, "sha256": sha256_file(path), "rows": len(rows),
            "source": samples.source}


def read_samples(folder: Path, section: dict) -> Samples:
    """The bundle's samples file, as the manifest's ``samples`` section names it."""
    path = Path(folder) / section["path"]
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise VerificationError(f"{path} cannot be read as JSON ({exc}); copy the bundle again") from None
    return Samples.from_dict(doc, where=str(path))


__all__ = ["SAMPLES", "SAMPLE_ROWS", "Samples", "json_value", "read_samples", "score_rows", "store_samples"]
