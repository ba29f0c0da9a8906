"""The demo service: one EchoNext app with the seed design's four workloads, each true to its name.

- GET  /api/items?id=N          small JSON (an API call; almost no work)
- GET  /db/query?user=N         a database query that waits on I/O (see below)
- GET  /render/page?name=...    a Jinja2 page: 60 product rows (light CPU, ~3 ms)
- POST /process/image           blur + 2x downscale of an uploaded PGM/PPM in pure Python,
                                holding the GIL (~50-200 ms); answers the processed image
- GET  /io/sleep?ms=N           waits N ms (async view)
- GET  /cpu/spin?ms=N           burns N ms of CPU
- GET  /debug/error             raises (to show errors are answered 500)

The database is SQLite (an in-memory table of 20,000 orders with an index), queried for
real on every request. SQLite runs in-process, so the round trip to a database server that a
real service pays is modelled as a wait of ECHONEXT_DB_LATENCY_MS (default 20 ms) before the
query: `await asyncio.sleep`, i.e. time spent waiting, not CPU. The view is `async def`, so
the async runner awaits it on its event loop while threaded and multiprocess runners block
a thread or a process for the wait, as they would on a real database driver.

ECHONEXT_SLOWDOWN=F (the runners' --slowdown) multiplies every wait and every CPU burn.
ECHONEXT_SLOWDOWN_ON_SIGNAL=F (--slowdown-on-signal): SIGUSR1 sets that factor to F from then
on, SIGUSR2 back to ECHONEXT_SLOWDOWN (threaded and async runners: the process that imports
this module on its main thread), so a benchmark can turn a backend slow mid-run.
"""

import asyncio
import os
import random
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import jinja2

from backends.echonext import import_echonext

import_echonext()
from pyechonext.app import ApplicationType, EchoNext  # noqa: E402
from pyechonext.config import Settings  # noqa: E402

HERE = Path(__file__).resolve().parent
SLOWDOWN = float(os.environ.get("ECHONEXT_SLOWDOWN", "1") or 1)
SLOWDOWN_AT_START = SLOWDOWN
SLOWDOWN_ON_SIGNAL = float(os.environ.get("ECHONEXT_SLOWDOWN_ON_SIGNAL", "0") or 0)


def _set_slowdown(signum: int, frame: object) -> None:
    global SLOWDOWN
    SLOWDOWN = SLOWDOWN_ON_SIGNAL if signum == signal.SIGUSR1 else SLOWDOWN_AT_START


if SLOWDOWN_ON_SIGNAL > 0 and threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGUSR1, _set_slowdown)
    signal.signal(signal.SIGUSR2, _set_slowdown)
DB_LATENCY_MS = float(os.environ.get("ECHONEXT_DB_LATENCY_MS", "20"))

app = EchoNext(
    "echonext-demo",
    Settings(BASE_DIR=str(HERE), TEMPLATES_DIR=str(HERE / "templates")),
    middlewares=[],
    application_type=ApplicationType.JSON,
)


def _int(request: Any, name: str, default: int) -> int:
    try:
        return int(request.GET.get(name, [default])[0])
    except (TypeError, ValueError):
        return default


# -- JSON API ----------------------------------------------------------------------------------

@app.route_page("/api/items")
def api_items(request: Any, response: Any) -> dict[str, Any]:
    started = time.thread_time()
    item_id = _int(request, "id", 1)
    _scale_cpu(started)
    return {"id": item_id, "name": f"item-{item_id}", "price": round(item_id * 1.25 % 500, 2),
            "tags": ["demo", "json"], "in_stock": item_id % 3 != 0}


# -- database ----------------------------------------------------------------------------------

