"""Errors the host toolchain raises on purpose.

All derive from :class:`edgeml_runtime.errors.EdgeMLError`, shared with the
device runtime, so one ``except EdgeMLError`` in the CLI turns any of them into
a clean message and a non-zero exit code. A message names the file, column,
key or value at fault and says how to fix it. The whole tree, host and device
(a test checks that every subclass is drawn here)::

    EdgeMLError                  edgeml_runtime.errors: the device's classes, drawn there too
    ├── BundleError              a bundle is missing, incomplete, tampered with or of an unknown format
    ├── InputError               records for scoring do not match the bundle's inputs
    │   ├── RowError             one record cannot be scored (its row and column)
    │   └── SourceError          the reader of `edgeml-runtime run` died part way (exit 1)
    ├── EngineError              an inference engine is missing or cannot run an artifact
    ├── SettingsError            a device setting or config file is unknown, missing or out of bounds
    ├── TelemetryError           MQTT cannot work as asked
    ├── OutboxError              the durable outbox cannot be opened or cannot take a message
    ├── ProtocolError            a topic or message breaks the device-fleet protocol
    ├── UpdateError              an over-the-air update cannot be done (no cryptography, a key file, a slot)
    │   ├── UpdateRefused        a release, root or archive refused on purpose (its `reason`)
    │   └── UpdateUnreachable    the archive could not be fetched this time (the release is not failed)
    ├── DataError                edgeml.errors: the training data cannot be read or used as asked
    ├── ConfigError              a build setting (edgeml.toml, a flag) is unknown or invalid
    ├── TargetError              a hardware target profile is unknown or invalid
    ├── SearchError              the model search could not produce a usable model
    ├── ExportError              a fitted pipeline cannot become the artifact a target asks for
    │   └── NotApplicable        edgeml.export.registry: an artifact that cannot be made honestly
    ├── VerificationError        an artifact does not compute what the host pipeline computes
    ├── PackageError             edgeml.package: no device package for the target (a missing wheel, no Python)
    ├── FirmwareError            edgeml.firmware: no cross-compiler or QEMU, or a firmware that did not build or run
    └── FleetError               edgeml.fleet: a device list or the broker credentials made from it are invalid
"""

from edgeml_runtime.errors import BundleError, EdgeMLError, EngineError, InputError, RowError

__all__ = [
    "BundleError",
    "ConfigError",
    "DataError",
    "EdgeMLError",
    "EngineError",
    "ExportError",
    "FleetError",
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


class FleetError(EdgeMLError):
    """A fleet's device list, or the broker credentials made from it, cannot be used as asked."""
