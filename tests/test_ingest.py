"""Reading tables from real files: CSV variants, Parquet, JSON Lines, SQLite, and every refusal."""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edgeml.data.ingest import Table, read_table
from edgeml.errors import DataError


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_db(path: Path) -> Path:
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE readings (temp REAL, site TEXT, ok TEXT)")
        rows = [(20.5, "a", "yes"), (21.0, "b", "no"), (22.5, "a", "no")]
        con.executemany("INSERT INTO readings VALUES (?, ?, ?)", rows)
        con.execute('CREATE TABLE "odd ""name"" table" (x INTEGER)')
        con.execute('INSERT INTO "odd ""name"" table" VALUES (1), (2)')
        con.execute("CREATE TABLE empty_log (x INTEGER)")
    con.close()
    return path


# -- real data ------------------------------------------------------------------------------------


def test_ai4i_bom_is_stripped_and_bracketed_names_are_kept(datasets):
    path = datasets / "ai4i2020.csv"
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    table = read_table(path)
    assert table.format == "csv"
    assert table.rows == len(table.frame) == 10_000
    assert list(table.frame.columns)[:4] == ["UDI", "Product ID", "Type", "Air temperature [K]"]
    assert {"Rotational speed [rpm]", "Torque [Nm]", "Tool wear [min]", "Machine failure"} <= set(table.frame.columns)
    assert table.sha256 == sha256(path)
    assert table.source == str(path)


def test_telco_keeps_blank_total_charges_as_text(datasets):
    table = read_table(datasets / "telco-churn.csv")
    assert table.rows == 7043
    charges = table.frame["TotalCharges"]
    assert (charges == " ").sum() == 11
    assert charges.isna().sum() == 0


def test_ccpp_reads_all_rows_as_numbers(datasets):
    table = read_table(str(datasets / "ccpp.csv"))
    assert table.rows == 6410
    assert list(table.frame.columns) == ["AT", "EV", "AP", "RH", "PE"]
    assert all(pd.api.types.is_float_dtype(t) for t in table.frame.dtypes)


# -- delimited text -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("semi.csv", "temp [C];site\n21,5;a\n22,0;b\n"),
        ("tabs.tsv", "temp [C]\tsite\n21,5\ta\n22,0\tb\n"),
        ("tabs.txt", "temp [C]\tsite\n21,5\ta\n22,0\tb\n"),
        ("pipes.csv", "temp [C]|site\n21,5|a\n22,0|b\n"),
    ],
)
def test_delimiter_is_sniffed(tmp_path, name, text):
    table = read_table(write(tmp_path / name, text))
    assert list(table.frame.columns) == ["temp [C]", "site"]
    assert table.frame["temp [C]"].tolist() == ["21,5", "22,0"]
    assert table.frame["site"].tolist() == ["a", "b"]


def test_quoted_fields_keep_delimiters_quotes_and_newlines(tmp_path):
    text = 'id,"note, with comma",n\n1,"a, b; c",2\n2,"say ""hi""",3\n3,"two\nlines",4\n'
    frame = read_table(write(tmp_path / "quoted.csv", text)).frame
    assert list(frame.columns) == ["id", "note, with comma", "n"]
    assert frame["note, with comma"].tolist() == ["a, b; c", 'say "hi"', "two\nlines"]


def test_bom_in_a_semicolon_file(tmp_path):
    frame = read_table(write(tmp_path / "bom.csv", "\ufeffa;b\n1;2\n")).frame
    assert list(frame.columns) == ["a", "b"]


def test_blank_survives_empty_is_missing_and_na_text_stays_text(tmp_path):
    """Only an empty field is missing at ingest; "NA" is read as a device reads it (the runtime's
    converters decide: missing in a numeric column, a category of its own in a categorical one)."""
    frame = read_table(write(tmp_path / "blanks.csv", "x,y\n1, \n2,\n3,NA\n4,ok\n")).frame
    y = frame["y"].tolist()
    assert y[0] == " "
    assert pd.isna(y[1]) and y[2] == "NA"
    assert y[3] == "ok"


def test_single_column_falls_back_to_comma(tmp_path):
    table = read_table(write(tmp_path / "one.csv", "reading\n1.5\n2.5\n"))
    assert table.frame["reading"].tolist() == [1.5, 2.5]


def test_unknown_extension_that_sniffs_as_delimited_text_is_csv(tmp_path):
    table = read_table(write(tmp_path / "export.dat", "a|b\n1|2\n3|4\n"))
    assert table.format == "csv"
    assert table.frame.to_dict("list") == {"a": [1, 3], "b": [2, 4]}


