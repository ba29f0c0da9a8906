"""EchoNextASGI: an ASGI adapter for the WSGI-only EchoNext, with native async views.

- `async def` views run on the event loop: the adapter resolves the route itself and
  awaits the view, so thousands of requests can wait on I/O with no thread each. Their
  CPU cost is the sum of the view's steps on the loop (`Timed`), not its wall time; its I/O
  time is the time it spent suspended on awaits (I/O by construction).
- Sync views run the whole (tamed) WSGI app in a bounded thread pool, so a CPU-bound view
  never blocks the loop beyond the GIL it holds.
- Request bodies are read whole before the view runs (EchoNext reads `wsgi.input` whole).
"""

import asyncio
import inspect
import io
import json
import time
from collections.abc import Awaitable, Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

from backends import echonext
from backends.load import HEADER, LoadMeter, clocks, cpu_and_io
from backends.wsgi import Outcome, call_app, health_body, server_error

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Timed:
    """Awaits a coroutine, adding up the thread CPU time of each of its steps and the time
    it spent suspended between them."""

    def __init__(self, coro: Any) -> None:
        self.coro = coro
        self.cpu = 0.0
        self.suspended = 0.0

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value, error = self.coro, None, None
        while True:
            started = time.thread_time()
            try:
                yielded = coro.throw(error) if error is not None else coro.send(value)
            except StopIteration as stop:
                self.cpu += time.thread_time() - started
                return stop.value
            self.cpu += time.thread_time() - started
            paused = time.perf_counter()
            try:
                value, error = (yield yielded), None
            except BaseException as exc:  # delivered into the view, as a plain await would
                value, error = None, exc
            self.suspended += time.perf_counter() - paused


def environ_for(scope: Scope, body: bytes) -> dict[str, Any]:
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client") or ("", 0)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", ""),
        "PATH_INFO": scope["path"],
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1] or 80),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "REMOTE_ADDR": str(client[0]),
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "echonext.body": body,
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for raw_name, raw_value in scope["headers"]:
        if b"_" in raw_name:  # would merge with the dashed header (X_Forwarded_For), as
            continue          # gunicorn and nginx know: skipped
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        if name == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
        elif name != "CONTENT_LENGTH":
            key = f"HTTP_{name}"
            environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


class EchoNextASGI:
    """Serve an EchoNext app over ASGI (uvicorn), awaiting `async def` views natively."""

    def __init__(self, app: Any, meter: LoadMeter, *, threads: int = 32) -> None:
        self.echonext = echonext.import_echonext()
        self.app = app
        self.meter = meter
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="view")
        self._is_async: dict[tuple[str, str], bool] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is off in the runner; websockets are not served
        path = scope["path"]
        if path == "/__health":
            await _respond(send, 200, [("content-type", "application/json")], health_body())
            return
        if path == "/__load":
            body = json.dumps(self.meter.document()).encode()
            await _respond(send, 200, [("content-type", "application/json")], body)
            return
        body = await _read_body(receive)
        environ = environ_for(scope, body)
        started = self.meter.begin()
        if self._view_is_async(scope["method"], path):
            cpu, io, (_, code, headers, payload) = await self._run_async(environ)
        else:
            loop = asyncio.get_running_loop()
            cpu, io, (_, code, headers, payload) = await loop.run_in_executor(
                self.executor, _timed_call, self.app, environ)
        headers = [(n, v) for n, v in headers if n.lower() != "content-length"]
        report = self.meter.end(started, code, cpu, io)
        headers += [("content-length", str(len(payload))), (HEADER, report)]
        await _respond(send, code, headers, payload)

    def _view_is_async(self, method: str, path: str) -> bool:
        key = (method, path)
        known = self._is_async.get(key)
        if known is None:
            probe = SimpleNamespace(method=method, path=path)
            try:
                route, _ = self.app._find_handler(probe)
                assert echonext.original_check_handler is not None
                handler = echonext.original_check_handler(probe, route)
                known = inspect.iscoroutinefunction(handler)
            except Exception:  # 404, 405, ...: the WSGI path answers those
                known = False
            if len(self._is_async) < 10_000:
                self._is_async[key] = known
        return known

    async def _run_async(self, environ: dict[str, Any]) -> tuple[float, float, Outcome]:
        """EchoNext's own request cycle, with the view awaited instead of called."""
        app = self.app
        cpu_before = time.thread_time()
        response_cls = self.echonext.response.Response
        try:
            request = app._get_request(environ)
            app._apply_middlewares_to_request(request)
            response = app._get_response(request)
            route, kwargs = app._find_handler(request)
            assert echonext.original_check_handler is not None
            view = echonext.original_check_handler(request, route)
            setup_cpu = time.thread_time() - cpu_before
            timed = Timed(view(request, response, **kwargs))
            result = await timed
            cpu_before = time.thread_time()
            if isinstance(result, response_cls):
                result = result.body
            if result is not None:
                app._filling_response(route, response, request, result, view)
            app._apply_middlewares_to_response(response)
            outcome = call_app(lambda env, start: response(env, start), environ)
        except Exception:
            return time.thread_time() - cpu_before, 0.0, server_error(environ)
        return setup_cpu + timed.cpu + time.thread_time() - cpu_before, timed.suspended, outcome


def _timed_call(app: Any, environ: dict[str, Any]) -> tuple[float, float, Outcome]:
    """Run a sync view on this (pool) thread: (CPU, I/O, outcome), timed on this thread, so
    the time queued for a free thread is not counted as I/O."""
    started = clocks()
    outcome = call_app(app, environ)
    _, cpu, io = cpu_and_io(started)
    return cpu, io, outcome


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(send: Send, code: int, headers: list[tuple[str, str]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": code,
                "headers": [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]})
    await send({"type": "http.response.body", "body": body})
