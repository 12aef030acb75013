"""The project's error hierarchy, rooted in :class:`EdgeMLError`.

It lives in the runtime so that the host toolchain and the device share one
hierarchy: the host imports these and adds its own subclasses (``DataError``,
``ConfigError``, ``TargetError``, ``SearchError``, ``ExportError`` and
``VerificationError``, drawn in ``edgeml/errors.py``). Every message names what
was wrong (file, column, row, key), the value seen, and the fix.

Every error class the runtime defines::

    Exception
    ├── EdgeMLError                 base of every error raised on purpose; the CLI prints it, exits 2
    │   ├── BundleError             a bundle is missing, incomplete, tampered with, of an unknown format
    │   ├── InputError              records do not match the bundle's input schema
    │   │   ├── RowError            one record could not be scored (``row``, ``column``, ``reason``)
    │   │   └── SourceError         the reader of ``run`` died (an I/O error, a bug): the run ends, exit 1
    │   ├── EngineError             an inference engine is missing or cannot run an artifact
    │   ├── SettingsError           a setting or config file is unknown, missing, mistyped or out of bounds
    │   ├── TelemetryError          MQTT cannot work as asked (paho missing, TLS files unreadable, misuse)
    │   ├── OutboxError             the outbox file cannot be opened, is in use, or cannot take a message
    │   ├── ProtocolError           a topic or message breaks the device ↔ fleet protocol
    │   └── UpdateError             an over-the-air update cannot be done (no ``cryptography``, a key file, a slot)
    │       ├── UpdateRefused       a release, root or archive is refused on purpose (``reason``: why, a fixed word)
    │       └── UpdateUnreachable   the archive could not be fetched this time (the release is not failed)
    └── ValueError
        └── cells.BadValue          internal: one value the encoder cannot read; becomes a RowError

Example:

>>> err = SettingsError(key="window_rows", value=0, allowed="must be at least 1", fix="give a number of rows")
>>> print(err.located({}, {"window_rows": "flag --window-rows"}))
window_rows = 0 (from flag --window-rows): must be at least 1; give a number of rows
"""

from __future__ import annotations

import os
from collections.abc import Mapping


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
        self.reason = message = shorten(message, MESSAGE_CHARS)
        where = f"row {row}" + (f", column {column!r}" if column is not None else "")
        super().__init__(f"{where}: {message}")


class SourceError(InputError):
    """Reading the records of ``run`` failed part way: the rest of the input was not read, so the run fails."""

    exit_code = 1


class EngineError(EdgeMLError):
    """An inference engine is missing or cannot run an artifact."""


class TelemetryError(EdgeMLError):
    """MQTT telemetry cannot work as asked (never raised for a broker that is down)."""


class OutboxError(EdgeMLError):
    """The outbox file cannot be opened, is in use, or cannot take a message."""


class ProtocolError(EdgeMLError):
    """A topic or message does not follow the protocol between devices and the fleet controller."""


class UpdateError(EdgeMLError):
    """An over-the-air update cannot be done as asked: ``cryptography`` missing, a key file unreadable, a download
    that failed, a slot that cannot be written. The bundle running goes on running."""


class UpdateRefused(UpdateError):
    """A signed release, its root or its archive is refused on purpose; ``reason`` says why in one fixed word.

    The reasons (:data:`REASONS`) are what a device reports in its update status (``refusal``), so the fleet
    can count them; the message says what was wrong and the fix.

    >>> err = UpdateRefused("old_version", "release.json: version 6 is not above 7, the release trusted now")
    >>> err.reason, str(err)
    ('old_version', 'update refused (old_version): release.json: version 6 is not above 7, the release trusted now')
    """

    REASONS = ("bad_signature", "unknown_key", "revoked_key", "old_version", "expired", "other_fleet", "bad_root",
               "old_root", "bad_archive", "malformed")

    def __init__(self, reason: str, message: str):
        if reason not in self.REASONS:
            raise ValueError(f"UpdateRefused reason {reason!r} is not one of {', '.join(self.REASONS)}")
        self.reason = reason
        self.detail = message
        super().__init__(f"update refused ({reason}): {message}")


class UpdateUnreachable(UpdateError):
    """The archive could not be fetched (the server down, the link cut past every retry): not the release's
    fault, so it is not marked failed; the part fetched is kept and resumed when it is heard again."""


_UNSET = object()


