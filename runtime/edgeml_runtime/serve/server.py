"""The ``serve`` process: :class:`Server` puts the parts on one event loop.

:func:`serve` runs it in the foreground with signal handlers (SIGTERM and
SIGINT stop it gracefully, SIGHUP loads the bundle path again and swaps it
in); :meth:`Server.start_in_thread` runs it beside the caller (the tests, an
embedding program).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading

from ..sdnotify import Notifier
from .app import ServeApp
from .http import HttpLimits, HttpServer
from .service import Service

#: Seconds between checks for a drift window whose time is up.
POLL_SECONDS = 0.25


class Server:
    """One ``serve`` process's server: the :class:`Service`, the routes and the HTTP server on an event loop."""

    def __init__(self, bundle: str | os.PathLike, settings, *, log: logging.Logger | None = None):
        self.settings = settings
        self.log = log or logging.getLogger("edgeml_runtime.serve")
        self.service = Service(bundle, settings, log=self.log)
        self.app = ServeApp(self.service)
        o = settings.serve
        limits = HttpLimits(max_body_bytes=o.max_body_bytes, request_timeout=o.request_timeout,
                            keep_alive_seconds=o.keep_alive_seconds, grace_seconds=o.grace_seconds)
        self.http = HttpServer(self.app, host=o.host, port=o.port, limits=limits, tls=o.tls_context(), log=self.log)
        self.notifier = Notifier.from_environ()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        host = self.http.host if self.http.host not in ("0.0.0.0", "::") else "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return f"{self.http.scheme}://{host}:{self.http.port}"

    async def run(self, on_ready=None) -> None:
        """Serve until :meth:`stop`; then finish the requests in flight and send the last window."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.app.bind(self._loop)
        await self.http.start()
        m = self.service.served.manifest
        self.log.info("serving %s %s on %s (Open Inference Protocol at /v2, /predict, /metrics)", m.name, m.version,
                      self.url)
        self.notifier.ready(f"serving {m.name} {m.version} on {self.url}")
        if on_ready is not None:
            on_ready()
        ticker = asyncio.create_task(self._tick())
        try:
            await self._stop.wait()
        finally:
            self.app.ready = False
            self.notifier.stopping("finishing the requests in flight")
            left = await self.http.shutdown()
            if left:
                self.log.warning("%d connection(s) still busy after grace_seconds = %g were closed", left,
                                 self.settings.serve.grace_seconds)
            ticker.cancel()
            self.app.close()
            await asyncio.to_thread(self.service.close, self._stop.is_set())  # not set: an exception ends it
            self.notifier.close()
            self.log.info("stopped")

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            self.notifier.alive()
            try:
                await asyncio.to_thread(self.service.poll)
            except Exception:  # a sink that fails is logged; serving goes on
                self.log.exception("closing drift windows failed")

    def stop(self) -> None:
        """Ask the server to stop (from any thread, or a signal handler)."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    def swap(self, bundle: str | os.PathLike):
        """Serve ``bundle`` from now on (:meth:`Service.swap`); from any thread but the event loop's."""
        return self.service.swap(bundle)

    def start_in_thread(self, timeout: float = 30.0) -> Server:
        """Serve on a thread of its own; returns once the port is open (:attr:`url`)."""
        def main():
            try:
                asyncio.run(self.run(on_ready=self._started.set))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller of start_in_thread
                self._error = exc
                self._started.set()

        self._thread = threading.Thread(target=main, name="edgeml-serve", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError(f"serve did not start within {timeout:g} s")
        if self._error is not None:
            raise self._error
        return self

    def join(self, timeout: float | None = None) -> None:
        """Stop and wait for the thread of :meth:`start_in_thread`."""
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> Server:
        return self.start_in_thread()

    def __exit__(self, *exc) -> None:
        self.join(60)


def serve(bundle: str | os.PathLike, settings) -> None:
    """``edgeml-runtime serve``: logging to stderr, then :class:`Server` in the foreground until a signal."""
    logging.basicConfig(level=settings.serve.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    server = Server(bundle, settings)

    def reload():
        try:
            server.swap(server.service.bundle)
        except Exception as exc:  # a bundle that does not load: the current one keeps serving
            server.log.error("SIGHUP: cannot load %s (%s); still serving the bundle loaded before",
                             server.service.bundle, exc)

    async def main():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: threading.Thread(target=reload, daemon=True).start())
        await server.run()

    asyncio.run(main())


__all__ = ["Server", "serve"]
