"""The app of bench/mixed's scenarios (not the demo the defaults were tuned for).

- GET /json          tiny JSON, no work (light)
- GET /io            waits 20 ms (`async def`: awaited on the async runner's loop) (I/O)
- GET /cpu           burns ~50 ms of this thread's CPU, holding the GIL (heavy)
- GET /shift?ms=N    burns N ms like /cpu: the cost-shift scenario sends it 1 ms, then 50 ms

Imported by the runners as `mixed_app:app` with bench/mixed on PYTHONPATH, so that a bench of
another checkout (`--src`) does not need this file in that checkout.
"""

import asyncio
import time
from typing import Any

from backends.echonext import import_echonext

import_echonext()
from pyechonext.app import ApplicationType, EchoNext  # noqa: E402
from pyechonext.config import Settings  # noqa: E402

IO_MS = 20
CPU_MS = 50

app = EchoNext("bench-mixed", Settings(BASE_DIR=".", TEMPLATES_DIR="."), middlewares=[],
               application_type=ApplicationType.JSON)


def burn(ms: float) -> None:
    deadline = time.thread_time() + ms / 1000
    while time.thread_time() < deadline:
        pass


def _ms(request: Any, default: float) -> float:
    try:
        return min(1000.0, float(request.GET.get("ms", [default])[0]))
    except (TypeError, ValueError):
        return default


@app.route_page("/json")
def tiny_json(request: Any, response: Any) -> dict[str, Any]:
    return {"ok": True}


@app.route_page("/io")
async def io_wait(request: Any, response: Any) -> dict[str, Any]:
    await asyncio.sleep(IO_MS / 1000)
    return {"waited_ms": IO_MS}


@app.route_page("/cpu")
def cpu_burn(request: Any, response: Any) -> dict[str, Any]:
    burn(CPU_MS)
    return {"burned_ms": CPU_MS}


@app.route_page("/shift")
def shift(request: Any, response: Any) -> dict[str, Any]:
    ms = _ms(request, 1.0)
    burn(ms)
    return {"burned_ms": ms}
