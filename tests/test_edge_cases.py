"""Inputs a device or a user will eventually produce: each must give a clear answer, never a traceback,
a wrong number, or lost data."""

from __future__ import annotations

import csv
import json
import queue
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import BIN, build_bundle, run_env, write_csv

from edgeml_runtime import Model, RowError
from edgeml_runtime.settings import SettingsError, resolve_settings
from edgeml_runtime.stream import END, FileSource


def runtime(*args):
    return subprocess.run([str(BIN / "edgeml-runtime"), *map(str, args)], capture_output=True, text=True,
                          env=run_env(), timeout=120)


@pytest.fixture(scope="module")
def na_bundle(tmp_path_factory):
    """A category spelled "NA" (North America) and a number spelled "#N/A" (missing), as Excel writes them."""
    rng = np.random.default_rng(3)
    folder = tmp_path_factory.mktemp("na")
    data = folder / "orders.csv"
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["region", "amount", "late"])
        for i in range(600):
            region = ["EU", "US", "NA"][i % 3]
            amount = "#N/A" if i % 17 == 0 else f"{rng.normal(100, 10):.2f}"
            w.writerow([region, amount, int(region == "NA") if rng.random() > 0.05 else int(region != "NA")])
    build_bundle(folder / "b", data=str(data), label="late", estimators=("lrl2",), max_iter=3)
    return folder / "b", data


def test_na_text_means_the_same_on_host_and_device(na_bundle):
    bundle, data = na_bundle
    m = json.loads((bundle / "manifest.json").read_text())
    inputs = {c["name"]: c for c in m["inputs"]}
    assert "NA" in inputs["region"]["categories"] and inputs["amount"]["kind"] == "numeric"
    assert inputs["amount"]["missing_rate"] > 0
    rows = list(csv.DictReader(data.open()))
    result = Model.load(bundle).predict(rows)  # the raw text, as a device reads the file
    accuracy = np.mean([str(p) == r["late"] for p, r in zip(result.labels, rows, strict=False)])
    assert accuracy > 0.9 and abs(accuracy - m["metrics"]["test"]["accuracy"]) < 0.05


def test_score_refuses_to_overwrite_its_input_and_keeps_outputs_whole(demo_bundle, demo_rows, tmp_path):
    same = tmp_path / "same.csv"
    same.write_bytes(demo_rows.read_bytes())
    r = runtime("score", demo_bundle, "--input", same, "--output", same)
    assert r.returncode == 2 and "is the input file" in r.stderr
    assert same.read_bytes() == demo_rows.read_bytes()
    rows = list(csv.DictReader(demo_rows.open()))
    rows[30]["rpm"] = "fast"
    bad = write_csv(tmp_path / "bad.csv", rows)
    out = tmp_path / "out.csv"
    out.write_text("previous results\n")
    assert runtime("score", demo_bundle, "--input", bad, "--output", out).returncode == 2
    assert out.read_text() == "previous results\n"  # a failed run leaves the old file, not half a new one


def test_header_only_csv_gets_a_header_back(demo_bundle, demo_rows, tmp_path):
    header_only = tmp_path / "h.csv"
    header_only.write_text(demo_rows.read_text().splitlines()[0] + "\n")
    r = runtime("score", demo_bundle, "--input", header_only)
    assert r.returncode == 0 and r.stdout.strip().endswith("prediction,proba_0,proba_1")


def test_row_numbers_ignore_blank_lines_and_fail_names_the_first_bad_row(demo_bundle, demo_rows, tmp_path):
    lines = demo_rows.read_text().splitlines()
    header, rows = lines[0], lines[1:6]
    bad_value = rows[3].replace(rows[3].split(",")[5], "fast", 1)
    text = "\n".join([header, rows[0], "", rows[1], "", rows[2], bad_value, "1,2"]) + "\n"
    f = tmp_path / "blank.csv"
    f.write_text(text)
    r = runtime("score", demo_bundle, "--input", f)
    assert r.returncode == 2 and "row 4, column 'rpm'" in r.stderr
    skipped = runtime("score", demo_bundle, "--input", f, "--on-error", "skip")
    assert "row 4, column 'rpm'" in skipped.stderr and "row 5: has 2 fields" in skipped.stderr