def test_table_is_frozen(tmp_path):
    table = read_table(write(tmp_path / "t.csv", "a,b\n1,2\n"))
    assert isinstance(table, Table)
    with pytest.raises(dataclasses.FrozenInstanceError):
        table.rows = 3


# -- parquet and JSON Lines -------------------------------------------------------------------------


def test_parquet(tmp_path):
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"Air temperature [K]": [298.1, None], "Type": ["M", "L"], "ok": [True, False]}), path)
    table = read_table(path)
    assert table.format == "parquet"
    assert table.rows == 2
    assert list(table.frame.columns) == ["Air temperature [K]", "Type", "ok"]
    assert table.frame["Type"].tolist() == ["M", "L"]
    assert table.sha256 == sha256(path)


def test_parquet_recognised_by_magic_number(tmp_path):
    path = tmp_path / "data.bin"
    pq.write_table(pa.table({"a": [1, 2]}), path)
    assert read_table(path).format == "parquet"


def test_parquet_without_rows_is_refused(tmp_path):
    path = tmp_path / "none.pq"
    pq.write_table(pa.table({"a": pa.array([], pa.int64())}), path)
    with pytest.raises(DataError, match=r"none\.pq.*no rows"):
        read_table(path)


def test_corrupt_parquet_is_refused(tmp_path):
    path = write(tmp_path / "broken.parquet", "PAR1 this is not really parquet")
    with pytest.raises(DataError, match=r"broken\.parquet.*cannot be read as Parquet"):
        read_table(path)


@pytest.mark.parametrize("name", ["rows.jsonl", "rows.ndjson", "rows.json"])
def test_json_lines(tmp_path, name):
    text = '{"id": "007", "temp": 21.5, "ok": true}\n\n{"id": "008", "temp": null, "ok": false}\n'
    table = read_table(write(tmp_path / name, text))
    assert table.format == "jsonl"
    assert table.frame["id"].tolist() == ["007", "008"]  # not turned into the number 7
    assert table.frame["temp"].iloc[0] == 21.5 and pd.isna(table.frame["temp"].iloc[1])


def test_json_document_is_refused_with_the_fix(tmp_path):
    path = write(tmp_path / "doc.json", '[\n  {"a": 1},\n  {"a": 2}\n]\n')
    with pytest.raises(DataError, match=r"doc\.json.*not JSON Lines.*one JSON object per line"):
        read_table(path)


def test_bad_json_line_is_named(tmp_path):
    path = write(tmp_path / "bad.jsonl", '{"a": 1}\n{"a": 2\n{"a": 3}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl.*line 2"):
        read_table(path)


# -- SQLite ---------------------------------------------------------------------------------------


def test_sqlite_url_with_table(tmp_path):
    db = make_db(tmp_path / "plant.db")
    table = read_table(f"sqlite:///{db}?table=readings")
    assert table.format == "sqlite"
    assert table.source == f"sqlite:///{db}?table=readings"
    assert table.frame.to_dict("list") == {
        "temp": [20.5, 21.0, 22.5],
        "site": ["a", "b", "a"],
        "ok": ["yes", "no", "no"],
    }
    assert table.sha256 == sha256(db)


def test_sqlite_relative_url_and_query(tmp_path, monkeypatch):
    make_db(tmp_path / "plant.db")
    monkeypatch.chdir(tmp_path)
    table = read_table("sqlite:///plant.db", query="SELECT temp FROM readings WHERE ok = 'no' ORDER BY temp")
    assert table.frame["temp"].tolist() == [21.0, 22.5]


def test_sqlite_plain_path_with_table_and_odd_name(tmp_path):
    db = make_db(tmp_path / "plant.sqlite")
    assert read_table(db, table='odd "name" table').frame["x"].tolist() == [1, 2]
    assert read_table(db, table="READINGS").rows == 3  # SQLite names are case-insensitive


def test_sqlite_is_opened_read_only(tmp_path):
    db = make_db(tmp_path / "plant.db")
    before = sha256(db)
    with pytest.raises(DataError, match="readonly"):
        read_table(db, query="DELETE FROM readings")
    assert sha256(db) == before


def test_sqlite_missing_table_lists_the_tables(tmp_path):
    db = make_db(tmp_path / "plant.db")
    with pytest.raises(DataError, match=r"plant\.db.*no table 'reading'.*'empty_log'.*'readings'"):
        read_table(f"sqlite:///{db}?table=reading")


def test_sqlite_bad_query_includes_sqlites_message(tmp_path):
    db = make_db(tmp_path / "plant.db")
    with pytest.raises(DataError, match=r"plant\.db.*no such column: pressure"):
        read_table(f"sqlite:///{db}", query="SELECT pressure FROM readings")


def test_sqlite_needs_a_table_or_query(tmp_path):
    db = make_db(tmp_path / "plant.db")
    with pytest.raises(DataError, match=r"plant\.db.*\?table=NAME or --query.*'readings'"):
        read_table(db)
    with pytest.raises(DataError, match="not both"):
        read_table(db, table="readings", query="SELECT 1")


def test_sqlite_empty_table_and_duplicate_query_columns(tmp_path):
    db = make_db(tmp_path / "plant.db")
    with pytest.raises(DataError, match=r"plant\.db.*no rows"):
        read_table(db, table="empty_log")
    with pytest.raises(DataError, match=r"plant\.db.*duplicate column names 'temp'"):
        read_table(db, query="SELECT temp, temp FROM readings")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://plant.db", "three slashes"),
        ("sqlite:///plant.db?tabel=readings", "unknown option 'tabel'"),
        ("sqlite:///", "no database file"),
        ("sqlite:///missing.db?table=readings", r"no such file.*four slashes"),
    ],
)
def test_sqlite_url_mistakes(tmp_path, monkeypatch, url, message):
    make_db(tmp_path / "plant.db")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=message):
        read_table(url)


