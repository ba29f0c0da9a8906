"""An EchoNext app as users write one: parameterised routes, sync and async views.

Served by `python -m backends serve --app tests.echonext_users:app` in
tests/e2e/test_echonext_versions.py.
"""

import asyncio
from typing import Any

from backends.echonext import bounded, import_echonext

import_echonext()
from pyechonext.app import ApplicationType, EchoNext  # noqa: E402
from pyechonext.config import Settings  # noqa: E402

app = bounded(EchoNext("users", Settings(BASE_DIR=".", TEMPLATES_DIR="."), middlewares=[],
                       application_type=ApplicationType.JSON))


@app.route_page("/users")
def users(request: Any, response: Any) -> dict[str, Any]:
    return {"users": "all"}


@app.route_page("/users/{id}")
def user(request: Any, response: Any, id: str) -> dict[str, Any]:
    return {"user": id}


@app.route_page("/users/{id}/orders/{order}")
async def order(request: Any, response: Any, id: str, order: str) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"user": id, "order": order}