def test_build_force_replaces_only_a_bundle(tmp_path):
    precious = tmp_path / "data"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    from edgeml.errors import ConfigError

    with pytest.raises(ConfigError, match="is not an edgeml bundle"):
        build_bundle(precious, estimators=("lgbm",), max_iter=1, force=True)
    assert (precious / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("value", [10**400, "1e39", float("inf"), "-inf"])
def test_huge_numbers_are_row_errors(demo_bundle, demo_rows, value):
    record = dict(next(csv.DictReader(demo_rows.open())), rpm=value)
    with pytest.raises(RowError, match="not a finite 32-bit number"):
        Model.load(demo_bundle).predict([record])
    assert Model.load(demo_bundle).predict([record, record], on_error="skip").errors[1].row == 2


def test_one_record_as_a_dict_and_one_record_missing_a_column(demo_bundle, demo_rows):
    model = Model.load(demo_bundle)
    record = next(csv.DictReader(demo_rows.open()))
    assert model.predict(record).labels.tolist() == model.predict([record]).labels.tolist()
    typed = {k: (float(v) if k in ("rpm", "torque_nm") else v) for k, v in record.items()}
    assert len(model.predict(typed)) == 1
    lacking = {k: v for k, v in record.items() if k != "rpm"}
    result = model.predict([lacking], on_error="skip")
    assert len(result) == 0 and result.errors[0].column == "rpm" and "no such field" in result.errors[0].reason
    with pytest.raises(ValueError, match="on_error"):
        model.predict([record], on_error="ignore")


def test_tarball_leaves_no_temporary_copies(demo_bundle):
    before = set(Path(tempfile.gettempdir()).glob("edgeml-bundle-*"))
    Model.load(demo_bundle.parent / f"{demo_bundle.name}.tar.gz")
    assert set(Path(tempfile.gettempdir()).glob("edgeml-bundle-*")) == before


def test_stream_survives_bad_bytes_and_sniffs_the_delimiter(tmp_path):
    f = tmp_path / "s.csv"
    f.write_bytes("\ufeffa;b\n1;2\n".encode() + b"\xe9;3\n" + b"5;6\n")
    q = queue.Queue()
    FileSource(str(f), "csv", q, follow=False, stop=threading.Event()).start()
    items = []
    while (item := q.get(timeout=5)) is not END:
        items.append(item)
    assert items[0].record == {"a": "1", "b": "2"} and items[2].record == {"a": "5", "b": "6"}
    assert "not UTF-8" in items[1].error.reason and items[1].row == 2


@pytest.mark.parametrize("flags,message", [({"window_seconds": float("nan")}, "finite"),
                                           ({"broker": "mqtt://[::1"}, None)])
def test_settings_that_cannot_work_are_refused(flags, message):
    env = {"EDGEML_DEVICE_ID": "d", "EDGEML_FLEET": "f", "EDGEML_BROKER": "mqtt://h:1883"}
    if message:
        with pytest.raises(SettingsError, match=message):
            resolve_settings(flags, environ=env)
    else:
        from edgeml_runtime.mqtt import MqttSettings

        with pytest.raises(SettingsError, match="not a valid URL"):
            MqttSettings(flags["broker"])


def test_config_accepts_max_trials(tmp_path):
    from edgeml.config import read_config_file

    f = tmp_path / "edgeml.toml"
    f.write_text("[build]\nmax_trials = 3\n")
    assert read_config_file(f) == {"max_iter": 3}


def test_one_non_utf8_byte_is_one_bad_row(demo_bundle, demo_rows, tmp_path):
    lines = demo_rows.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b",L,", ",é,".encode("latin-1"), 1).replace(b",M,", ",é,".encode("latin-1"), 1)
    f = tmp_path / "latin1.csv"
    f.write_bytes(b"".join(lines))
    r = runtime("score", demo_bundle, "--input", f)
    assert r.returncode == 2 and "row 3: is not UTF-8" in r.stderr and "Traceback" not in r.stderr
    skipped = runtime("score", demo_bundle, "--input", f, "--on-error", "skip")
    assert skipped.returncode == 0 and "scored 49 row(s), skipped 1" in skipped.stderr
    assert len(skipped.stdout.splitlines()) == 1 + 49
