"""The admin status page, in headless Chromium (Debian's `chromium`, installed by `make test`):
it shows the live backends and updates by itself when one goes down.

Chromium is driven over the DevTools protocol with aiohttp's websocket client: navigate,
then read the rendered table with Runtime.evaluate until it shows what the test waits for.
"""

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import (
    BackendFactory,
    BalancerFactory,
    ProcessFactory,
    free_port,
    missing_prerequisite,
    one_pool_config,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "about:blank"]



@pytest.fixture(autouse=True)
def _chromium() -> None:
    if CHROMIUM is None:
        missing_prerequisite("chromium is not installed (make test installs it)")


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        await self.ws.send_json({"id": call_id, "method": method, "params": params})
        while True:
            message = json.loads((await asyncio.wait_for(self.ws.receive(), 10)).data)
            if message.get("id") == call_id:
                assert "error" not in message, message
                result: dict[str, Any] = message["result"]
                return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def wait_for(self, expression: str, expected: Any, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = await self.evaluate(expression)
            if value == expected:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"after {timeout}s the page shows {value!r}, not {expected!r}")


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Page]:
    assert CHROMIUM is not None, "chromium is not installed"
    profile = tmp_path / "chromium-profile"
    proc = subprocess.Popen([CHROMIUM, f"--user-data-dir={profile}", *FLAGS],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            assert proc.poll() is None, f"chromium exited {proc.returncode}"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            await asyncio.sleep(0.05)
        port = port_file.read_text().split()[0]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            page_target = next(t for t in targets if t["type"] == "page")
            async with session.ws_connect(page_target["webSocketDebuggerUrl"],
                                          max_msg_size=0) as ws:
                yield Page(ws)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


STATES = ("[...document.querySelectorAll('tr[data-backend]')]"
          ".map(row => [row.dataset.backend, row.children[1].textContent])")


async def test_status_page_shows_live_backends_and_updates_when_one_goes_down(
    browser: Page, backend_factory: BackendFactory,
    balancer_factory: BalancerFactory,
) -> None:
    first, second = await backend_factory("first"), await backend_factory("second")
    lb = await balancer_factory(one_pool_config(
        first.url, second.url,
        extra="health: {check_interval: 100ms, check_timeout: 1s, rise: 1, fall: 1}\n"))
    await browser.call("Page.navigate", url=f"{lb.admin_url}/")
    await browser.wait_for(STATES, [[first.url, "up"], [second.url, "up"]])
    assert "generation 1" in await browser.evaluate("document.getElementById('meta').textContent")

    second.set_healthy(False)  # its /__health now answers 503: the checks take it out
    await browser.wait_for(STATES, [[first.url, "up"], [second.url, "down"]])
    second.set_healthy(True)
    await browser.wait_for(STATES, [[first.url, "up"], [second.url, "up"]])


WORKERS = ("[...document.querySelectorAll('tr[data-worker]')]"
           ".map(row => [row.children[0].textContent, row.children[2].textContent])")


async def test_status_page_of_a_supervisor_lists_its_workers(
    browser: Page, tmp_path: Path, backend_factory: BackendFactory,
    balancer_process: ProcessFactory,
) -> None:
    backend = await backend_factory("b")
    config = tmp_path / "lb.yaml"
    config.write_text(one_pool_config(backend.url, listen=f"127.0.0.1:{free_port()}"))
    lb = balancer_process(config, "--workers", "2", ready=r"serving with 2 workers")
    await browser.call("Page.navigate", url=f"{lb.admin_url}/")
    await browser.wait_for(WORKERS, [["0", "running"], ["1", "running"]])
    await browser.wait_for(STATES, [[backend.url, "up"]])


async def test_with_an_admin_token_the_status_page_logs_in_with_a_form_and_a_hidden_cookie(
    browser: Page, backend_factory: BackendFactory,
    balancer_factory: BalancerFactory,
) -> None:
    token = "s3cret-token-0123456789"
    backend = await backend_factory("b")
    lb = await balancer_factory(one_pool_config(backend.url, extra=f"admin_token: {token}\n"))
    await browser.call("Page.navigate", url=f"{lb.admin_url}/")
    await browser.wait_for("!!document.querySelector('form input[name=token]')", True)
    await browser.evaluate(
        f"document.querySelector('input[name=token]').value = {json.dumps(token)};"
        "document.querySelector('form').submit()")
    await browser.wait_for(STATES, [[backend.url, "up"]])  # the page, its fetches authorised
    assert await browser.evaluate("location.href") == f"{lb.admin_url}/"  # no token in the URL
    assert await browser.evaluate("document.cookie") == ""  # HttpOnly: out of a script's reach


HISTORY_CONFIG = """\
listen: 127.0.0.1:0
admin: 127.0.0.1:0
pools:
  web:   {{backends: [{a}, {b}], max_inflight: 4, spill_to: [heavy]}}
  heavy: {{backends: [{heavy}]}}
health: {{consecutive_failures: 3, max_ejected_share: 0.5}}
routing:
  cpu_threshold: 100ms
  classes: {{io: web, light_cpu: web, heavy_cpu: heavy}}
  default_class: light_cpu
  learning: {{alpha: 0.5, min_samples: 3, max_routes: 100, hysteresis: 0.2, max_cv: 3}}
"""

CHARTS = ("[...document.querySelectorAll('svg[data-chart]')].map(svg => [svg.dataset.chart,"
          " svg.querySelectorAll('[data-marker=reload]').length > 0])")
POINTS = ("Number(document.querySelector('svg[data-chart=\"rps-web\"] "
          "path[data-series=\"2xx\"]')?.dataset.points ?? 0) >= 5")
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "status-page.png"


async def test_status_page_charts_the_last_minutes_with_the_reload_marked(
    browser: Page, tmp_path: Path, backend_factory: BackendFactory,
    balancer_factory: BalancerFactory,
) -> None:
    """A scripted load (light, then a route turning heavy, some 5xx), a reload half-way: every
    chart shows its series and the reload marker; the route's class change is circled."""
    a, b, heavy = [await backend_factory(n) for n in ("a", "b", "heavy")]
    config = tmp_path / "lb.yaml"
    config.write_text(HISTORY_CONFIG.format(a=a.url, b=b.url, heavy=heavy.url))
    lb = await balancer_factory(config.read_text(), str(config))
    history = lb.balancer.history

    async def load(points: int, cpu: int) -> None:
        """Requests until the history has `points` more points (a deadline, never a sleep)."""
        target = len(history.points) + points
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as client:
            while len(history.points) < target:
                assert time.monotonic() < deadline, "the history did not grow"
                paths = [f"/report/x?cpu={cpu}", "/api/items?cpu=2", "/api/items?cpu=2",
                         "/status/404", "/status/500"]
                await asyncio.gather(*(client.get(lb.url + p) for p in paths * 2))

    await load(5, cpu=5)
    assert (await lb.balancer.reload()).ok
    await load(5, cpu=300)

    await browser.call("Page.navigate", url=f"{lb.admin_url}/")
    expected = ["rps-web", "rps-heavy", "latency", "inflight-web", "inflight-heavy", "routes",
                "weights"]
    await browser.wait_for(CHARTS, [[chart, True] for chart in expected])
    await browser.wait_for(POINTS, True)
    routes = await browser.evaluate(
        "[...document.querySelectorAll('svg[data-chart=routes] path[data-series]')]"
        ".map(p => p.dataset.series)")
    assert "GET /report/x?cpu" in routes
    assert await browser.evaluate(
        "document.querySelectorAll('svg[data-chart=routes] [data-marker=class]').length") >= 1
    assert await browser.evaluate(
        "document.querySelector('svg[data-chart=routes] [data-limit]').dataset.limit"
    ) == "heavy threshold"
    await browser.call("Emulation.setDeviceMetricsOverride", width=1200, height=1300,
                       deviceScaleFactor=1, mobile=False)
    shot = await browser.call("Page.captureScreenshot", format="png")
    png = base64.b64decode(shot["data"])
    assert png.startswith(b"\x89PNG")
    (tmp_path / "status-page.png").write_bytes(png)
    if os.environ.get("UPDATE_SCREENSHOT"):  # UPDATE_SCREENSHOT=1 refreshes docs/'s copy
        SCREENSHOT.parent.mkdir(exist_ok=True)
        SCREENSHOT.write_bytes(png)
