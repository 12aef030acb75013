"""Tables from SQL databases: a SQLite file (``sqlite:///path.db?table=NAME``) and PostgreSQL through SQLAlchemy.

A PostgreSQL source is a SQLAlchemy URL, ``postgresql+psycopg://user:password@host:port/db``
(``postgresql://`` means the same: the psycopg driver of the ``fleet`` extra),
with ``?table=NAME`` (``schema.name`` for another schema than the search
path's) or a ``--query`` ``SELECT``. Other URL options (``sslmode=require``,
``connect_timeout=5``) go to the driver. The database is read in a read-only
transaction; nothing is written.

What is read is named by :func:`rows_sha256`, the SHA-256 of the rows as CSV
text (the header, then every row in the order read: pandas' ``to_csv``
without the index, ``\\n`` line ends). A table is read ordered by its primary
key when it has one, so the hash of an unchanged table is the same on every
read; give a query an ``ORDER BY`` for the same. The hash is of values, not
of the database's bytes: a ``VACUUM`` does not change it, a changed row does.

Errors name the URL with its password shown as ``***``, the table or query,
and the fix: a table that is not there lists the tables there are; a server
that cannot be reached says so.

>>> frame = pd.DataFrame({"t": [1.5, 2.0], "ok": ["yes", "no"]})
>>> rows_sha256(frame) == rows_sha256(frame.copy()), rows_sha256(frame) == rows_sha256(frame[::-1])
(True, False)
>>> _masked("postgresql+psycopg://ada:secret@db.local/plant?table=readings")
'postgresql+psycopg://ada:***@db.local/plant?table=readings'
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pandas as pd

from edgeml.errors import DataError

_INSTALL = "pip install 'edgeml[fleet]'"


def read_postgres(url: str, *, table: str | None = None, query: str | None = None):
    """The :class:`~edgeml.data.ingest.Table` of ``table`` (or ``?table=`` in ``url``) or ``query`` in the
    PostgreSQL database at ``url``; :class:`DataError` saying what to fix."""
    from edgeml.data.ingest import Table, _refuse_duplicates

    sa = _sqlalchemy(url)
    shown = _masked(url)
    parsed, table = _parse(sa, url, shown, table)
    if table is not None and query is not None:
        raise DataError(f"{shown}: give either a table or --query, not both")
    try:
        engine = sa.create_engine(parsed)
    except ModuleNotFoundError as exc:
        raise DataError(f"{shown}: reading PostgreSQL needs the Python module {exc.name}; install it with "
                        f"{_INSTALL}") from None
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            if query is None:
                query = _table_query(sa, conn, table, shown)
            frame = _run(sa, conn, query, shown)
    except sa.exc.OperationalError as exc:
        raise DataError(f"{shown}: cannot connect to the PostgreSQL server ({_reason(exc)}); check the host, port, "
                        "user, password and database name, and that the server is running") from None
    finally:
        engine.dispose()
    _refuse_duplicates([str(c) for c in frame.columns], shown)
    if len(frame) == 0:
        raise DataError(f"{shown}: the query returned no rows; query was: {query}")
    return Table(frame=frame, source=shown, format="postgresql", sha256=rows_sha256(frame), rows=len(frame))


def rows_sha256(frame: pd.DataFrame) -> str:
    """The SHA-256 of ``frame``'s rows as CSV text (header, rows in order, no index): what a SQL read hashes."""
    digest = hashlib.sha256()
    step = 50_000
    digest.update(frame.head(0).to_csv(index=False, lineterminator="\n").encode())
    for start in range(0, len(frame), step):
        digest.update(frame.iloc[start:start + step].to_csv(index=False, header=False,
                                                             lineterminator="\n").encode())
    return digest.hexdigest()


def _sqlalchemy(url: str):
    try:
        import sqlalchemy
    except ModuleNotFoundError:
        raise DataError(f"{_masked(url)}: reading PostgreSQL needs SQLAlchemy and psycopg; install them with "
                        f"{_INSTALL}") from None
    return sqlalchemy


def _masked(url: str) -> str:
    """``url`` with its password shown as ``***`` (by SQLAlchemy; by hand when it cannot read the URL)."""
    try:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            return make_url(url).render_as_string(hide_password=True)
        except (ArgumentError, ValueError):
            pass
    except ModuleNotFoundError:
        pass
    head, at, tail = url.rpartition("@")
    if not at or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, user = head.partition("//")
    return f"{scheme}//{user.split(':', 1)[0]}:***@{tail}"


