"""Read a TOML file, turning every way it can fail into the caller's own error type.

One reader for the runtime's config file and the host's ``edgeml.toml``,
target profiles and TFLite operator sets: the message names the file, the
line and column TOML gave, and the fix.

Example:

>>> import os, tempfile
>>> from edgeml_runtime.errors import SettingsError
>>> path = os.path.join(tempfile.mkdtemp(), "broken.toml")
>>> with open(path, "w") as f:
...     _ = f.write("[run\\n")
>>> try:
...     read_toml(path, SettingsError, "runtime config file")
... except SettingsError as exc:
...     message = str(exc)
>>> message.startswith(path), "not valid TOML" in message, "(at line 1, column 5)" in message
(True, True, True)
"""

from __future__ import annotations

import os
import stat
import tomllib


def read_toml(path: str | os.PathLike, error: type[Exception], what: str, *, missing_ok: bool = False) -> dict:
    """The document in ``path`` as a dict; ``error(message)`` if it is missing, unreadable or not TOML.

    ``what`` says what the file is ("target profile"), for the message.
    With ``missing_ok``, a file that does not exist reads as ``{}``.
    """
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise error(f"{path}: no such {what}; check the path") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML ({exc}); fix the syntax of this {what} at that line") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save this {what} as UTF-8") from None
    except OSError as exc:
        raise error(f"{path}: cannot read this {what} ({exc.strerror}); check the path and its permissions") from None


def exposure(path: str | os.PathLike) -> str | None:
    """Why a file holding a secret is too open (None if it is not): every user may read or write it.

    As ssh does for private keys, but letting the group read: a service's
    config is often ``root:edgeml`` with mode 0640. On systems without POSIX
    modes nothing is refused.
    """
    if os.name != "posix":
        return None
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o006:
        what = "read" if mode & 0o004 else "changed"
        return (f"can be {what} by every user on this machine (mode {mode:04o}); run chmod o-rwx {path} "
                "(or chmod 600)")
    return None
