"""Sample rows stored in every bundle, with what each artifact computes on them (``samples.json``).

At build time :func:`store_samples` picks at least :data:`SAMPLE_ROWS` rows
from the test split (:mod:`edgeml.verify.cover`: every class, every category,
missing values, both ends of each range), or draws them from the drift
reference (:mod:`edgeml.verify.synthetic`) when the data must not leave the
workstation. It scores them through ``edgeml_runtime`` with every shipped
artifact and writes the raw rows, as a device receives them, with each
artifact's outputs. The layout, its reader, the scoring and the comparison are
the runtime's (:mod:`edgeml_runtime.samples`): ``edgeml verify`` and a
device's self-test read what this writes. The layout is documented in
docs/bundle.md.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from edgeml.data.prepare import Prepared
from edgeml.verify.cover import device_values, pick_rows
from edgeml.verify.synthetic import synthetic_columns
from edgeml_runtime.bundle import sha256_file
from edgeml_runtime.manifest import Manifest
from edgeml_runtime.samples import SAMPLES, Samples, score_rows
from edgeml_runtime.schema import InputSchema

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


def _synthetic(stage: Path, manifest: Manifest, data: Prepared, seed: int) -> tuple[dict, list]:
    """Rows drawn from the reference, none equal to a training row; the labels the first artifact gives them."""
    schema = data.inputs
    # The reference has one entry per input (the manifest checks that on reading), as plain JSON.
    drawn = synthetic_columns(manifest.reference.to_dict()["columns"], schema, SYNTHETIC_POOL, seed)
    train = data.split.train
    seen = set(_device_rows({n: [json_value(v) for v in train[n].tolist()] for n in schema.names}, schema))
    keep = [i for i, row in enumerate(_device_rows(drawn, schema)) if row not in seen]
    columns = {name: [values[i] for i in keep] for name, values in drawn.items()}
    if data.task != "classification":
        return columns, None
    return columns, list(score_rows(stage, manifest.artifacts[0].path, columns, draft=True).labels)


def _test_columns(data: Prepared) -> tuple[dict, list | None]:
    """The test split's raw values per input column, as JSON holds them, and its labels."""
    test = data.split.test
    columns = {name: [json_value(v) for v in test[name].tolist()] for name in data.inputs.names}
    return columns, ([data.classes[i] for i in data.y["test"]] if data.task == "classification" else None)


def _pick(data: Prepared, columns: dict, labels: list | None, seed: int) -> tuple[dict, ...]:
    picked = pick_rows(columns, data.inputs, labels, SAMPLE_ROWS, seed)
    return tuple({name: columns[name][i] for name in data.inputs.names} for i in picked)


def pick_samples(data: Prepared, seed: int) -> tuple[dict, ...]:
    """The sample rows a build stores, raw as JSON holds them: at least :data:`SAMPLE_ROWS` test rows covering
    every class, category, missing value and range end (:func:`~edgeml.verify.cover.pick_rows`)."""
    return _pick(data, *_test_columns(data), seed)


def store_samples(stage: Path, manifest: Manifest, data: Prepared, *, seed: int, synthetic: bool = False) -> dict:
    """Pick the sample rows, score them with every artifact, write :data:`SAMPLES`; the manifest's section."""
    columns, labels = _synthetic(stage, manifest, data, seed) if synthetic else _test_columns(data)
    rows = _pick(data, columns, labels, seed)
    expected = {a.path: score_rows(stage, a.path, rows, draft=True) for a in manifest.artifacts}
    samples = Samples("synthetic" if synthetic else "test", tuple(data.inputs.names), rows, expected, seed)
    path = stage / SAMPLES
    path.write_text(_dumps(samples.to_dict()), encoding="utf-8")
    return {"path": SAMPLES, "bytes": path.stat().st_size, "sha256": sha256_file(path), "rows": len(rows),
            "source": samples.source}


__all__ = ["SAMPLE_ROWS", "json_value", "pick_samples", "store_samples"]
