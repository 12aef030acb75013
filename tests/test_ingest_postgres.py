"""PostgreSQL as a data source (edgeml.data.sql through edgeml.data.ingest.read_table), on the test session's real
PostgreSQL server: tables, queries, the hash of what was read, errors, and a build from it."""

from __future__ import annotations

import json
import uuid

import pandas as pd
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from edgeml.cli import main
from edgeml.data.demo import demo_frame
from edgeml.data.ingest import read_table
from edgeml.errors import DataError


@pytest.fixture(scope="module")
def database(postgres):
    """A database with ``readings`` (a primary key, rows inserted out of key order), a view, a table in the
    schema ``plant``, and the demo data as ``demo``."""
    name = f"src{uuid.uuid4().hex[:10]}"
    url = postgres.create_database(name)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE readings (id integer PRIMARY KEY, temp numeric(5, 2), ok text, "
                             "at timestamptz)")
        conn.exec_driver_sql("INSERT INTO readings VALUES (3, 22.5, 'no', '2026-12-01 12:02+00'), "
                             "(1, 21.25, 'yes', '2026-12-01 12:00+00'), (2, NULL, 'yes', '2026-12-01 12:01+00')")
        conn.exec_driver_sql("CREATE VIEW hot AS SELECT id, temp FROM readings WHERE temp > 22")
        conn.exec_driver_sql("CREATE SCHEMA plant")
        conn.exec_driver_sql('CREATE TABLE plant."Line 2" (x integer)')
        conn.exec_driver_sql('INSERT INTO plant."Line 2" VALUES (7)')
    demo_frame(rows=600, seed=3).to_sql("demo", engine, index=False)
    engine.dispose()
    yield url
    postgres.drop_database(name)


def test_a_table_by_url_and_a_query(database):
    table = read_table(f"{database}?table=readings")
    assert (table.format, table.rows, list(table.frame.columns)) == ("postgresql", 3, ["id", "temp", "ok", "at"])
    assert table.frame["id"].tolist() == [1, 2, 3]  # by the primary key, not the order rows were inserted
    assert table.frame["temp"].dtype == "float64" and table.frame["temp"].isna().tolist() == [False, True, False]
    assert str(table.frame["at"].dtype).startswith("datetime64") and table.source == f"{database}?table=readings"
    assert read_table(database, table="readings").sha256 == table.sha256  # the same rows, the same hash
    asked = read_table(database, query="SELECT ok, temp FROM readings WHERE ok = 'yes' ORDER BY id")
    assert (asked.rows, asked.frame["ok"].tolist()) == (2, ["yes", "yes"]) and asked.sha256 != table.sha256
    assert read_table(f"{database}?table=hot").frame["id"].tolist() == [3]
    assert read_table(f"{database}?table=plant.Line 2").frame["x"].tolist() == [7]
    assert read_table(database.replace("postgresql+psycopg://", "postgresql://"), table="READINGS").rows == 3


def test_the_hash_names_the_values_read(database):
    from edgeml.data.sql import rows_sha256

    before = read_table(f"{database}?table=readings")
    assert before.sha256 == rows_sha256(before.frame) and len(before.sha256) == 64
    engine = sa.create_engine(database)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE readings SET ok = 'maybe' WHERE id = 2")
        changed = read_table(f"{database}?table=readings")
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE readings SET ok = 'yes' WHERE id = 2")
    finally:
        engine.dispose()
    assert changed.sha256 != before.sha256 and read_table(f"{database}?table=readings").sha256 == before.sha256


def test_errors_name_the_source_and_the_fix(database, postgres):
    with pytest.raises(DataError, match=r"no table 'readingz'; tables: 'demo', 'hot', 'plant.Line 2', 'readings'"):
        read_table(f"{database}?table=readingz")
    with pytest.raises(DataError, match=r"say which table to read, with \?table=NAME or --query; tables: 'demo'"):
        read_table(database)
    with pytest.raises(DataError, match=r'the query failed: column "nope" does not exist.*query was: SELECT nope'):
        read_table(database, query="SELECT nope FROM readings")
    with pytest.raises(DataError, match=r"the query returned no rows"):
        read_table(database, query="SELECT * FROM readings WHERE false")
    with pytest.raises(DataError, match=r"give either a table or --query, not both"):
        read_table(f"{database}?table=readings", query="SELECT 1")
    with pytest.raises(DataError, match=r"names table 'readings' but --table says 'hot'"):
        read_table(f"{database}?table=readings", table="hot")
    with pytest.raises(DataError, match=r"duplicate column names 'id'"):
        read_table(database, query="SELECT id, id FROM readings")
    with pytest.raises(DataError, match=r"psycopg://ada:\*\*\*@h:12x/db\?table=readings: not a database URL"):
        read_table("postgresql+psycopg://ada:pw@h:12x/db?table=readings")
    with pytest.raises(DataError, match=r"no database name; write postgresql\+psycopg://user@host/DATABASE"):
        read_table("postgresql://ada@127.0.0.1:1/?table=readings")
    closed = database.replace("edgeml@", "edgeml:s3cret@").replace(f":{postgres.port}/", ":1/")
    with pytest.raises(DataError, match=r"edgeml:\*\*\*@127\.0\.0\.1:1/.*cannot connect to the PostgreSQL server") \
            as refused:
        read_table(f"{closed}?table=readings")
    assert "s3cret" not in str(refused.value) and "check the host, port" in str(refused.value)


def test_a_source_read_is_read_only(database):
    with pytest.raises(DataError, match=r"read-only transaction"):
        read_table(database, query="INSERT INTO readings VALUES (9, 1, 'x', now()) RETURNING id")


@pytest.mark.slow
def test_edgeml_build_from_a_postgresql_query(database, tmp_path):
    out = tmp_path / "from-pg"
    done = CliRunner().invoke(main, ["build", "--data", database, "--query", "SELECT * FROM demo ORDER BY 1",
                                     "--label", "failure", "--target", "rpi4", "--out", str(out),
                                     "--max-trials", "2", "--estimators", "lgbm"])
    assert done.exit_code == 0, done.output
    data = json.loads((out / "manifest.json").read_text())["provenance"]["data"]
    expected = read_table(database, query="SELECT * FROM demo ORDER BY 1")
    assert (data["format"], data["rows"], data["sha256"]) == ("postgresql", 600, expected.sha256)
    assert data["source"] == database and pd.api.types.is_float_dtype(expected.frame["air_temp_c"])