class SettingsError(EdgeMLError):
    """A setting is unknown, missing, of the wrong type or out of bounds, or a config file cannot be read.

    Raised with a plain ``message``, or, for a refused value, with ``key``,
    ``value``, ``allowed`` (what the value must be) and ``fix``; ``related``
    names the other settings a bound involves (``{"psi_significant": 0.25}``).
    The dataclass that owns a value raises it knowing only the value; the
    settings resolver adds where each value came from with :meth:`located`.
    """

    def __init__(self, message: str | None = None, *, key: str | None = None, value=_UNSET,
                 allowed: str = "", fix: str = "", related: Mapping[str, object] | None = None,
                 sources: Mapping[str, str] | None = None):
        self.key, self.value, self.allowed, self.fix = key, value, allowed, fix
        self.related = dict(related or {})
        self.sources = dict(sources or {})
        self.message = message
        super().__init__(message if message is not None else self._compose())

    def located(self, names: Mapping[str, str], sources: Mapping[str, str]) -> SettingsError:
        """This error with its keys renamed (``names``: dataclass field → setting key) and their sources named."""
        if self.key is None:
            return self

        def rename(k: str) -> str:
            return names.get(k, k)

        return SettingsError(self.message, key=rename(self.key), value=self.value, allowed=self.allowed,
                             fix=self.fix, related={rename(k): v for k, v in self.related.items()},
                             sources=sources)

    def _compose(self) -> str:
        text = f"{self.key} = {_shown(self.key, self.value)}{self._source(self.key)}: {self.allowed}"
        if self.related:
            text += ", with " + ", ".join(f"{k} = {_shown(k, v)}{self._source(k)}" for k, v in self.related.items())
        return text + (f"; {self.fix}" if self.fix else "")

    def _source(self, key: str) -> str:
        return f" (from {self.sources[key]})" if key in self.sources else ""


#: The longest row-error reason kept: a message quotes the value it refused, and a value may be megabytes long.
MESSAGE_CHARS = 1000


def shorten(text: str, limit: int = 200) -> str:
    """``text`` cut to about ``limit`` characters, saying how much was cut: for messages that quote input.

    A 17 MiB value copied whole into an error would travel into logs, drift
    windows and the outbox; a prefix and the count are enough to find it.

    >>> shorten("x" * 50, 20)
    'xxxxxxxxxxxxxxxxxxxx… (30 more characters)'
    >>> shorten("short", 20)
    'short'
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def few(names, limit: int = 5) -> str:
    """At most ``limit`` names, quoted, then how many more: for messages about long lists of columns or keys.

    >>> few(["a", "b", "c", "d", "e", "f", "g", "h"])
    "'a', 'b', 'c', 'd', 'e' and 3 more"
    >>> few(["a", "b"]), few([])
    ("'a', 'b'", 'none')
    """
    names = list(names)
    if not names:
        return "none"
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_count(key: str, value, low: int, what: str) -> None:
    """Refuse ``value`` for ``key`` unless it is a whole number (not a bool) of ``what``, at least ``low``.

    >>> check_count("min_rows", -1, 0, "rows")
    Traceback (most recent call last):
    ...
    edgeml_runtime.errors.SettingsError: min_rows = -1: must be a whole number of rows, at least 0; give min_rows = 1 \
or more
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise SettingsError(key=key, value=value, allowed=f"must be a whole number of {what}, at least {low}",
                            fix=f"give {key} = {max(low, 1)} or more")


def max_threads() -> int:
    """The most inference threads allowed: 4 per CPU of this machine (more only time-slice and eat memory)."""
    return 4 * (os.cpu_count() or 1)


def check_threads(value, key: str = "threads") -> int:
    """``value`` if it is a whole number of inference threads from 1 to :func:`max_threads`, else a SettingsError.

    >>> check_threads(100_000)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    edgeml_runtime.errors.SettingsError: threads = 100000: must be a whole number from 1 to ...
    """
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= max_threads():
        raise SettingsError(key=key, value=value, allowed=f"must be a whole number from 1 to {max_threads()} "
                            "(4 per CPU of this machine)", fix=f"give {key} = 1 (the default) or up to the number "
                            "of CPUs")
    return value


def _shown(key: str, value) -> str:
    if value is _UNSET:
        return "?"
    secret = "password" in key and not key.endswith("_file")
    return "'***'" if secret and value is not None else repr(value)
