"""The one rule for CSV header cells (``edgeml_runtime.headers``): the host and the device name a header line alike.

A build names its inputs from the training file's header; ``edgeml-runtime
score`` of a file with the same header line must find every one of them.
"""

from __future__ import annotations

import csv
import io
import subprocess

import pandas as pd
import pytest
from conftest import BIN, BUILT, run_env

from edgeml.data.ingest import read_table
from edgeml.data.schema import infer_schema
from edgeml.errors import DataError
from edgeml_runtime.headers import clean_name, read_header
from edgeml_runtime.records import read_chunks
from edgeml_runtime.stream import LineParser


@pytest.mark.parametrize(("cells", "names"), [
    (["", "a"], ("column_1", "a")),  # a DataFrame index written out
    (["a", "", ""], ("a", "column_2", "column_3")),  # counted from 1, as a spreadsheet counts columns
    (["a", "a", "a"], ("a", "a_2", "a_3")),
    (["x", "x", "x_2"], ("x", "x_3", "x_2")),  # a number never takes a name the header spells
    (["column_2", ""], ("column_2", "column_2_2")),
    ([" temp [C] ", "\tok"], ("temp [C]", "ok")),  # padded
    (["Total years of\nexperience", "Position\r\n "], ("Total years of experience", "Position")),  # line breaks
    (["Water  (component 4)", "a\u00a0b"], ("Water (component 4)", "a b")),  # inner runs, a no-break space
    (["\ufeffid", "v"], ("id", "v")),  # a byte-order mark left in a cell
    ([" a", "a "], ("a", "a_2")),  # the same name once tidied
    ([" ", "\t"], ("column_1", "column_2")),  # whitespace only is empty
])
def test_the_rule(cells, names):
    assert read_header(cells).names == names


def test_notes_name_every_renamed_cell_and_only_those():
    header = read_header(["", "kept", "kept", " padded", "Temp\n[K]"])
    assert header.unnamed == ("column_1",)
    assert header.notes == (
        "header cell 1 is empty: the column is named 'column_1'",
        "header cell 3 repeats 'kept' (cell 2): the column is named 'kept_2'",
        "header cell 4 ' padded' is read as 'padded' (whitespace tidied)",
        "header cell 5 'Temp\\n[K]' is read as 'Temp [K]' (whitespace tidied)",
    )
    assert read_header(["a", "b [C]"]).notes == ()


def _host(path) -> list[str]:
    return list(read_table(path).frame.columns)


def _device(path) -> list[str]:
    with open(path, "rb") as f:
        return next(iter(read_chunks(f, "csv"))).columns


def _run(line: bytes) -> list[str]:
    parser = LineParser("csv")
    assert parser.parse(line) is None  # the header is no row
    return parser.header


@pytest.mark.parametrize("header", [
    b",a,b", b"a,a,b", b"\xef\xbb\xbf,x,x_2,x", b" a , a ,b", b"a;;a", b"a\t\tb", b'"a\tb",""," c "',
    b'"Total years of\nexperience",b,', b'"x\r\n",x,"x_2"', b'a;b;Strength(MPa, megapascals)',
    b'temp, C\tok\tsite, name',
])
def test_host_and_device_name_the_same_header_line_alike(tmp_path, header):
    sep = b";" if b";" in header else (b"\t" if header.count(b"\t") > 1 or b", C" in header else b",")
    width = len(next(csv.reader(io.StringIO(header.decode("utf-8-sig")), delimiter=sep.decode())))
    path = tmp_path / "rows.csv"
    path.write_bytes(header + b"\n" + sep.join([b"1"] * width) + b"\n" + sep.join([b"2"] * width) + b"\n")
    host = _host(path)
    assert host == _device(path) and len(host) == width  # the same delimiter, decided from the header alone
    assert len(set(host)) == len(host) and all(n and n == clean_name(n) for n in host)
    if b"\n" not in header:  # run reads a record from one line
        assert _run(header + b"\n") == host


