"""systemd's notification protocol (``sd_notify``), written here with the standard library.

Under a unit with ``Type=notify`` systemd counts the service as started when
it sends ``READY=1``, and under ``WatchdogSec=`` restarts it when no
``WATCHDOG=1`` arrives within the interval. Each message is one datagram of
``KEY=value`` lines to the ``AF_UNIX`` socket named by ``$NOTIFY_SOCKET`` (a
path, or ``@name`` in the abstract namespace). ``$WATCHDOG_USEC`` gives the
interval and ``$WATCHDOG_PID``, where set, the one process it watches: any
other process (a child that inherited the environment) must not ping.

:class:`Notifier` is a no-op without ``$NOTIFY_SOCKET`` (a run from a shell),
and never raises: a lost notification is systemd's to notice, not a reason to
stop scoring. The run loop calls :meth:`Notifier.alive` on every turn (after
a batch, or after waiting :data:`~edgeml_runtime.run.IDLE_SECONDS` for one),
so the watchdog is fed by the loop itself, never by a thread that would go on
pinging while the loop is stuck; it pings at most every half interval.

Example, with a socket standing in for systemd's:

>>> import os, socket, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "notify")
>>> systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); systemd.bind(path)
>>> notifier = Notifier.from_environ({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
>>> notifier.watchdog_seconds
2.0
>>> notifier.ready("scoring")
>>> systemd.recv(4096)
b'READY=1\\nSTATUS=scoring'
>>> Notifier.from_environ({}).enabled  # not under systemd: every call does nothing
False
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

#: Longest STATUS= text sent (systemd shows one line in ``systemctl status``).
MAX_STATUS_CHARS = 200


class Notifier:
    """Sends READY, STATUS, WATCHDOG and STOPPING to systemd when ``socket_path`` is set."""

    def __init__(self, socket_path: str | None = None, watchdog_seconds: float | None = None, *, clock=time.monotonic):
        self.socket_path = socket_path or None
        self.watchdog_seconds = watchdog_seconds
        self._clock = clock
        self._last_ping: float | None = None
        self._socket: socket.socket | None = None
        self.sent = 0  #: datagrams sent
        self.failed = 0  #: datagrams that could not be sent

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, *, pid: int | None = None) -> Notifier:
        """The notifier systemd's environment asks for: ``$NOTIFY_SOCKET``, and the watchdog of
        ``$WATCHDOG_USEC`` when ``$WATCHDOG_PID`` is unset or names this process (``pid``).

        >>> Notifier.from_environ({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"},
        ...                       pid=4242).watchdog_seconds is None  # another process is the one watched
        True
        """
        env = os.environ if environ is None else environ
        pid = os.getpid() if pid is None else pid
        watchdog = None
        usec = env.get("WATCHDOG_USEC", "")
        if usec.isdigit() and int(usec) > 0 and env.get("WATCHDOG_PID", str(pid)).strip() == str(pid):
            watchdog = int(usec) / 1e6
        return cls(env.get("NOTIFY_SOCKET"), watchdog)

    @property
    def enabled(self) -> bool:
        return self.socket_path is not None

    def notify(self, **fields) -> None:
        """One datagram of ``KEY=value`` lines (keys upper-cased), e.g. ``notify(ready=1, status="...")``."""
        if not self.enabled:
            return
        text = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        address = self.socket_path
        if address.startswith("@"):  # the abstract namespace: a leading NUL byte
            address = "\0" + address[1:]
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.sendto(text.encode(), address)
            self.sent += 1
        except OSError:
            self.failed += 1

    def ready(self, status: str | None = None) -> None:
        """The service is up (``READY=1``), with a status line; the watchdog's interval starts now."""
        self.notify(ready=1, **({"status": _line(status)} if status else {}))
        self._last_ping = self._clock()

    def status(self, text: str) -> None:
        self.notify(status=_line(text))

    def alive(self) -> None:
        """Feed the watchdog (``WATCHDOG=1``) when half its interval has passed since the last ping."""
        if not self.enabled or self.watchdog_seconds is None:
            return
        now = self._clock()
        if self._last_ping is None or now - self._last_ping >= self.watchdog_seconds / 2:
            self.notify(watchdog=1)
            self._last_ping = now

    def stopping(self, status: str | None = None) -> None:
        """The service is shutting down (``STOPPING=1``): systemd waits for it rather than calling it hung."""
        self.notify(stopping=1, **({"status": _line(status)} if status else {}))

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _line(text: str) -> str:
    one = " ".join(str(text).split())
    return one if len(one) <= MAX_STATUS_CHARS else one[: MAX_STATUS_CHARS - 1] + "…"


__all__ = ["Notifier"]
