"""One rule for the names in a CSV header line, shared by the host's reader and the device's.

A header is text someone typed, often in a spreadsheet: cells padded with
spaces, line breaks inside a quoted cell, an empty first cell where a
DataFrame's index was written out, a name given twice. :func:`read_header`
turns the cells of one header line into column names by this rule, the same
on the workstation (``edgeml.data.ingest``) and on a device (``score`` and
``run``), so that a model's input names are found again in any file with the
same header line:

1. A cell's surrounding whitespace is removed and every inner run of
   whitespace (spaces, tabs, line breaks, no-break spaces, a stray byte-order
   mark) becomes one space: ``"Position "`` is ``Position``,
   ``"Total years of\\nexperience"`` is ``Total years of experience``.
2. A cell left empty is named after its position, counted from 1 as a
   spreadsheet counts columns: ``column_1`` for the first.
3. A name already given to an earlier cell is numbered: the second ``x`` is
   ``x_2``, the third ``x_3``.

A name made by rule 2 or 3 never takes one that another cell of the header
spells: with cells ``x, x, x_2`` the second ``x`` becomes ``x_3``. Every
renamed cell gets a note, one line each, that the host prints.

The delimiter is decided from the header line too (:func:`delimiter`), by a
rule rather than a guess over many lines, so that a device streaming records
decides it as the build did before it has read a record.

The rule applies to CSV headers only. Parquet, SQLite and JSON names are
identifiers a program wrote, read exactly on both sides (a JSON record's keys
are matched exactly on the device).

Example:

>>> header = read_header(["", "Position ", "x", "Total years of\\nexperience", "x"])
>>> header.names
('column_1', 'Position', 'x', 'Total years of experience', 'x_2')
>>> header.unnamed
('column_1',)
>>> print("\\n".join(header.notes))
header cell 1 is empty: the column is named 'column_1'
header cell 2 'Position ' is read as 'Position' (whitespace tidied)
header cell 4 'Total years of\\nexperience' is read as 'Total years of experience' (whitespace tidied)
header cell 5 repeats 'x' (cell 3): the column is named 'x_2'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DELIMITERS", "Header", "clean_name", "delimiter", "read_header"]

#: The delimiters a CSV header may use, in the order that breaks a tie (a comma last: names hold commas).
DELIMITERS = ("\t", ";", "|", ",")

#: Characters that count as whitespace in a name besides those :meth:`str.split` splits on.
_INVISIBLE = str.maketrans({"\ufeff": " ", "\u200b": " ", "\u2060": " "})


@dataclass(frozen=True)
class Header:
    """The column names of one header line, and what was renamed.

    ``names`` is one name per cell, all distinct; ``notes`` one line per renamed
    cell; ``unnamed`` the names given to empty cells (a DataFrame index written
    out is such a column).
    """

    names: tuple[str, ...]
    notes: tuple[str, ...] = ()
    unnamed: tuple[str, ...] = ()


def delimiter(text: str) -> str:
    r"""The delimiter of a CSV whose header line starts ``text``: the one of :data:`DELIMITERS` found most
    often outside quotes before the first line break outside quotes; on a tie the first in that order;
    ``,`` when none is found (one column). Host and device both decide by this, from the header alone,
    so that a device streaming records decides as the build did, before its first record.

    >>> delimiter('Cement (kg);Water;"Strength(MPa, megapascals)"\n1;2;3')
    ';'
    >>> delimiter("temp, C\tok\tsite, name"), delimiter("a,b,c"), delimiter("only")
    ('\t', ',', ',')
    """
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif not quoted:
            if ch in counts:
                counts[ch] += 1
            elif ch in "\r\n":
                break
    best = max(DELIMITERS, key=lambda d: counts[d])  # max keeps the first of equals: the tie order
    return best if counts[best] else ","


def clean_name(text: str) -> str:
    """``text`` with its surrounding whitespace removed and inner runs of whitespace made one space (rule 1).

    >>> clean_name("  Water  (component 4)\\r\\n"), clean_name("\\ufeffid"), clean_name(" \\t ")
    ('Water (component 4)', 'id', '')
    """
    return " ".join(text.translate(_INVISIBLE).split())


def read_header(cells: Sequence[str]) -> Header:
    """The column names for the cells of a header line, by the rule of this module.

    >>> read_header(["x", "x", "x_2", ""]).names
    ('x', 'x_3', 'x_2', 'column_4')
    >>> read_header(["column_2", ""]).names
    ('column_2', 'column_2_2')
    """
    cleaned = [clean_name(c) for c in cells]
    spelled = set(cleaned)  # names as the header writes them: numbered names keep off these
    taken: dict[str, int] = {}  # name -> its 1-based cell
    names, notes, unnamed = [], [], []
    for position, (raw, name) in enumerate(zip(cells, cleaned, strict=True), start=1):
        if not name:
            name = _free(f"column_{position}", spelled, taken, first=True)
            unnamed.append(name)
            notes.append(f"header cell {position} is empty: the column is named {name!r}")
        elif name in taken:
            first = taken[name]
            name = _free(name, spelled, taken, first=False)
            notes.append(f"header cell {position} repeats {cleaned[first - 1]!r} (cell {first}): the column is "
                         f"named {name!r}")
        elif name != raw:
            notes.append(f"header cell {position} {raw!r} is read as {name!r} (whitespace tidied)")
        taken[name] = position
        names.append(name)
    return Header(tuple(names), tuple(notes), tuple(unnamed))


def _free(base: str, spelled: set[str], taken: dict[str, int], *, first: bool) -> str:
    """``base`` itself (when ``first`` allows it and it is free), else the first free ``base_2``, ``base_3``, ..."""
    if first and base not in spelled and base not in taken:
        return base
    n = 2
    while f"{base}_{n}" in spelled or f"{base}_{n}" in taken:
        n += 1
    return f"{base}_{n}"
