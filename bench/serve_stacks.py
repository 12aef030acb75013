"""One tiny app on three HTTP stacks, so that only the stack differs: how ``edgeml-runtime serve`` chose its own.

``python bench/serve_stacks.py STACK BUNDLE PORT`` serves, until SIGTERM or
SIGINT, the same two routes on the stack named:

* ``GET /v2/health/live``: a constant JSON body;
* ``POST /predict``: one JSON record, scored by ``Model.predict``, answered
  with its label and probabilities.

Stacks: ``edgeml`` (:class:`edgeml_runtime.serve.http.HttpServer`, asyncio
streams, what ``serve`` runs) and ``edgeml-uvloop`` (the same on uvloop's
event loop), ``http.server`` (the standard library's
``ThreadingHTTPServer``, HTTP/1.1 keep-alive, Nagle off so that its separate
head and body writes are not held back), ``uvicorn`` (a bare ASGI app, the
upper bound for any framework on it, with uvloop and httptools when they are
installed) and ``uvicorn-h11`` (pure-Python parsing on the standard asyncio
loop, like ``edgeml``). ``bench/bench_serve.py`` drives them with wrk;
importing this module runs nothing.
"""

from __future__ import annotations

import json
import signal
import sys

STACKS = ("edgeml", "edgeml-uvloop", "http.server", "uvicorn", "uvicorn-h11")
LIVE = b'{"live":true}'


class App:
    """The routes, as ``answer(method, path, body) -> (status, body)``, whatever the stack."""

    def __init__(self, bundle: str):
        from edgeml_runtime import Model

        self.model = Model.load(bundle)

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        if path == "/v2/health/live" and method == "GET":
            return 200, LIVE
        if path == "/predict" and method == "POST":
            result = self.model.predict([json.loads(body)])
            classes = [str(c) for c in result.classes]
            out = [{"label": label, "probabilities": dict(zip(classes, p, strict=True))}
                   for label, p in zip(result.labels.tolist(), result.probabilities.tolist(), strict=True)]
            return 200, json.dumps({"predictions": out}).encode()
        return 404, b'{"error":"no such route"}'


def run_edgeml(app: App, port: int, uvloop: bool = False) -> None:
    import asyncio

    from edgeml_runtime.serve.http import HttpServer, Response

    async def handler(request):
        status, body = app.answer(request.method, request.path, request.body)
        return Response(status, body)

    async def main():
        server = HttpServer(handler, port=port)
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.shutdown()

    if uvloop:
        import uvloop as loops

        loops.install()
    asyncio.run(main())


def run_http_server(app: App, port: int) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _answer(self, body: bytes) -> None:
            status, out = app.answer(self.command, self.path, body)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def do_GET(self):  # noqa: N802 (the standard library's naming)
            self._answer(b"")

        def do_POST(self):  # noqa: N802
            self._answer(self.rfile.read(int(self.headers.get("Content-Length", 0))))

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def run_uvicorn(app: App, port: int, pure_python: bool) -> None:
    import uvicorn

    async def asgi(scope, receive, send):
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        status, out = app.answer(scope["method"], scope["path"], body)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out})

    how = {"loop": "asyncio", "http": "h11"} if pure_python else {"loop": "auto", "http": "auto"}
    uvicorn.run(asgi, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off", **how)


def uvicorn_parts() -> str:
    """What ``uvicorn`` (auto) runs on here: its loop and its HTTP parser."""
    import importlib.util

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    parser = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"{loop} + {parser}"


def main(argv: list[str]) -> None:
    stack, bundle, port = argv[0], argv[1], int(argv[2])
    app = App(bundle)
    if stack in ("edgeml", "edgeml-uvloop"):
        run_edgeml(app, port, uvloop=stack == "edgeml-uvloop")
    elif stack == "http.server":
        run_http_server(app, port)
    elif stack in ("uvicorn", "uvicorn-h11"):
        run_uvicorn(app, port, pure_python=stack == "uvicorn-h11")
    else:
        sys.exit(f"unknown stack {stack!r}; one of {', '.join(STACKS)}")


if __name__ == "__main__":
    main(sys.argv[1:])
