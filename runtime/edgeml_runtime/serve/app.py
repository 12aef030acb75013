"""The routes of ``edgeml-runtime serve``: Open Inference Protocol v2, ``/predict`` and ``/metrics``.

==========================================  ===============================================================
``GET  /v2/health/live``                    200 while the process runs (``{"live": true}``)
``GET  /v2/health/ready``                   200 while a model is served, 503 when shutting down
``GET  /v2``                                server metadata: name, version, extensions
``GET  /v2/models/{m}[/versions/{v}]``      model metadata: inputs (one per raw column), outputs, version
``GET  /v2/models/{m}[/versions/{v}]/ready`` 200 when ``m`` (and ``v``) is the model served, else 404
``POST /v2/models/{m}[/versions/{v}]/infer`` scores tensors (:mod:`.oip`); errors 400, unknown model 404
``POST /predict[?on_error=skip]``           a JSON record, a JSON list of records or CSV (``text/csv``)
``GET  /metrics``                           Prometheus text format (:mod:`.metrics`)
==========================================  ===============================================================

Errors are JSON, ``{"error": "..."}``, naming what was wrong and the fix.
With a bearer token set, every route but the two health checks needs
``Authorization: Bearer <token>`` (401 otherwise). Scoring runs on the
service's worker threads; at most ``max_in_flight`` inference requests are
admitted at once (503 with ``Retry-After`` beyond), and one that is not
scored within ``request_timeout`` is answered 503.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import json
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qsl

from .. import __version__
from ..errors import EdgeMLError, InputError, RowError
from ..parsing import ReadLimits
from ..payloads import dumps
from . import oip
from .http import Request, Response
from .metrics import CONTENT_TYPE
from .service import Service

SERVER_NAME = "edgeml-runtime"
#: Requests of at most this many rows are scored on the event loop itself, larger ones on the worker threads
#: (with the timeout): a row takes ~0.1 ms, and handing it to a thread and back cost more than scoring it
#: (one-row /predict at one connection: 1,128 requests/s through a thread, 1,546 inline).
INLINE_ROWS = 16
#: Rows of one ``/predict`` body whose errors the answer lists (all are counted).
SHOWN_ERRORS = 100
_LIVE = dumps({"live": True})
_NOT_FOUND_HINT = "the routes are /v2/health/live, /v2/health/ready, /v2, /v2/models/{name}[/infer], /predict, /metrics"


def _json(status: int, body: dict, headers=()) -> Response:
    return Response(status, dumps(body), headers=tuple(headers))


def _error(status: int, message: str, headers=()) -> Response:
    return Response(status, dumps({"error": message}), headers=tuple(headers))


class ServeApp:
    """``await app(request) -> Response`` for :class:`~.http.HttpServer`; see the module docstring."""

    def __init__(self, service: Service):
        self.service = service
        options = service.settings.serve
        self.bearer = options.bearer
        self.max_in_flight = options.max_in_flight
        self.timeout = options.request_timeout
        self.pool = ThreadPoolExecutor(options.workers, thread_name_prefix="edgeml-score")
        self.ready = True
        self.in_flight = 0

    async def __call__(self, request: Request) -> Response:
        handler, response = "other", None
        try:
            handler, response = await self._route(request)
        except Exception:  # a bug: answer 500, log it, keep serving
            self.service.log.exception("%s %s failed", request.method, request.path)
            response = _error(500, "the server failed on this request (the log has the details)")
        self.service.metrics.answered(handler, response.status)
        return response

    async def _route(self, request: Request) -> tuple[str, Response]:
        path, method = request.path, request.method
        if path == "/v2/health/live":
            return path, self._only(method, "GET") or Response(200, _LIVE)
        if path == "/v2/health/ready":
            return path, self._only(method, "GET") or self._ready()
        denied = self._denied(request)
        if denied is not None:
            return "unauthorized", denied
        if path == "/predict":
            return path, self._only(method, "POST") or await self._predict(request)
        if path == "/metrics":
            return path, self._only(method, "GET") or self._metrics()
        if path in ("/v2", "/v2/"):
            return "/v2", self._only(method, "GET") or _json(200, {"name": SERVER_NAME, "version": __version__,
                                                                    "extensions": []})
        if path.startswith("/v2/models/"):
            return await self._model_route(request, path[len("/v2/models/"):].split("/"))
        return "other", _error(404, f"no route {path!r}; {_NOT_FOUND_HINT}")

    def _only(self, method: str, allowed: str) -> Response | None:
        if method == allowed or (allowed == "GET" and method == "HEAD"):
            return None
        return _error(405, f"{method} is not allowed here; use {allowed}", headers=[("Allow", allowed)])

    def _denied(self, request: Request) -> Response | None:
        if self.bearer is None:
            return None
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.bearer.encode()):
            return None
        why = "no Authorization header" if not given else "a wrong token"
        return _error(401, f"the request has {why}; send Authorization: Bearer <token> (the token of the server's "
                           "token_file)", headers=[("WWW-Authenticate", 'Bearer realm="edgeml"')])

    def _ready(self) -> Response:
        if self.ready:
            return _json(200, {"ready": True})
        return _json(503, {"ready": False}, headers=[("Retry-After", "1")])

    def _metrics(self) -> Response:
        served = self.service.served
        self.service.metrics.in_flight = self.in_flight
        body = self.service.metrics.render(served.description, self.service.current_window(), self.service.started)
        return Response(200, body, CONTENT_TYPE)

    # -- OIP v2 models ------------------------------------------------------
    async def _model_route(self, request: Request, parts: list[str]) -> tuple[str, Response]:
        served = self.service.served
        manifest = served.manifest
        name, rest = parts[0], parts[1:]
        version = None
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
        action = rest[0] if rest else ""
        handler = "/v2/models/{name}" + ("/versions/{version}" if version is not None else "") + \
                  (f"/{action}" if action else "")
        if len(rest) > 1 or action not in ("", "ready", "infer"):
            return "other", _error(404, f"no route {request.path!r}; {_NOT_FOUND_HINT}")
        if name != manifest.name:
            return handler, _error(404, f"unknown model {name!r}; this server serves {manifest.name!r}")
        if version is not None and version != str(manifest.version):
            return handler, _error(404, f"model {name!r} has no version {version!r}; it serves version "
                                        f"{manifest.version}")
        if action == "infer":
            return handler, self._only(request.method, "POST") or await self._infer(request)
        wrong = self._only(request.method, "GET")
        if wrong is not None:
            return handler, wrong
        if action == "ready":
            return handler, _json(200, {"name": manifest.name, "ready": self.ready})
        return handler, _json(200, oip.model_metadata(manifest, f"edgeml_{served.model.artifact.format}"))

    async def _infer(self, request: Request) -> Response:
        served = self.service.served
        try:
            doc, binary = oip.read_body(request.body, request.headers)
            columns, n = oip.decode_inputs(doc, served.kinds, binary)
            outputs = oip.requested_outputs(doc, served.manifest)
        except oip.OipError as exc:
            return _error(exc.status, str(exc))
        records = [{k: v[0] for k, v in columns.items()}] if n == 1 else columns
        answer = await self._score(records, on_error="fail", status=400)
        if isinstance(answer, Response):
            return answer
        scored_by, result = answer
        return _json(200, oip.response(doc, scored_by.manifest, result, outputs, scored_by.model.artifact.path))

    # -- /predict -------------------------------------------------------------
    async def _predict(self, request: Request) -> Response:
        query = dict(parse_qsl(request.query, keep_blank_values=True)) if request.query else {}
        on_error = query.pop("on_error", "fail")
        if query:
            return _error(400, f"unknown query parameter(s) {', '.join(map(repr, query))}; /predict takes on_error")
        if on_error not in ("fail", "skip"):
            return _error(400, f"on_error={on_error!r}: give on_error=fail (the default) or on_error=skip")
        try:
            records, rows, bad = _records(request)
        except InputError as exc:
            return _error(422, str(exc))
        if bad and on_error == "fail":  # the first bad row, whether unreadable or a bad value before it
            before = [i for i, row in enumerate(rows) if row < bad[0].row]
            first = self.service.served.model.errors([records[i] for i in before],
                                                     row_numbers=[rows[i] for i in before])
            self.service.count_bad(first[:1] or bad[:1])
            return _row_error((first or bad)[0])
        if not records:
            if bad:
                self.service.count_bad(bad)
                return _json(200, {"model": self.service.served.description, "predictions": [],
                                   "errors": [_row(e) for e in bad[:SHOWN_ERRORS]], "bad_rows": len(bad)})
            return _error(422, "the body holds no record; send a JSON object, a JSON list of objects, or CSV with a "
                               "header line (Content-Type: text/csv)")
        answer = await self._score(records, on_error=on_error, row_numbers=rows, bad=bad)
        if isinstance(answer, Response):
            return answer
        served, result = answer
        errors = sorted([*bad, *result.errors], key=lambda e: e.row)
        body = {"predictions": _predictions(result, rows)}
        if errors:
            body["errors"] = [_row(e) for e in errors[:SHOWN_ERRORS]]
            body["bad_rows"] = len(errors)
        # {"model": ..., "predictions": ...}: the model's part encoded once, when it was loaded
        return Response(200, served.model_json + dumps(body)[1:])

    # -- scoring on the worker threads ---------------------------------------------
    async def _score(self, records, status: int = 422, **how):
        """``(served, predictions)``, or the answer when the request cannot be scored (``status``: a bad row's)."""
        if _rows(records) <= INLINE_ROWS:  # scored here, on the event loop: see INLINE_ROWS
            try:
                return self.service.score(records, **how)
            except RowError as exc:
                self.service.count_bad([exc])
                return _row_error(exc, status)
            except EdgeMLError as exc:
                return _error(status, str(exc))
        if self.in_flight >= self.max_in_flight:
            return _error(503, f"{self.in_flight} requests are being scored, the limit (max_in_flight); retry "
                               "shortly", headers=[("Retry-After", "1")])
        self.in_flight += 1
        future = self.pool.submit(self.service.score, records, **how)
        future.add_done_callback(self._done)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout)
        except TimeoutError:
            return _error(503, f"scoring took longer than request_timeout = {self.timeout:g} s; send fewer rows a "
                               "request, or raise request_timeout", headers=[("Retry-After", "1")])
        except RowError as exc:  # refused whole (on_error=fail): its bad row still counts in the window
            self.service.count_bad([exc])
            return _row_error(exc, status)
        except EdgeMLError as exc:
            return _error(status, str(exc))

    def _done(self, future) -> None:
        # on a worker thread: the count is the event loop's, so hand it back there
        self._loop.call_soon_threadsafe(self._release)

    def _release(self) -> None:
        self.in_flight -= 1

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop this app answers on (its in-flight count lives there)."""
        self._loop = loop

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def _rows(records) -> int:
    if type(records) is list:
        return len(records)
    return len(next(iter(records.values()), ()))


def _records(request: Request) -> tuple[list[dict], list[int], list[RowError]]:
    """The body's records, their row numbers (1-based), and the rows that could not be read."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("text/csv", "application/csv"):
        from ..records import read_chunks

        records, rows, bad = [], [], []
        for chunk in read_chunks(io.BytesIO(request.body), "csv", limits=ReadLimits()):
            bad += chunk.errors
            for i, record in enumerate(chunk.records):
                if record is not None:
                    records.append(record)
                    rows.append(chunk.first_row + i)
        return records, rows, bad
    try:
        doc = json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"the body is not JSON ({exc}); send a JSON object or a list of them (Content-Type: "
                         "application/json), or CSV with Content-Type: text/csv") from None
    if isinstance(doc, dict):
        return [doc], [1], []
    if not isinstance(doc, list):
        raise InputError(f"the body is a JSON {type(doc).__name__}; send a JSON object (one record) or a list of them")
    records, rows, bad = [], [], []
    for i, record in enumerate(doc, 1):
        if isinstance(record, dict):
            records.append(record)
            rows.append(i)
        else:
            bad.append(RowError(i, None, f"is a JSON {type(record).__name__}, not an object of column values"))
    return records, rows, bad


def _predictions(result, rows: list[int]) -> list[dict]:
    out = []
    labels = result.labels.tolist()
    if result.probabilities is None:
        return [{"row": rows[i], "value": v} for i, v in zip(result.rows.tolist(), labels, strict=True)]
    classes = [str(c) for c in result.classes]
    for i, label, proba in zip(result.rows.tolist(), labels, result.probabilities.tolist(), strict=True):
        out.append({"row": rows[i], "label": label, "probabilities": dict(zip(classes, proba, strict=True))})
    return out


def _row(e: RowError) -> dict:
    return {"row": e.row, "column": e.column, "error": e.reason}


def _row_error(e: RowError, status: int = 422) -> Response:
    return Response(status, dumps({"error": f"{e}; fix the value, or send on_error=skip to score the other rows",
                                "row": e.row, "column": e.column}))


__all__ = ["ServeApp"]
