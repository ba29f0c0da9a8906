"""Import pyechonext (0.7.17 or 0.7.18) without its side effects, and fix its per-request defects.

`import_echonext()` is the only way the backends import the framework. It neutralises, at
run time and without touching site-packages:

at import
- the update check (an HTTP GET to the package index with no timeout): `requests.get`
  raises RequestException while the package imports, so no request leaves the process;
- the banner printed to stdout: stdout is captured while it imports;
- `rich.traceback.install(show_locals=True)`: sys.excepthook and threading.excepthook are
  put back, so a crash never prints locals (secrets included);
- the `pyechonext` logger at DEBUG to stdout and to ./pyechonext.log: the file handler is
  never opened (no file is written), the handlers are removed, and the level is CRITICAL
  (it logs every 404 at ERROR; view errors are logged by backends.wsgi instead).

per request (class-level patches, so every app in the process is fixed)
- the router's `print()` on every request: the router module's `print` is a no-op;
- every request and response kept forever in `app.history`: see `bounded(app)`;
- each view result cached under its body (`get_and_save_cache_item`): results pass through;
- a view that raises answered 200 with `{}`: the exception propagates to `WSGIHost`,
  which answers 500;
- binary bodies encoded as their repr (`b'...'`): bytes pass through unchanged;
- a binary request body (an image upload) makes `Request()` raise UnicodeDecodeError while
  it builds `request.POST`: such a body gives an empty POST (the raw bytes are in
  `request.environ["echonext.body"]`, set by the hosts);
- `async def` views (which EchoNext would call and never await): run to completion on a
  per-thread event loop under WSGI, awaited natively by the ASGI adapter;
- parameterised routes (`/users/{id}`): 0.7.17 never finds them (it looks up route
  patterns that start with the request path, and `/users/42` is no prefix of `/users/{id}`),
  and in both releases a parameter matches across `/` (`/users/{id}` answers
  `/users/5/orders/9` with id `5/orders/9`). The router's lookup is replaced by one for both:
  the exact path, else the first pattern (in the order added) that `parse` matches with no
  `/` in any parameter.
Each patch checks that what it replaces exists, so a release that renames it fails at import
(naming the release) instead of running unpatched.
The header and status defects (request headers echoed into the response, None values,
bare `404` status lines, `start_response` called by keyword) are fixed in `backends.wsgi`.
"""

import asyncio
import contextlib
import importlib
import inspect
import io
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

_lock = threading.Lock()
_done = False
original_check_handler: Callable[..., Any] | None = None


class _NullFileHandler(logging.NullHandler):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__()


class _NoHistory(list[Any]):
    """Stands in for `app.history`: remembers nothing."""

    def append(self, item: Any) -> None:
        return None


def import_echonext() -> Any:
    """The pyechonext module, imported once with every fix above applied."""
    global _done
    with _lock:
        if not _done:
            _import_quietly()
            _patch()
            _done = True
    return sys.modules["pyechonext"]


def _import_quietly() -> None:
    import requests

    def no_network(*args: object, **kwargs: object) -> None:
        raise requests.RequestException("update check disabled by backends.echonext")

    hooks = (sys.excepthook, threading.excepthook)
    real_get, real_file_handler = requests.get, logging.FileHandler
    requests.get = no_network  # type: ignore[assignment]
    logging.FileHandler = _NullFileHandler  # type: ignore[misc,assignment]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            importlib.import_module("pyechonext")
            importlib.import_module("pyechonext.app")
    finally:
        requests.get = real_get
        logging.FileHandler = real_file_handler  # type: ignore[misc]
        sys.excepthook, threading.excepthook = hooks
    logger = logging.getLogger("pyechonext")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.CRITICAL)  # it logs every 404 and 405 at ERROR
    logger.propagate = True


SUPPORTED = ("0.7.17", "0.7.18")