def test_a_real_survey_header_is_named_alike(datasets, tmp_path):
    """it-salary-2020.csv's header pads 'Position '; a copy whose cells wrap onto a second line, as a spreadsheet
    writes wrapped header text, is named alike too."""
    path = datasets / "it-salary-2020.csv"
    raw = next(csv.reader(path.open(encoding="utf-8-sig", newline="")))
    assert "Position " in raw
    host = _host(path)
    assert host == _device(path) and "Position" in host and len(host) == len(raw)
    wrapped = tmp_path / "wrapped.csv"
    with path.open(encoding="utf-8-sig", newline="") as src, wrapped.open("w", encoding="utf-8", newline="") as dst:
        rows = csv.reader(src)
        writer = csv.writer(dst)
        writer.writerow([c.replace(" ", "\n", 1) for c in next(rows)])
        writer.writerows(rows)
    assert _host(wrapped) == _device(wrapped) == host


def test_options_find_a_column_as_the_user_sees_it(datasets):
    """concrete.csv's label ends in a space and a column name has a double space: typed as seen, both are found."""
    table = read_table(datasets / "concrete.csv")
    label = "Concrete compressive strength(MPa, megapascals) "  # as the file spells it
    water = "Water  (component 4)(kg in a m^3 mixture)"
    assert label not in table.frame.columns and water not in table.frame.columns
    schema = infer_schema(table.frame, label, drop=[water])
    assert schema.label == "Concrete compressive strength(MPa, megapascals)"
    assert [d.name for d in schema.dropped] == ["Water (component 4)(kg in a m^3 mixture)"]
    assert schema.task == "regression"
    assert infer_schema(table.frame, "Age (day)", drop=["  Water (component 4)(kg in a m^3 mixture)"]).dropped


def test_an_option_matching_two_columns_is_refused():
    frame = pd.DataFrame({"a ": range(40), "a": range(40), "y": [0, 1] * 20})  # exact names, as Parquet keeps them
    with pytest.raises(DataError, match=r"label ' a' could be any of 'a ', 'a'; give one of them exactly"):
        infer_schema(frame, " a")


def test_an_unnamed_row_index_is_dropped_with_a_note(datasets, tmp_path):
    """A DataFrame written with its index (in order, and shuffled) has an empty first header cell."""
    frame = pd.read_csv(datasets / "heart-disease.csv")
    for name, written in {"ordered": frame, "shuffled": frame.sample(frac=1, random_state=3)}.items():
        path = tmp_path / f"{name}.csv"
        written.to_csv(path)  # index=True: the first header cell is empty
        table = read_table(path)
        assert table.unnamed == ("column_1",) and table.notes[0].startswith("header cell 1 is empty")
        schema = infer_schema(table.frame, "target", unnamed=table.unnamed)
        reasons = {d.name: d.reason for d in schema.dropped}
        assert reasons["column_1"].startswith("unnamed in the header, most likely a saved row index; identifier")
        assert "column_1" not in [c.name for c in schema.columns]
        assert any(n.startswith("dropped column 'column_1' (unnamed in the header") for n in schema.notices)


def _cli(tool: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / tool), *map(str, args)], capture_output=True, text=True, env=run_env(),
                          timeout=300)


def test_build_then_score_a_csv_whose_first_header_cell_is_empty(datasets, tmp_path):
    """The issue's case: the host called the column 'Unnamed: 0' and every score of such a file failed."""
    frame = pd.read_csv(datasets / "heart-disease.csv")
    train, fresh = tmp_path / "train.csv", tmp_path / "fresh.csv"
    frame.iloc[:180].to_csv(train)
    frame.iloc[180:].drop(columns="target").to_csv(fresh)  # the same kind of file, rows the build never saw
    out = tmp_path / "bundles" / "heart-1"
    BUILT.append(out)
    built = _cli("edgeml", "build", "--data", train, "--label", "target", "--estimators", "lgbm",
                 "--max-trials", "1", "--out", out)
    assert built.returncode == 0, built.stderr
    assert "note: header cell 1 is empty: the column is named 'column_1'" in built.stderr
    assert "note: dropped column 'column_1' (unnamed in the header" in built.stderr
    scored = tmp_path / "scored.csv"
    r = _cli("edgeml-runtime", "score", out, "--input", fresh, "--output", scored)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(scored.open()))
    assert len(rows) == len(frame) - 180
    assert list(rows[0])[:2] == ["column_1", "age"] and {row["prediction"] for row in rows} <= {"0", "1"}
    assert [row["column_1"] for row in rows] == [str(i) for i in range(180, len(frame))]
