"""Read the user's table (CSV, Parquet, JSON Lines, SQLite or PostgreSQL) into a :class:`Table`.

This is the first stage of a build: it turns what the user named on the
command line into a DataFrame, plus the facts a bundle records about where the
data came from. It does not judge the columns; :mod:`edgeml.data.schema` does.

A CSV header's cells are named by the runtime's own rule
(:func:`edgeml_runtime.headers.read_header`), the one a device applies to the
same header line: surrounding whitespace removed and inner runs of it made one
space, an empty cell named ``column_<position>`` (from 1), a repeated name
numbered ``<name>_2``. Brackets, inner spaces and case are kept. What was
renamed is in :attr:`Table.notes`; the names given to empty cells in
:attr:`Table.unnamed`. Parquet, JSON Lines and SQLite names are kept exactly
(a device reads JSON keys exactly), and a name given twice there is refused.

The format is looked up by file extension in :data:`EXTENSIONS`; a file with an
unknown extension is recognised by its first bytes (Parquet and SQLite magic
numbers) or read as delimited text when it sniffs as such.

Example:

>>> import pathlib, tempfile
>>> path = pathlib.Path(tempfile.mkdtemp()) / "readings.csv"
>>> _ = path.write_text("temp [C];ok\\n21.5;yes\\n22.0;no\\n")
>>> table = read_table(path)
>>> table.format, table.rows, list(table.frame.columns)
('csv', 2, ['temp [C]', 'ok'])
>>> _ = path.write_text(",temp [C] ,temp [C]\\n0,21.5,yes\\n1,22.0,no\\n")
>>> table = read_table(path)
>>> list(table.frame.columns), table.unnamed
(['column_1', 'temp [C]', 'temp [C]_2'], ('column_1',))
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pandas as pd

from edgeml.errors import DataError
from edgeml_runtime.headers import Header, delimiter, read_header

__all__ = ["EXTENSIONS", "FORMATS", "Table", "read_input", "read_table"]

#: The formats :func:`read_table` understands.
FORMATS = ("csv", "parquet", "jsonl", "sqlite", "postgresql")

#: File extension (lower case) -> format. ``.json`` is read only when it is line-delimited.
EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".db": "sqlite",
    ".sqlite": "sqlite",
    ".sqlite3": "sqlite",
}

#: Delimiters the CSV sniffer may choose from.
DELIMITERS = ",;\t|"

#: How much of a text file the sniffer looks at.
SNIFF_BYTES = 64 * 1024

_MAGIC = {b"PAR1": "parquet", b"SQLite format 3\x00": "sqlite"}
_SQLITE_SCHEME = "sqlite:///"


@dataclass(frozen=True, eq=False)  # eq=False: a DataFrame has no single truth value to compare or hash
class Table:
    """A table as read from the user's source, before any judgement about its columns."""

    frame: pd.DataFrame  #: columns named as in the source (a CSV header's by the runtime's rule)
    source: str  #: what the user gave (path, ``sqlite:///`` URL, PostgreSQL URL with its password masked)
    format: str  #: one of :data:`FORMATS`
    sha256: str  #: of the source file's bytes (the ``.db`` file for SQLite; PostgreSQL: :func:`.sql.rows_sha256`)
    rows: int
    notes: tuple[str, ...] = ()  #: what the header rule renamed, one line each, to show the user
    unnamed: tuple[str, ...] = ()  #: the names given to empty CSV header cells


def read_input(data: str | os.PathLike | None, label: str | None, *, query: str | None = None,
               seed: int = 0) -> tuple[Table, str]:
    """What a build reads, and the label column: the table at ``data`` (``--data``, with ``--query``), or without
    one the built-in demo data for ``seed`` (:func:`edgeml.data.demo.demo_table`); :class:`DataError` if the label
    is missing or, for the demo data, not its own."""
    if data is None:
        from edgeml.data.demo import DEMO_LABEL, demo_table  # demo.py builds a Table: imported when it is wanted

        if label not in (None, DEMO_LABEL):
            raise DataError(f"--label {label!r} was given without --data; "
                            f"the built-in demo data's label is {DEMO_LABEL!r}")
        return demo_table(seed), DEMO_LABEL
    if not label:
        raise DataError(f"--label is required with --data {data}: name the column to predict")
    return read_table(data, query=query), label