def _require(owner: Any, *names: str) -> None:
    missing = [name for name in names if not hasattr(owner, name)]
    if missing:
        version = getattr(sys.modules.get("pyechonext"), "__version__", "?")
        raise ImportError(f"pyechonext {version}: {getattr(owner, '__name__', owner)} has no "
                          f"{', '.join(missing)}; backends/echonext.py patches releases "
                          f"{', '.join(SUPPORTED)}")


def _patch() -> None:
    global original_check_handler
    app_module = importlib.import_module("pyechonext.app")
    routes_module = importlib.import_module("pyechonext.mvc.routes")
    response_module = importlib.import_module("pyechonext.response")
    request_module = importlib.import_module("pyechonext.request")
    echonext_cls = app_module.EchoNext
    _require(echonext_cls, "get_and_save_cache_item", "_process_exceptions_from_middlewares")
    _require(app_module, "_check_handler")
    _require(request_module, "_build_post_params_dict")
    _require(response_module.Response, "_encode_body")
    _require(routes_module.Router, "resolve")
    _patch_parameterised_routes(routes_module)

    setattr(routes_module, "print", lambda *args, **kwargs: None)  # noqa: B010

    def pass_through(self: Any, key: Any, value: Any) -> Any:
        return value

    echonext_cls.get_and_save_cache_item = pass_through

    def reraise(self: Any, exception: Exception) -> None:
        for middleware in self.middlewares:
            middleware().process_exception(exception)
        raise exception

    echonext_cls._process_exceptions_from_middlewares = reraise

    original_post = request_module._build_post_params_dict

    def tolerant_post(raw: bytes) -> Any:
        try:
            return original_post(raw)
        except (UnicodeDecodeError, ValueError):
            return {}

    setattr(request_module, "_build_post_params_dict", tolerant_post)  # noqa: B010

    response_cls = response_module.Response
    original_encode = response_cls._encode_body

    def encode_body(self: Any) -> None:
        if isinstance(self.body, bytes | bytearray):
            self.body = bytes(self.body)
            return
        original_encode(self)

    response_cls._encode_body = encode_body

    original_check_handler = app_module._check_handler

    def check_handler(request: Any, route: Any) -> Any:
        assert original_check_handler is not None
        handler = original_check_handler(request, route)
        if inspect.iscoroutinefunction(handler):
            return _run_to_completion(handler)
        return handler

    setattr(app_module, "_check_handler", check_handler)  # noqa: B010


def _patch_parameterised_routes(routes_module: Any) -> None:
    """One route lookup for both releases: the exact path, else the first parameterised
    route (in the order added) whose parameters each match one path segment."""
    _require(routes_module, "parse", "prepare_url", "URLNotFound")

    def resolve(self: Any, request: Any, raise_404: bool | None = True) -> Any:
        url = routes_module.prepare_url(request.path)
        url = url if self.prefix is None else f"{self.prefix}{url}"
        route = self.routes.get(url)
        if route is not None and not _is_pattern(url):
            return route, {}
        for pattern, candidate in self.routes.items():
            if _is_pattern(pattern):
                found = routes_module.parse.parse(pattern, url)
                if found is not None and not any("/" in str(v) for v in found.named.values()):
                    return candidate, found.named
        if raise_404:
            raise routes_module.URLNotFound(f'URL "{url}" not found.')
        return None, None

    routes_module.Router.resolve = resolve


def _is_pattern(path: str) -> bool:
    return "{" in path and "}" in path


_loops = threading.local()


def _run_to_completion(view: Callable[..., Any]) -> Callable[..., Any]:
    """A sync callable running an `async def` view on this thread's own event loop."""

    def run(*args: Any, **kwargs: Any) -> Any:
        loop = getattr(_loops, "loop", None)
        if loop is None:
            loop = _loops.loop = asyncio.new_event_loop()
        return loop.run_until_complete(view(*args, **kwargs))

    return run


def bounded(app: Any) -> Any:
    """The app with its history replaced by one that keeps nothing; returns the app."""
    app.history = _NoHistory()
    return app
