"""The project's error hierarchy, rooted in :class:`EdgeMLError`.

It lives in the runtime so that the host toolchain and the device share one
hierarchy: the host imports these and adds its own subclasses. Every message
names what was wrong (file, column, row, key), the value seen, and the fix.
"""

from __future__ import annotations


class EdgeMLError(Exception):
    """Base of every error edgeml raises on purpose.

    The command-line tools print ``str(error)`` and exit with :attr:`exit_code`,
    without a traceback: these are user mistakes or environment problems, not
    bugs.
    """

    exit_code = 2


class BundleError(EdgeMLError):
    """A bundle is missing, incomplete, tampered with, or of an unknown format."""


class InputError(EdgeMLError):
    """Records given for scoring do not match the bundle's input schema."""


class RowError(InputError):
    """One record could not be scored; ``row`` is its 1-based position in the input."""

    def __init__(self, row: int, column: str | None, message: str):
        self.row = row
        self.column = column
        self.reason = message
        where = f"row {row}" + (f", column {column!r}" if column is not None else "")
        super().__init__(f"{where}: {message}")


class EngineError(EdgeMLError):
    """An inference engine is missing or cannot run an artifact."""