def read_table(source: str | os.PathLike, *, query: str | None = None, table: str | None = None) -> Table:
    """Read ``source`` into a :class:`Table`, or raise :class:`DataError` saying what to fix.

    ``source`` is a file path, ``sqlite:///path.db?table=NAME`` (three slashes
    then the path, so an absolute path gives four: ``sqlite:////data/x.db``),
    or ``postgresql+psycopg://user@host/db?table=NAME`` (:mod:`edgeml.data.sql`).
    ``table`` and ``query`` (a ``SELECT``) choose what to read from a
    database; they are refused for other formats.

    >>> import pathlib, sqlite3, tempfile
    >>> db = pathlib.Path(tempfile.mkdtemp()) / "plant.db"
    >>> with sqlite3.connect(db) as con:
    ...     _ = con.execute("CREATE TABLE readings (t REAL, ok TEXT)")
    ...     _ = con.execute("INSERT INTO readings VALUES (1.5, 'yes'), (2.5, 'no')")
    >>> con.close()
    >>> read_table(f"sqlite:///{db}?table=readings").frame["ok"].tolist()
    ['yes', 'no']
    >>> read_table(db, query="SELECT t FROM readings WHERE ok = 'no'").rows
    1
    """
    shown = os.fspath(source)
    if isinstance(shown, str) and shown.lower().startswith("postgres"):
        from edgeml.data.sql import read_postgres

        return read_postgres(shown, table=table, query=query)
    if isinstance(shown, str) and shown.lower().startswith("sqlite:"):
        path, table = _parse_sqlite_url(shown, table)
        _check_file(path, shown)
        fmt = "sqlite"
    else:
        path = Path(shown)
        _check_file(path, shown)
        fmt = _detect_format(path, shown)
    header = None  # a CSV file's, as read_header named it
    if fmt == "sqlite":
        from edgeml.data.sql import read_sqlite

        frame = read_sqlite(path, shown, table=table, query=query)
    elif table is not None or query is not None:
        option = "--table" if table is not None else "--query"
        raise DataError(f"{shown}: {option} applies to SQLite and PostgreSQL sources only, and this is a {fmt} file; "
                        "leave it out")
    else:
        frame, header = _READERS[fmt](path, shown)
    _refuse_duplicates([str(c) for c in frame.columns], shown)
    if len(frame) == 0:
        what = "a header but no data rows" if fmt == "csv" else "no rows"
        raise DataError(f"{shown}: the data has {what}; give a file with at least one row of data")
    return Table(frame=frame, source=shown, format=fmt, sha256=_sha256(path), rows=len(frame),
                 notes=header.notes if header else (), unnamed=header.unnamed if header else ())


# -- locating and recognising the file ------------------------------------------------------


def _check_file(path: Path, shown: str) -> None:
    if not path.exists():
        hint = ""
        if shown.lower().startswith(_SQLITE_SCHEME) and not path.is_absolute():
            hint = f" (relative to {Path.cwd()}; for an absolute path use four slashes: sqlite:////abs/path.db)"
        raise DataError(f"{shown}: no such file {str(path)!r}{hint}; check the path")
    if path.is_dir():
        raise DataError(f"{shown}: is a directory; give the data file inside it")
    if path.stat().st_size == 0:
        raise DataError(f"{shown}: the file is empty; give a file with a header and at least one row")


def _detect_format(path: Path, shown: str) -> str:
    suffix = path.suffix.lower()
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    head = _head(path)
    for magic, fmt in _MAGIC.items():
        if head.startswith(magic):
            return fmt
    if _sniff_delimiter(head) is not None:
        return "csv"
    known = ", ".join(sorted(EXTENSIONS))
    raise DataError(
        f"{shown}: unsupported file type {suffix or '(no extension)'!r}; "
        f"export it as CSV or Parquet, or give one of {known} or a sqlite:///path.db?table=NAME URL"
    )


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(SNIFF_BYTES)


def _sniff_delimiter(head: bytes) -> str | None:
    """The delimiter of delimited text in ``head``, or None when it is not such text."""
    if b"\x00" in head:
        return None
    text = head.decode("utf-8-sig", errors="replace")
    if len(head) == SNIFF_BYTES and "\n" in text:
        text = text[: text.rindex("\n")]  # a cut-off last line would confuse the sniffer
    try:
        return csv.Sniffer().sniff(text, delimiters=DELIMITERS).delimiter
    except csv.Error:
        return None


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _refuse_duplicates(names: list[str], shown: str) -> None:
    seen: set[str] = set()
    dupes = [n for n in names if n in seen or seen.add(n)]
    if dupes:
        listed = ", ".join(repr(n) for n in dict.fromkeys(dupes))
        raise DataError(f"{shown}: duplicate column names {listed}; rename them so every column is unique")


# -- readers, one per format ------------------------------------------------------------------