def _parse(sa, url: str, shown: str, table: str | None):
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise DataError(f"{shown}: not a database URL ({exc}); write postgresql+psycopg://user@host/db?table=NAME") \
            from None
    if parsed.get_backend_name() != "postgresql":
        raise DataError(f"{shown}: not a PostgreSQL URL; write postgresql+psycopg://user@host/db?table=NAME")
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if not parsed.database:
        raise DataError(f"{shown}: no database name; write postgresql+psycopg://user@host/DATABASE?table=NAME")
    in_url = parsed.query.get("table")
    if isinstance(in_url, tuple):
        in_url = in_url[-1]
    if in_url is not None and table is not None and in_url != table:
        raise DataError(f"{shown}: names table {in_url!r} but --table says {table!r}; give it once")
    return parsed.difference_update_query(["table"]), in_url if in_url is not None else table


def _table_query(sa, conn, table: str | None, shown: str) -> str:
    inspector = sa.inspect(conn)
    schemas = [s for s in inspector.get_schema_names() if s != "information_schema" and not s.startswith("pg_")]
    known = {(s, n): n for s in schemas for n in inspector.get_table_names(schema=s) + inspector.get_view_names(s)}
    default = conn.exec_driver_sql("SELECT current_schema()").scalar()
    names = sorted(n if s == default else f"{s}.{n}" for s, n in known)
    if table is None:
        raise DataError(f"{shown}: say which table to read, with ?table=NAME or --query; tables: {_listing(names)}")
    schema, _, name = table.rpartition(".") if (default, table) not in known else ("", "", table)
    schema = schema or default
    if (schema, name) not in known:
        folded = [(s, n) for s, n in known if s == schema and n.casefold() == name.casefold()]
        if not folded:
            raise DataError(f"{shown}: no table {table!r}; tables: {_listing(names)}")
        schema, name = folded[0]
    key = inspector.get_pk_constraint(name, schema=schema).get("constrained_columns") or []
    order = f" ORDER BY {', '.join(map(quote_identifier, key))}" if key else ""
    return f"SELECT * FROM {quote_identifier(schema)}.{quote_identifier(name)}{order}"


def _run(sa, conn, query: str, shown: str) -> pd.DataFrame:
    try:
        return pd.read_sql_query(sa.text(query), conn)
    except (pd.errors.DatabaseError, sa.exc.DBAPIError) as exc:  # pandas wraps SQLAlchemy's error
        cause = exc.__cause__ if isinstance(exc, pd.errors.DatabaseError) else exc
        if isinstance(cause, sa.exc.OperationalError):
            raise cause from None
        raise DataError(f"{shown}: the query failed: {_reason(cause or exc)}; query was: {query}") from None


def _reason(exc) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]


# -- SQLite ---------------------------------------------------------------------------------------------

def read_sqlite(path: Path, shown: str, *, table: str | None, query: str | None) -> pd.DataFrame:
    if table is not None and query is not None:
        raise DataError(f"{shown}: give either a table or --query, not both")
    uri = path.resolve().as_uri() + "?mode=ro"
    try:
        con = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise DataError(f"{shown}: cannot open SQLite database ({exc}); check the file and its permissions") from exc
    try:
        tables = sqlite_tables(con, shown)
        if query is None:
            if table is None:
                raise DataError(
                    f"{shown}: say which table to read, with ?table=NAME or --query; "
                    f"tables: {_listing(tables)}"
                )
            query = f"SELECT * FROM {quote_identifier(find_table(table, tables, shown))}"
        return pd.read_sql_query(query, con)
    except pd.errors.DatabaseError as exc:
        reason = exc.__cause__ or exc
        raise DataError(f"{shown}: the query failed: {reason}; query was: {query}") from exc
    finally:
        con.close()


def sqlite_tables(con: sqlite3.Connection, shown: str) -> list[str]:
    try:
        rows = con.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name"
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        raise DataError(f"{shown}: cannot be read as a SQLite database ({exc}); check the file") from exc
    return [name for (name,) in rows]


def find_table(name: str, tables: list[str], shown: str) -> str:
    if name in tables:
        return name
    folded = [t for t in tables if t.casefold() == name.casefold()]
    if folded:
        return folded[0]
    raise DataError(f"{shown}: no table {name!r}; tables: {_listing(tables)}")


def _listing(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names) if names else "(none: the database is empty)"


def quote_identifier(name: str) -> str:
    """``name`` as a SQL identifier: double-quoted, inner quotes doubled.

    >>> quote_identifier('my "odd" table')
    '"my ""odd"" table"'
    """
    return '"' + name.replace('"', '""') + '"'


__all__ = ["quote_identifier", "read_postgres", "read_sqlite", "rows_sha256"]
