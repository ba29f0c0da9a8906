"""The three ways to host an EchoNext app, behind one registry (as uvicorn's `loops/`).

Each runner module has `serve(options: ServeOptions) -> None`, which blocks until SIGTERM or
SIGINT and then stops gracefully. Runner modules are imported only when chosen, so that one
kind's server package is not needed to run another kind.
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

KINDS = {
    "async": "backends.runners.async_runner",
    "threaded": "backends.runners.threaded",
    "multiprocess": "backends.runners.multiprocess",
}


@dataclass(frozen=True, slots=True)
class Listen:
    host: str = ""
    port: int = 0
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> "Listen":
        """`host:port` or `unix:/path`."""
        if text.startswith("unix:"):
            return cls(path=text[len("unix:"):])
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"{text!r} is not host:port or unix:/path")
        return cls(host=host or "127.0.0.1", port=int(port))

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ServeOptions:
    app: str
    listen: Listen
    workers: int = 2
    threads: int = 8


def runner(kind: str) -> Callable[[ServeOptions], None]:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r} (expected one of: {', '.join(KINDS)})")
    serve: Callable[[ServeOptions], None] = importlib.import_module(KINDS[kind]).serve
    return serve


def load_app(ref: str) -> Any:
    """`module:attr` → the EchoNext app, imported with the side effects neutralised."""
    from backends.echonext import bounded, import_echonext

    import_echonext()
    module_name, _, attr = ref.partition(":")
    if not attr:
        raise ValueError(f"{ref!r} is not module:attr")
    app = getattr(importlib.import_module(module_name), attr)
    return bounded(app)
