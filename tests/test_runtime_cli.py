"""`edgeml-runtime` as a device runs it: a subprocess, real files, exit codes, no tracebacks."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from conftest import BIN, run_env, write_csv

from edgeml_runtime.bundle import read_manifest


def runtime(*args, stdin: str | None = None):
    return subprocess.run([str(BIN / "edgeml-runtime"), *map(str, args)], input=stdin, capture_output=True,
                          text=True, env=run_env(), timeout=120)


def test_scores_csv_with_prediction_and_probability_columns(demo_bundle, demo_rows, tmp_path):
    out = tmp_path / "scored.csv"
    r = runtime("score", demo_bundle, "--input", demo_rows, "--output", out)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(out.open()))
    header = list(rows[0])
    source_header = next(csv.reader(demo_rows.open()))
    assert header == source_header + ["prediction", "proba_0", "proba_1"]
    assert len(rows) == 50
    decision = read_manifest(demo_bundle).decision  # the bundle's threshold on proba_1 (none: the likelier class)
    cut = decision.threshold if decision is not None else 0.5
    for row in rows:
        p0, p1 = float(row["proba_0"]), float(row["proba_1"])
        assert abs(p0 + p1 - 1) < 1e-5
        assert row["prediction"] == ("1" if p1 > cut else "0")


def test_scores_jsonl_from_stdin(demo_bundle, demo_rows):
    records = list(csv.DictReader(demo_rows.open()))
    text = "".join(json.dumps(r) + "\n" for r in records[:7])
    r = runtime("score", demo_bundle, "--input", "-", "--format", "jsonl", stdin=text)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(lines) == 7 and all("prediction" in x and "proba_1" in x for x in lines)


def test_bad_value_fails_with_row_and_column_and_no_traceback(demo_bundle, demo_rows, tmp_path):
    rows = list(csv.DictReader(demo_rows.open()))
    rows[2]["torque_nm"] = "n/a!"
    bad = write_csv(tmp_path / "bad.csv", rows)
    r = runtime("score", demo_bundle, "--input", bad)
    assert r.returncode == 2
    assert "row 3, column 'torque_nm'" in r.stderr and "'n/a!'" in r.stderr and str(bad) in r.stderr
    assert "Traceback" not in r.stderr

    skipped = runtime("score", demo_bundle, "--input", bad, "--on-error", "skip", "--output", tmp_path / "o.csv")
    assert skipped.returncode == 0, skipped.stderr
    assert "scored 49 row(s), skipped 1" in skipped.stderr and "row 3" in skipped.stderr
    assert len(list(csv.DictReader((tmp_path / "o.csv").open()))) == 49


def test_missing_column_is_named(demo_bundle, demo_rows, tmp_path):
    rows = list(csv.DictReader(demo_rows.open()))
    bad = write_csv(tmp_path / "bad.csv", rows, [c for c in rows[0] if c != "rpm"])
    for on_error in ("fail", "skip"):
        r = runtime("score", demo_bundle, "--input", bad, "--on-error", on_error)
        assert r.returncode == 2 and "no column(s) 'rpm'" in r.stderr and "Traceback" not in r.stderr


def test_extra_column_passes_through(demo_bundle, demo_rows, tmp_path):
    rows = list(csv.DictReader(demo_rows.open()))
    extra = write_csv(tmp_path / "extra.csv", [{"serial": f"S{i}", **r} for i, r in enumerate(rows)])
    r = runtime("score", demo_bundle, "--input", extra)
    assert r.returncode == 0, r.stderr
    assert "'serial' are not model inputs" in r.stderr
    out = list(csv.DictReader(r.stdout.splitlines()))
    assert [o["serial"] for o in out] == [f"S{i}" for i in range(50)]


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_empty_file_is_a_clear_error(demo_bundle, tmp_path, content):
    empty = tmp_path / "empty.csv"
    empty.write_text(content)
    r = runtime("score", demo_bundle, "--input", empty)
    assert r.returncode == 2 and "empty" in r.stderr and "Traceback" not in r.stderr


def test_unparsable_json_line_is_a_row_error(demo_bundle, demo_rows, tmp_path):
    rows = list(csv.DictReader(demo_rows.open()))
    f = tmp_path / "rows.jsonl"
    f.write_text(json.dumps(rows[0]) + "\n{not json\n" + json.dumps(rows[1]) + "\n")
    r = runtime("score", demo_bundle, "--input", f, "--on-error", "skip")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2
    assert "row 2: is not valid JSON" in r.stderr


def test_tampered_bundle_exits_2_naming_the_file(demo_bundle, demo_rows, tmp_path):
    import shutil

    copy = shutil.copytree(demo_bundle, tmp_path / "b")
    with (copy / "model.onnx").open("ab") as f:
        f.write(b"\0")
    r = runtime("score", copy, "--input", demo_rows)
    assert r.returncode == 2 and "model.onnx does not match the manifest" in r.stderr


def test_info_prints_the_model(demo_bundle):
    r = runtime("info", demo_bundle)
    assert r.returncode == 0 and "demo 1" in r.stdout and "model.onnx" in r.stdout
    assert json.loads(runtime("info", demo_bundle, "--json").stdout)["name"] == "demo"


def test_help_teaches(demo_bundle):
    r = runtime("score", "--help")
    assert r.returncode == 0 and "Example" in r.stdout and "--on-error" in r.stdout


ISOLATION = r"""
import sys, json
from edgeml_runtime import Model
m = Model.load(sys.argv[1])
import csv
rows = list(csv.DictReader(open(sys.argv[2])))
m.predict(rows)
heavy = sorted({n.split('.')[0] for n in sys.modules}
               & {'pandas', 'sklearn', 'scipy', 'flaml', 'edgeml', 'lightgbm', 'xgboost', 'skl2onnx', 'onnx',
                  'onnxmltools'})
print(json.dumps(heavy))
"""


def test_runtime_never_imports_host_packages(demo_bundle, demo_rows):
    r = subprocess.run([sys.executable, "-c", ISOLATION, str(demo_bundle), str(demo_rows)], capture_output=True,
                       text=True, env=run_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []
