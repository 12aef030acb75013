"""The update agent in a device process: made from the process's settings, told the release topics, heard out,
and the one process that works on the update folder.

>>> import tempfile
>>> folder = tempfile.mkdtemp()
>>> held = FolderLock(folder)
>>> FolderLock(folder)
Traceback (most recent call last):
...
edgeml_runtime.errors.UpdateError: ... is in use by another edgeml-runtime process (the device's run or serve, \
or an update by hand): stop it first (systemctl stop edgeml-runtime)
>>> held.close()
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import UpdateError
from ..protocol.updates import release_topic

#: The file locked while a process works on the update folder.
LOCK = "lock"


class FolderLock:
    """An exclusive lock on ``<folder>/lock`` (``flock``), held until :meth:`close` or the process ends: one
    process at a time works on an update folder (the device's run or serve, or ``edgeml-runtime update``)."""

    def __init__(self, folder: str | os.PathLike):
        import fcntl

        self.path = Path(folder) / LOCK
        self._handle = open(self.path, "a+")  # noqa: SIM115 - held open for the process's lifetime
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._handle.close()
            raise UpdateError(f"{Path(folder)} is in use by another edgeml-runtime process (the device's run or "
                              "serve, or an update by hand): stop it first (systemctl stop edgeml-runtime)") from None

    def close(self) -> None:
        self._handle.close()


def open_updates(settings, log: logging.Logger):
    """The :class:`~.agent.UpdateAgent` of a ``run`` or ``serve`` process's ``settings`` (None when updates are
    off)."""
    if settings.update is None:
        return None
    from .agent import UpdateAgent

    return UpdateAgent(settings.update, settings.device, log=log)


def listen(agent, telemetry) -> None:
    """Hear the device's and its fleet's release announcements on ``telemetry``'s connection (None: no broker,
    so releases come by hand only). Call before the telemetry starts."""
    if telemetry is not None:
        d = agent.device
        telemetry.subscribe_releases((release_topic(d.fleet, d.device_id), release_topic(d.fleet)), agent.offer)


def reporter(telemetry):
    """Where the agent's steps go: the outbox (kept by its bound), or nowhere but the log without a broker."""
    return telemetry.send_update if telemetry is not None else (lambda payload: None)


__all__ = ["LOCK", "FolderLock", "listen", "open_updates", "reporter"]
