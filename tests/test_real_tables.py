"""Every shared real table, and variants derived from it, builds; the device scores every raw row of it.

For each case of :mod:`real_tables` (``../shared/datasets``; skipped when the
folder is absent): the build infers what the case expects of its columns
(kind, decimal mark, date order; left-out columns; notices), and then,
independently of the build's own checks,

- ``edgeml-runtime score`` reads the very file the build read and scores every
  row, none lost, none refused;
- host and device agree on every column name, and on every value: the host's
  reading of the file (pandas, then the runtime's encoder) and the device's
  (its CSV reader, then the same encoder) give the same model inputs, row by
  row, for every column the model takes.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from conftest import BUILT
from real_tables import CASES, Case

from edgeml.build import Reporter, build
from edgeml.config import BuildConfig
from edgeml.data.ingest import read_table
from edgeml_runtime.features import FeatureEncoder, scalar_reader
from edgeml_runtime.headers import clean_name
from edgeml_runtime.manifest import Manifest
from edgeml_runtime.records import read_chunks

pytestmark = pytest.mark.slow


class Notices(Reporter):
    """Keeps what the build tells the user."""

    def __init__(self):
        self.notices: list[str] = []

    def notice(self, text: str) -> None:
        self.notices.append(text)


@pytest.fixture(scope="module")
def built(datasets, tmp_path_factory):
    """Each case built once (cheaply: three trials of one learner), by case name: (data file, bundle, notices)."""
    folder = tmp_path_factory.mktemp("real-tables")
    done = {}

    def get(case: Case):
        if case.name not in done:
            data = case.write(datasets, folder)
            out = folder / f"{case.name}-bundle"
            told = Notices()
            BUILT.append(out)
            build(BuildConfig(data=str(data), label=case.label, drop=case.drop, target="x86-64", estimators=("lgbm",),
                              max_iter=3, seed=0, out=str(out)), told)
            done[case.name] = (data, out, told.notices)
        return done[case.name]

    return get


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_build_reads_each_column_as_expected(built, case):
    data, out, notices = built(case)
    manifest = Manifest.from_dict(json.loads((out / "manifest.json").read_text()))
    columns = {c.name: c for c in manifest.schema.columns}
    for name, (kind, how) in case.expect.items():
        column = columns.get(clean_name(name))  # as the header rule names it
        assert column is not None, f"{name!r} is not an input; dropped: {manifest.dropped}"
        assert column.kind == kind, name
        if kind == "numeric":
            mark = column.number_format.decimal if column.number_format else None
            assert mark == how or (how == "*" and mark is not None), name
        if kind == "datetime":
            assert column.date_order == (None if how is None else how), name
    left_out = {d.name: d.reason for d in manifest.dropped}
    for name, word in case.dropped.items():
        assert word in left_out.get(name, ""), (name, left_out)
    for name, readings in case.reads.items():
        name = clean_name(name)
        read = scalar_reader(columns[name])
        for text, want in readings.items():
            got = read(text)
            if isinstance(want, dict):  # a datetime: the parts it has, by name
                named = dict(zip(columns[name].parts, got, strict=True))
                assert {p: named[p] for p in want if p in named} == {p: v for p, v in want.items() if p in named}
                assert "day" in named, (name, named)
            else:
                assert (math.isnan(got) if want is None else got == pytest.approx(want)), (name, text, got)
    said = " | ".join(notices).lower()
    for fragment in case.notices:
        assert fragment in said, (fragment, notices)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_device_scores_every_raw_row(built, case, tmp_path):
    data, out, _ = built(case)
    scored = tmp_path / "scored.csv"
    run = subprocess.run([sys.executable, "-m", "edgeml_runtime.cli", "score", str(out), "--input", str(data),
                          "--output", str(scored)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    with data.open(newline="", encoding="utf-8-sig") as f:
        rows = sum(1 for _ in csv.reader(f, delimiter=case.delimiter)) - 1
    with scored.open(newline="") as f:
        assert sum(1 for _ in csv.reader(f)) - 1 == rows


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_host_and_device_read_the_same_names_and_values(built, case):
    data, out, _ = built(case)
    schema = Manifest.from_dict(json.loads((out / "manifest.json").read_text())).schema
    frame = read_table(data).frame
    with data.open("rb") as f:  # as the device reads it: bytes, its own decoding
        chunks = list(read_chunks(f, "csv", chunk_rows=100_000))
    assert len(chunks) == 1 and chunks[0].columns == list(frame.columns)
    records = chunks[0].records
    assert len(records) == len(frame)
    encoder = FeatureEncoder(schema)
    host, host_errors = encoder.encode({c: frame[c].tolist() for c in schema.names}, len(frame))
    device, device_errors = encoder.encode({c: [r[c] for r in records] for c in schema.names}, len(records))
    assert not host_errors and not device_errors
    for feature in schema.features:
        np.testing.assert_array_equal(host[feature], device[feature], err_msg=feature)
