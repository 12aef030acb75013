"""Errors the host toolchain raises on purpose.

All derive from :class:`edgeml_runtime.errors.EdgeMLError`, shared with the
device runtime, so one ``except EdgeMLError`` in the CLI turns any of them into
a clean message and a non-zero exit code. A message names the file, column,
key or value at fault and says how to fix it.
"""

from edgeml_runtime.errors import BundleError, EdgeMLError, EngineError, InputError, RowError

__all__ = [
    "BundleError",
    "ConfigError",
    "DataError",
    "EdgeMLError",
    "EngineError",
    "ExportError",
    "InputError",
    "RowError",
    "SearchError",
    "TargetError",
    "VerificationError",
]


class DataError(EdgeMLError):
    """The training data cannot be read or used as asked (file, column, label)."""


class ConfigError(EdgeMLError):
    """A setting in ``edgeml.toml`` or on the command line is unknown or invalid."""


class TargetError(EdgeMLError):
    """A hardware target profile is unknown or invalid."""


class SearchError(EdgeMLError):
    """The model search could not produce a usable model."""


class ExportError(EdgeMLError):
    """A fitted pipeline cannot be turned into the artifact a target asks for."""


class VerificationError(EdgeMLError):
    """An exported artifact does not compute what the host pipeline computes."""