def test_file_that_is_not_a_database(tmp_path):
    path = write(tmp_path / "fake.db", "just some text\n")
    with pytest.raises(DataError, match=r"fake\.db.*SQLite"):
        read_table(path, table="readings")


def test_table_option_on_a_csv_is_refused(tmp_path):
    path = write(tmp_path / "t.csv", "a\n1\n")
    with pytest.raises(DataError, match=r"t\.csv.*--query applies to SQLite"):
        read_table(path, query="SELECT 1")


# -- refusals -------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv.*no such file"):
        read_table(tmp_path / "nope.csv")


@pytest.mark.parametrize("text", ["", "\n\n  \n", "\ufeff"])
def test_empty_file(tmp_path, text):
    path = write(tmp_path / "empty.csv", text)
    with pytest.raises(DataError, match=r"empty\.csv.*empty"):
        read_table(path)


def test_header_only(tmp_path):
    path = write(tmp_path / "header.csv", "a,b,c\n")
    with pytest.raises(DataError, match=r"header\.csv.*header but no data rows"):
        read_table(path)


def test_unsupported_extension(tmp_path):
    path = write(tmp_path / "book.xlsx", "PK\x03\x04 binary\x00stuff")
    with pytest.raises(DataError, match=r"book\.xlsx.*unsupported file type '\.xlsx'.*\.csv"):
        read_table(path)


def test_unknown_extension_that_is_not_delimited(tmp_path):
    path = write(tmp_path / "notes.md", "# Notes\n\nsome prose here\n")
    with pytest.raises(DataError, match=r"notes\.md.*unsupported"):
        read_table(path)


def test_ragged_csv_gives_pandas_reason(tmp_path):
    path = write(tmp_path / "ragged.csv", "a,b\n1,2\n3,4,5\n")
    with pytest.raises(DataError, match=r"ragged\.csv.*Expected 2 fields in line 3, saw 3"):
        read_table(path)


def test_unclosed_quote(tmp_path):
    path = write(tmp_path / "quote.csv", 'a,b\n1,"open\n')
    with pytest.raises(DataError, match=r"quote\.csv.*quotes are closed"):
        read_table(path)


def test_duplicate_csv_header_cells_are_numbered(tmp_path):
    """A CSV header's repeated names are numbered by the runtime's header rule, as a device numbers them."""
    path = write(tmp_path / "dupes.csv", "a,b,a,b,c\n1,2,3,4,5\n")
    table = read_table(path)
    assert list(table.frame.columns) == ["a", "b", "a_2", "b_2", "c"]
    assert table.frame.iloc[0].tolist() == [1, 2, 3, 4, 5]
    assert table.notes == ("header cell 3 repeats 'a' (cell 1): the column is named 'a_2'",
                           "header cell 4 repeats 'b' (cell 2): the column is named 'b_2'")


def test_not_utf8(tmp_path):
    path = write(tmp_path / "latin.csv", "name,temp\nMünchen,1\n", encoding="latin-1")
    with pytest.raises(DataError, match=r"latin\.csv.*not UTF-8.*re-save it as UTF-8"):
        read_table(path)


def test_directory_is_refused(tmp_path):
    with pytest.raises(DataError, match="directory"):
        read_table(tmp_path)
