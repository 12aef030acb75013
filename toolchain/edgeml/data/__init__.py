"""The data stage: read the user's table, judge its columns, split it and fit the preprocessing."""

from edgeml.data.ingest import Table, read_table
from edgeml.data.prepare import Prepared, prepare

__all__ = ["Prepared", "Table", "prepare", "read_table"]