class OrdersDB:
    """20,000 orders in one in-memory SQLite database per process (shared cache), built
    once on first use; each thread queries it through its own connection."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._pid = 0
        self._keeper: sqlite3.Connection | None = None  # keeps the shared database alive

    def _uri(self) -> str:
        return f"file:echonext-orders-{os.getpid()}?mode=memory&cache=shared"

    def _build(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            keeper = sqlite3.connect(self._uri(), uri=True, check_same_thread=False)
            rng = random.Random(7)
            keeper.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, "
                           "user_id INTEGER, total REAL, status TEXT, created REAL)")
            keeper.executemany("INSERT OR REPLACE INTO orders VALUES (?, ?, ?, ?, ?)", [
                (i, rng.randrange(1000), round(rng.uniform(5, 500), 2),
                 rng.choice(["paid", "shipped", "returned"]), 1.7e9 + i * 60)
                for i in range(20_000)])
            keeper.execute("CREATE INDEX IF NOT EXISTS orders_user ON orders (user_id, created)")
            keeper.commit()
            self._keeper, self._pid = keeper, os.getpid()

    def _connection(self) -> sqlite3.Connection:
        if self._pid != os.getpid():  # first use in this process (or after a fork)
            self._build()
            self._local = threading.local()
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = sqlite3.connect(self._uri(), uri=True)
        return conn

    def recent_orders(self, user: int) -> list[dict[str, Any]]:
        rows = self._connection().execute(
            "SELECT id, total, status FROM orders WHERE user_id = ? "
            "ORDER BY created DESC LIMIT 10", (user % 1000,)).fetchall()
        return [{"id": r[0], "total": r[1], "status": r[2]} for r in rows]


DB = OrdersDB()


@app.route_page("/db/query")
async def db_query(request: Any, response: Any) -> dict[str, Any]:
    user = _int(request, "user", 1)
    await asyncio.sleep(DB_LATENCY_MS * SLOWDOWN / 1000)  # the round trip to the DB server
    return {"user": user, "orders": DB.recent_orders(user)}


# -- template ----------------------------------------------------------------------------------

TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                               autoescape=True)
CATEGORIES = ["Garden", "Kitchen", "Books", "Toys", "Tools", "Music"]


@app.route_page("/render/page")
def render_page(request: Any, response: Any) -> Any:
    started = time.thread_time()
    name = request.GET.get("name", ["Garden"])[0]
    rng = random.Random(name)
    adjectives = ["red", "blue", "tiny", "grand"]
    products: list[dict[str, Any]] = [
        {"id": i, "name": f"{rng.choice(adjectives)} widget {i}",
         "category": rng.choice(CATEGORIES), "price": rng.uniform(1, 300),
         "rating": rng.randrange(6), "in_stock": rng.random() > 0.2,
         "tags": rng.sample(["new", "sale", "eco", "gift", "<b>hot</b>"], 2)}
        for i in range(60)
    ]
    html = TEMPLATES.get_template("page.html").render(
        title=f"{name} department", name=name, sections=CATEGORIES, products=products,
        in_stock=sum(p["in_stock"] for p in products),
        average=sum(p["price"] for p in products) / len(products),
        visitor=request.user_agent or "anonymous")
    _scale_cpu(started)
    response.content_type = "text/html"
    response.body = html
    return response


# -- image processing --------------------------------------------------------------------------

def parse_pnm(data: bytes) -> tuple[int, int, int, bytes]:
    """(width, height, channels, pixels) of a binary PGM (P5) or PPM (P6) with maxval 255."""
    fields: list[bytes] = []
    pos = 0
    while len(fields) < 4:
        while pos < len(data) and data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while end < len(data) and not data[end:end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    magic, width, height, maxval = fields[0], int(fields[1]), int(fields[2]), int(fields[3])
    if magic not in (b"P5", b"P6") or maxval != 255:
        raise ValueError("expected a binary PGM (P5) or PPM (P6) with maxval 255")
    channels = 1 if magic == b"P5" else 3
    pixels = data[pos + 1: pos + 1 + width * height * channels]
    if len(pixels) != width * height * channels:
        raise ValueError("image data is truncated")
    return width, height, channels, pixels


def sample_image(size: int = 208) -> bytes:
    pixels = bytes((x * 7 + y * 3 + (x * y) % 17) % 256 for y in range(size) for x in range(size))
    return b"P5\n%d %d\n255\n" % (size, size) + pixels


def blur_and_halve(width: int, height: int, channels: int, pixels: bytes) -> tuple[int, int, bytes]:
    """A 3x3 box blur, then a 2x downscale (2x2 average), in pure Python."""
    stride = width * channels
    blurred = bytearray(len(pixels))
    for y in range(height):
        rows = [max(0, min(height - 1, y + dy)) * stride for dy in (-1, 0, 1)]
        for x in range(width):
            cols = [max(0, min(width - 1, x + dx)) * channels for dx in (-1, 0, 1)]
            for c in range(channels):
                total = 0
                for row in rows:
                    for col in cols:
                        total += pixels[row + col + c]
                blurred[y * stride + x * channels + c] = total // 9
    out_w, out_h = width // 2, height // 2
    out = bytearray(out_w * out_h * channels)
    for y in range(out_h):
        for x in range(out_w):
            for c in range(channels):
                a = (2 * y) * stride + (2 * x) * channels + c
                out[(y * out_w + x) * channels + c] = (
                    blurred[a] + blurred[a + channels] + blurred[a + stride]
                    + blurred[a + stride + channels]) // 4
    return out_w, out_h, bytes(out)


@app.route_page("/process/image", methods=["POST"])
def process_image(request: Any, response: Any) -> Any:
    data = request.environ.get("echonext.body") or sample_image()
    width, height, channels, pixels = parse_pnm(data)
    for _ in range(max(1, round(SLOWDOWN))):
        out_w, out_h, out = blur_and_halve(width, height, channels, pixels)
    magic = b"P5" if channels == 1 else b"P6"
    response.content_type = ("image/x-portable-graymap" if channels == 1
                             else "image/x-portable-pixmap")
    response.body = b"%s\n%d %d\n255\n" % (magic, out_w, out_h) + out
    return response


# -- test routes -------------------------------------------------------------------------------

@app.route_page("/io/sleep")
async def io_sleep(request: Any, response: Any) -> dict[str, Any]:
    ms = _int(request, "ms", 20)
    await asyncio.sleep(ms * SLOWDOWN / 1000)
    return {"slept_ms": ms}


def _burn_extra(ms: float) -> None:
    """Burn CPU until this thread has used `ms` (times the slowdown) more milliseconds."""
    deadline = time.thread_time() + ms * SLOWDOWN / 1000
    while time.thread_time() < deadline:
        pass


def _scale_cpu(started: float) -> None:
    """With a slowdown F, burn (F - 1) times the CPU this view has used since `started`."""
    if SLOWDOWN > 1:
        _burn_extra((time.thread_time() - started) * 1000 * (SLOWDOWN - 1) / SLOWDOWN)


@app.route_page("/cpu/spin")
def cpu_spin(request: Any, response: Any) -> dict[str, Any]:
    ms = _int(request, "ms", 10)
    _burn_extra(ms)
    return {"spun_ms": ms}


@app.route_page("/debug/error")
def debug_error(request: Any, response: Any) -> dict[str, Any]:
    raise RuntimeError("this view always fails")
