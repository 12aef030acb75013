"""Where the fleet store is and how to reach it: its URL (flag, environment, ``fleet.toml``) and its engine.

The URL is, first found: the ``--store`` flag, the ``EDGEML_FLEET_STORE``
environment variable (the controller's variables start with
``EDGEML_FLEET_``, so they never collide with the runtime's ``EDGEML_*``),
``url`` in the ``[store]`` table of ``fleet.toml``, else
:data:`DEFAULT_URL`, ``fleet.db`` in the working directory.

* ``sqlite:///fleet.db`` (relative to the working directory),
  ``sqlite:////var/lib/edgeml/fleet.db`` (absolute);
* ``postgresql+psycopg://user:password@host:5432/fleet``, or
  ``postgresql://...``, which means the same (psycopg 3 is the driver the
  ``fleet`` extra installs).

Errors name the URL with its password masked (``***``) and say what to fix;
a ``fleet.toml`` holding a password must not be readable by every user.

>>> store_url(None, environ={"EDGEML_FLEET_STORE": "postgresql://fleet:s3cret@db/fleet"})
'postgresql://fleet:s3cret@db/fleet'
>>> masked("postgresql://fleet:s3cret@db/fleet")
'postgresql+psycopg://fleet:***@db/fleet'
>>> connect("mysql://db/fleet")
Traceback (most recent call last):
...
edgeml.errors.FleetError: the fleet store mysql://db/fleet is not SQLite or PostgreSQL; use sqlite:///fleet.db \
(one file, the default) or postgresql+psycopg://user@host/database
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event

from edgeml.errors import FleetError
from edgeml_runtime.tomlfile import exposure, read_toml

from .schema import dumps

DEFAULT_URL = "sqlite:///fleet.db"
ENV = "EDGEML_FLEET_STORE"
#: What SQLite waits for another process's write lock before giving up, in milliseconds.
BUSY_TIMEOUT_MS = 10_000
_FIX = "use sqlite:///fleet.db (one file, the default) or postgresql+psycopg://user@host/database"


def store_url(flag: str | None, config: str | os.PathLike | None = None,
              environ: Mapping[str, str] | None = None) -> str:
    """The store's URL: ``flag``, else ``$EDGEML_FLEET_STORE``, else ``[store] url`` of ``config``, else the default."""
    environ = os.environ if environ is None else environ
    if flag:
        return flag
    if environ.get(ENV):
        return environ[ENV]
    if config is not None:
        section = read_toml(config, FleetError, "fleet configuration").get("store", {})
        if not isinstance(section, dict) or set(section) - {"url"}:
            unknown = sorted(set(section) - {"url"}) if isinstance(section, dict) else section
            raise FleetError(f"{config}: [store] may set only url, not {unknown}; e.g. [store] url = "
                             f"\"{DEFAULT_URL}\"")
        url = section.get("url")
        if url is not None:
            if not isinstance(url, str) or not url:
                raise FleetError(f"{config}: [store] url = {url!r} is not a URL; {_FIX}")
            if _url(url).password and exposure(config):
                raise FleetError(f"{config} holds the store's password and {exposure(config)}; or give the URL in "
                                 f"${ENV} instead")
            return url
    return DEFAULT_URL


def _url(url: str) -> sa.URL:
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise FleetError(f"the fleet store {url!r} is not a database URL; {_FIX}") from None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def masked(url: str) -> str:
    """The URL with its password shown as ``***``: what errors and logs print."""
    return _url(url).render_as_string(hide_password=True)


def connect(url: str) -> sa.Engine:
    """An engine for the store at ``url``, checked by connecting once; FleetError naming the URL if it cannot."""
    parsed, shown = _url(url), masked(url)
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise FleetError(f"the fleet store {shown} is not SQLite or PostgreSQL; {_FIX}")
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        folder = Path(parsed.database).parent
        if not folder.is_dir():
            raise FleetError(f"the fleet store {shown}: the folder {folder} does not exist; create it, or {_FIX}")
    try:
        engine = sa.create_engine(parsed, json_serializer=dumps, pool_pre_ping=backend == "postgresql")
    except ModuleNotFoundError as exc:
        raise FleetError(f"the fleet store {shown} needs the Python module {exc.name}; install the fleet extra: "
                         "pip install 'edgeml[fleet]'") from None
    if backend == "sqlite":
        _sqlite_events(engine)
    try:
        with engine.connect():
            pass
    except sa.exc.DBAPIError as exc:
        engine.dispose()
        reason = first_line(exc.orig)
        fix = ("check that the server runs and the host, port, user, password and database are right"
               if backend == "postgresql" else "check the path and its permissions")
        raise FleetError(f"cannot open the fleet store {shown}: {reason}; {fix}") from None
    return engine


def _sqlite_events(engine: sa.Engine) -> None:
    """WAL, synchronous=FULL, foreign keys, a busy timeout; transactions begun by us (``BEGIN IMMEDIATE`` to write).

    The sqlite3 module's own transaction handling is switched off
    (``isolation_level = None``) so that SAVEPOINT and BEGIN IMMEDIATE work
    as written: SQLAlchemy's documented recipe for pysqlite.
    """
    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (f"busy_timeout={BUSY_TIMEOUT_MS}", "synchronous=FULL", "foreign_keys=ON"):
            cursor.execute(f"PRAGMA {pragma}")
        _wal(cursor)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("edgeml_write") else "BEGIN")


def _wal(cursor) -> None:
    """Put the database in WAL mode (it stays so, in the file), waiting out other connections doing the same.

    Switching a new database to WAL takes a lock that SQLite may refuse at
    once, busy handler or not (two controllers and a test's runners opening one
    fresh store together met "database is locked" here), so a refusal is tried
    again until the busy timeout; a database already in WAL is only read (an
    in-memory one stays in ``memory`` mode, as SQLite keeps it).
    """
    import sqlite3
    import time

    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
        return
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


#: What a statement raises when it may be a value the database refused (:func:`refused_value` tells).
MAYBE_REFUSED = (sa.exc.StatementError, ValueError, OverflowError)


def refused_value(exc: Exception) -> bool:
    """Whether the database (or the driver) refused a value, not failed: a message to reject, not to retry.

    A database that is unreachable, locked or out of space is an error of the
    store: the batch must fail, so that none of it is acknowledged.
    """
    if isinstance(exc, sa.exc.DataError | sa.exc.IntegrityError):
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        return False
    return isinstance(getattr(exc, "orig", exc), ValueError | OverflowError)


def first_line(exc) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def safe_text(value: str) -> str:
    """Text any database keeps: NUL and unpaired surrogates written as escapes."""
    return value.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