def _read_csv(path: Path, shown: str) -> tuple[pd.DataFrame, Header]:
    head = _head(path)
    if not head.decode("utf-8-sig", errors="replace").strip():
        raise DataError(f"{shown}: the file is empty; give a file with a header and at least one row")
    sep = delimiter(_from_header(head.decode("utf-8-sig", errors="replace")))  # as a device decides it
    try:
        header = read_header(_csv_header(path, sep))  # pandas would say "Unnamed: 0" and "a.1"
        frame = pd.read_csv(
            path,
            sep=sep,
            header=0,
            names=list(header.names),
            engine="c",
            encoding="utf-8-sig",
            low_memory=False,  # one dtype per column, not one per chunk
            # Only empty fields are missing here. Text such as "NA", "None" or "#N/A" stays text, as a
            # device reading the same file sees it; edgeml_runtime.cells decides what it means per
            # column kind (missing for numbers, a category of its own for categoricals).
            keep_default_na=False,
            na_values=[""],
        )
    except UnicodeDecodeError as exc:
        raise DataError(f"{shown}: is not UTF-8 text ({exc.reason} at byte {exc.start}); re-save it as UTF-8") from exc
    except (pd.errors.ParserError, csv.Error) as exc:
        reason = str(exc).strip().splitlines()[-1]
        raise DataError(
            f"{shown}: cannot be parsed as delimited text with delimiter {sep!r} ({reason}); "
            "check that every row has as many fields as the header and that quotes are closed"
        ) from exc
    return frame, header


def _from_header(text: str) -> str:
    """``text`` from its first line that is not blank, as a device skips blank lines before the header."""
    start = 0
    for line in text.splitlines(keepends=True):
        if line.strip():
            break
        start += len(line)
    return text[start:]


def _csv_header(path: Path, sep: str) -> list[str]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        for row in csv.reader(f, delimiter=sep):
            if row:
                return row
    return []


def _read_parquet(path: Path, shown: str) -> tuple[pd.DataFrame, None]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        arrow = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(
            f"{shown}: cannot be read as Parquet ({exc}); check the file is a complete Parquet file"
        ) from exc
    _refuse_duplicates(arrow.column_names, shown)
    return arrow.to_pandas(), None


def _read_jsonl(path: Path, shown: str) -> tuple[pd.DataFrame, None]:
    _check_line_delimited(path, shown)
    try:
        # dtype=False: keep "007" a string and dates as text; the schema step decides.
        return pd.read_json(path, lines=True, dtype=False, encoding="utf-8-sig"), None
    except UnicodeDecodeError as exc:
        raise DataError(f"{shown}: is not UTF-8 text ({exc.reason}); re-save it as UTF-8") from exc
    except ValueError as exc:
        reason = _first_bad_json_line(path) or str(exc)
        raise DataError(f"{shown}: cannot be read as JSON Lines ({reason}); give one JSON object per line") from exc


def _check_line_delimited(path: Path, shown: str) -> None:
    """Refuse a ``.json`` document (an array or a pretty-printed object) with a clear fix."""
    with path.open(encoding="utf-8-sig", errors="replace") as f:
        first = next((line.strip() for line in f if line.strip()), "")
    if not first:
        raise DataError(f"{shown}: the file is empty; give one JSON object per line")
    try:
        ok = isinstance(json.loads(first), dict)
    except json.JSONDecodeError:
        ok = False
    if not ok:
        raise DataError(
            f"{shown}: is not JSON Lines (its first line is not a JSON object); "
            "give one JSON object per line, e.g. convert with `jq -c '.[]' in.json > out.jsonl`"
        )


def _first_bad_json_line(path: Path) -> str:
    with path.open(encoding="utf-8-sig", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                json.loads(line)
            except json.JSONDecodeError as exc:
                return f"line {number}: {exc.msg}"
    return ""


def _parse_sqlite_url(url: str, table: str | None) -> tuple[Path, str | None]:
    if not url.lower().startswith(_SQLITE_SCHEME):
        raise DataError(f"{url}: a SQLite source is written sqlite:///path/to/file.db?table=NAME (three slashes)")
    parts = urlsplit("sqlite:///" + url[len(_SQLITE_SCHEME) :])
    options = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(options) - {"table"})
    if unknown:
        raise DataError(
            f"{url}: unknown option {unknown[0]!r}; the only URL option is ?table=NAME (use --query for SQL)"
        )
    in_url = options.get("table", [None])[-1]
    if in_url is not None and table is not None and in_url != table:
        raise DataError(f"{url}: names table {in_url!r} but --table says {table!r}; give it once")
    path = url[len(_SQLITE_SCHEME) :].split("?", 1)[0]
    if not path:
        raise DataError(f"{url}: no database file after sqlite:///; write sqlite:///path/to/file.db?table=NAME")
    return Path(path), in_url if in_url is not None else table


#: Format -> reader: the frame, and for CSV the :class:`~edgeml_runtime.headers.Header` its columns were named by.
_READERS: dict[str, Callable[[Path, str], tuple[pd.DataFrame, Header | None]]] = {
    "csv": _read_csv,
    "parquet": _read_parquet,
    "jsonl": _read_jsonl,
}
