"""Load reports from any WSGI or ASGI app, under the user's own server.

Wrap the app and every response carries `endpoint-load-metrics` (see backends/load.py), so
the balancer learns each route's cost with gunicorn, uvicorn, waitress or granian as they are:

    from backends.middleware import LoadReportWSGI   # or LoadReportASGI
    app = LoadReportWSGI(app)

Rules:
- The report is added when the response starts (`start_response` / `http.response.start`),
  so nothing is buffered and streaming responses still stream. The cost covers the request
  up to that point: for the usual view (compute, then respond) that is all of it.
- WSGI: CPU is the thread's CPU clock from the call into the app to the response start.
- ASGI: CPU is the sum of the request's own steps on the event loop (`StepTimer`),
  so other requests sharing the loop are not counted and time suspended on awaits is I/O by
  construction. CPU a framework spends in its thread pool (a sync endpoint run by
  FastAPI/Starlette in a worker thread) is not seen: make such routes `async def`, or host
  them under a WSGI server.
- `GET /__health` and `GET /__load` are answered by the middleware (as the runners do) unless
  `endpoints=False`; the app's own routes are untouched.
- Counters and utilisation are per process unless the server imports the app before it forks
  (gunicorn `--preload`): then the counters are shared by the workers, as in the runners.
"""

import json
import os
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator, MutableMapping
from typing import Any

from backends.load import HEADER, Counters, LoadMeter

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEALTH_BODY = b'{"status": "ok"}'
HEADER_BYTES = HEADER.encode("ascii")


def default_meter(workers: int | None) -> LoadMeter:
    return LoadMeter(Counters(shared=True), workers=workers or os.cpu_count() or 1)


class StepTimer:
    """Awaits a coroutine, adding up the thread CPU time of each of its steps; `cpu_now()`
    includes the step running now (a response starts in the middle of a step)."""

    def __init__(self, coro: Any) -> None:
        self.coro = coro
        self.cpu = 0.0
        self._step_started: float | None = None

    def cpu_now(self) -> float:
        started = self._step_started
        return self.cpu + (time.thread_time() - started if started is not None else 0.0)

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value, error = self.coro, None, None
        while True:
            self._step_started = started = time.thread_time()
            try:
                yielded = coro.throw(error) if error is not None else coro.send(value)
            except StopIteration as stop:
                return stop.value
            finally:
                self.cpu += time.thread_time() - started
                self._step_started = None
            try:
                value, error = (yield yielded), None
            except BaseException as exc:  # delivered into the app, as a plain await would
                value, error = None, exc


class _Once:
    """Ends a request's measurement exactly once: at the response start, or on failure."""

    __slots__ = ("_done", "_lock", "meter", "started")

    def __init__(self, meter: LoadMeter) -> None:
        self.meter = meter
        self.started = meter.begin()
        self._done = False
        self._lock = threading.Lock()

    @property
    def done(self) -> bool:
        return self._done

    def end(self, status: int, cpu_s: float | None = None) -> str | None:
        with self._lock:
            if self._done:
                return None
            self._done = True
        return self.meter.end(self.started, status, cpu_s)


class LoadReportWSGI:
    """WSGI middleware: adds the load report to every response of `app`."""

    def __init__(self, app: WSGIApp, *, meter: LoadMeter | None = None,
                 workers: int | None = None, endpoints: bool = True) -> None:
        self.app = app
        self.meter = meter or default_meter(workers)
        self.endpoints = endpoints

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if self.endpoints and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            path = environ.get("PATH_INFO", "")
            if path == "/__health":
                return _wsgi_json(start_response, HEALTH_BODY)
            if path == "/__load":
                return _wsgi_json(start_response, json.dumps(self.meter.document()).encode())
        once = _Once(self.meter)

        def reporting_start_response(status: str, headers: list[tuple[str, str]],
                                     exc_info: Any = None) -> Any:
            code = _status_code(status)
            report = once.end(code)
            headers = [(n, v) for n, v in headers if n.lower() != HEADER]
            if report is not None:
                headers.append((HEADER, report))
            if exc_info is not None:
                return start_response(status, headers, exc_info)
            return start_response(status, headers)

        try:
            result = self.app(environ, reporting_start_response)
        except BaseException:
            once.end(500)
            raise
        if once.done:
            return result
        return _EndOnClose(result, once)  # a generator app starts its response later


class _EndOnClose:
    """The app's iterable, ending the measurement when the server closes it (PEP 3333)."""

    def __init__(self, result: Iterable[bytes], once: _Once) -> None:
        self.result = result
        self.once = once

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.result)

    def close(self) -> None:
        try:
            close = getattr(self.result, "close", None)
            if close is not None:
                close()
        finally:
            self.once.end(500)


class LoadReportASGI:
    """ASGI middleware: adds the load report to every HTTP response of `app`."""

    def __init__(self, app: ASGIApp, *, meter: LoadMeter | None = None,
                 workers: int | None = None, endpoints: bool = True) -> None:
        self.app = app
        self.meter = meter or default_meter(workers)
        self.endpoints = endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        if self.endpoints and scope.get("method") in ("GET", "HEAD"):
            path = scope.get("path", "")
            if path == "/__health":
                await _asgi_json(send, HEALTH_BODY)
                return
            if path == "/__load":
                await _asgi_json(send, json.dumps(self.meter.document()).encode())
                return
        once = _Once(self.meter)
        timed: StepTimer | None = None

        async def reporting_send(message: Message) -> None:
            if message.get("type") == "http.response.start":
                cpu = timed.cpu_now() if timed is not None else None
                report = once.end(int(message.get("status", 500)), cpu)
                if report is not None:
                    headers = [(n, v) for n, v in message.get("headers", ())
                               if bytes(n).lower() != HEADER_BYTES]
                    headers.append((HEADER_BYTES, report.encode("latin-1")))
                    message = {**message, "headers": headers}
            await send(message)

        try:
            timed = StepTimer(self.app(scope, receive, reporting_send))
            await timed
        finally:
            once.end(500, timed.cpu if timed is not None else None)


def _status_code(status: str) -> int:
    try:
        return int(str(status).split(None, 1)[0])
    except (ValueError, IndexError):
        return 500


def _wsgi_json(start_response: StartResponse, body: bytes) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


async def _asgi_json(send: Send, body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
