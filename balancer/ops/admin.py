"""The admin listener: `/` (status page), `/healthz`, `/livez`, `/readyz`, `/status` (JSON),
`/status/history` (the last 15 minutes, JSON), `/metrics`, `POST /reload`, `POST /login` (the
login form's, with an admin token).

I/O shell. It is bound only to the `admin` address, never to a public listener. One app
serves both kinds of process: it asks what it shows of an `AdminSource`, which the single
process (`balancer.ops.server.Balancer`) and the supervisor (which answers for its workers)
implement; the routes, the guard and the probes' wording are the same for both.
"""

import contextlib
import hashlib
import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST
from yarl import URL

from balancer.config.addresses import Address
from balancer.config.model import Config
from balancer.ops.reloads import ReloadOutcome

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminSource(Protocol):
    """What the admin listener asks of the process it serves."""

    @property
    def config(self) -> Config:
        """The config in force: the guard reads the token and the admin address from it."""
        ...

    @property
    def draining(self) -> bool:
        """From SIGTERM on: /healthz and /readyz answer 503 `draining`."""
        ...

    def not_ready(self) -> str | None:
        """Why /readyz answers 503 when not draining (`starting`, ...); None: ready."""
        ...

    async def status_document(self) -> dict[str, Any]:
        """`/status`."""
        ...

    async def history_document(self, since: float | None) -> dict[str, Any]:
        """`/status/history`: the points after `since` (wall clock), or all of them."""
        ...

    async def exposition(self) -> bytes:
        """`/metrics`, in Prometheus' text format."""
        ...

    async def reload(self) -> ReloadOutcome:
        """POST /reload: read the config file again; on any error keep the current one."""
        ...


SOURCE: web.AppKey[AdminSource] = web.AppKey("source")


def build_admin_app(source: AdminSource, *, check_token: bool = True) -> web.Application:
    """`check_token` False: a worker's private socket (in the supervisor's 0700 directory),
    served without any guard."""
    middlewares = [guard_middleware(_source_guard)] if check_token else []
    app = web.Application(middlewares=middlewares)
    app[SOURCE] = source
    app.router.add_get("/", status_page)
    app.router.add_post("/login", login)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_get("/status/history", history)
    app.router.add_post("/reload", reload)
    app.router.add_get("/metrics", metrics)
    return app


async def metrics(request: web.Request) -> web.Response:
    body = await request.app[SOURCE].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# -- the guard ---------------------------------------------------------------------------------

COOKIE = "balancer_admin"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


@dataclass(frozen=True, slots=True)
class Guard:
    """What the admin listener checks, from the config in force."""

    token: str | None
    address: Address | None            # the configured admin address
    allowed_hosts: tuple[str, ...] = ()

    @classmethod
    def of(cls, config: Config) -> "Guard":
        return cls(config.admin_token, config.admin, config.admin_allowed_hosts)


GUARD_KEY: web.RequestKey[Guard] = web.RequestKey("guard", Guard)


def _source_guard(request: web.Request) -> Guard:
    return Guard.of(request.app[SOURCE].config)


def guard_middleware(get_guard: Callable[[web.Request], Guard]) -> Middleware:
    """Every request but the PROBES (no token, any Host: a kubelet sends neither):
    - a POST (any unsafe method) from another site is refused, 403 (no CSRF): its `Origin`
      must be this listener's own and `Sec-Fetch-Site` same-origin or none (when sent);
    - without `admin_token`, the Host must name the admin address (loopback, `localhost`,
      the configured host; any address when bound to 0.0.0.0/::) or one of
      `admin_allowed_hosts`, else 403 (no DNS rebinding);
    - with `admin_token`, the request needs `Authorization: Bearer TOKEN` or the cookie the
      login form sets (HttpOnly, SameSite=Strict); the token in the URL is not accepted.
      Without either: 401, and `/` answers the login form."""
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PROBES:
            return await handler(request)
        if request.method not in SAFE_METHODS and is_cross_site(request):
            return web.Response(status=403, text="403 cross-site request refused\n")
        rules = get_guard(request)
        request[GUARD_KEY] = rules
        if rules.token is None:
            if not host_allowed(request.headers.get("Host", ""), rules):
                return web.Response(status=403, text=(
                    "403 the Host header does not name the admin listener; add the name to "
                    "admin_allowed_hosts (or set admin_token)\n"))
            return await handler(request)
        if request.path == "/login" or authorised(request, rules.token):
            return await handler(request)
        if request.path == "/" and request.method in SAFE_METHODS:
            return login_page(401)
        return web.Response(status=401, text="401 admin token required\n",
                            headers={"WWW-Authenticate": 'Bearer realm="balancer admin"'})
    return guard


def is_cross_site(request: web.Request) -> bool:
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site.lower() not in ("same-origin", "none"):
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return False  # not sent by a browser (curl, a script): nothing to forge
    return _origin_of(origin) is None or _origin_of(origin) != _origin_of(
        f"{request.scheme}://{request.headers.get('Host', '')}")


def _origin_of(url: str) -> tuple[str, str, int] | None:
    try:
        parsed = URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host or parsed.port is None:
            return None
        return parsed.scheme, parsed.host.lower(), parsed.port
    except (ValueError, TypeError):
        return None


def host_allowed(host: str, rules: Guard) -> bool:
    """Whether a Host header names the admin listener (see guard_middleware)."""
    if rules.address is not None and rules.address.kind == "unix":
        return True  # no browser reaches a unix socket
    name = _host_name(host)
    if not name:
        return False
    if name == "localhost" or name in rules.allowed_hosts:
        return True
    bound = rules.address.host.lower() if rules.address is not None else ""
    if name == bound:
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    if ip.is_loopback:
        return True
    with contextlib.suppress(ValueError):
        bound_ip = ipaddress.ip_address(bound)
        return bound_ip.is_unspecified or bound_ip == ip
    return False


def _host_name(host: str) -> str:
    """The name of a Host header value, lower case, without port or trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else ""
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def authorised(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return hmac.compare_digest(_raw(header[7:]), token.encode())
    cookie = request.cookies.get(COOKIE)
    return cookie is not None and hmac.compare_digest(_raw(cookie), cookie_value(token).encode())


def _raw(text: str) -> bytes:
    """A header's bytes as sent (aiohttp keeps the bytes that are not UTF-8 as surrogates:
    strict encoding raised, and a client's 0xFF byte was a 500 and a traceback)."""
    return text.encode("utf-8", "surrogateescape")


def cookie_value(token: str) -> str:
    """What the login cookie holds: derived from the token (a new token voids old cookies),
    not the token itself."""
    return hmac.new(token.encode(), b"echonext-balancer admin cookie", hashlib.sha256).hexdigest()


LOGIN_PAGE = Path(__file__).with_name("static") / "login.html"


def login_page(status: int) -> web.Response:
    return web.Response(status=status, body=LOGIN_PAGE.read_bytes(), content_type="text/html",
                        charset="utf-8", headers={
                            "Cache-Control": "no-store",
                            "WWW-Authenticate": 'Bearer realm="balancer admin"'})


async def login(request: web.Request) -> web.Response:
    """The login form's POST: the right token sets the cookie and goes to the status page."""
    rules = request.get(GUARD_KEY)
    if rules is None or rules.token is None:  # nothing to log in to
        return web.Response(status=303, headers={"Location": "./"})
    form = await request.post()
    offered = form.get("token")
    if not isinstance(offered, str) or not hmac.compare_digest(offered.encode(),
                                                               rules.token.encode()):
        return login_page(401)
    response = web.Response(status=303, headers={"Location": "./", "Cache-Control": "no-store"})
    response.set_cookie(COOKIE, cookie_value(rules.token), path="/", httponly=True,
                        samesite="Strict")
    return response


STATUS_PAGE = Path(__file__).with_name("static") / "status.html"
HISTORY_SCRIPT = STATUS_PAGE.with_name("history.js")


async def status_page(request: web.Request) -> web.Response:
    """The status page for people: static HTML whose script renders `/status` every second,
    and `/status/history` as charts (history.js, inlined: one request, whatever the auth)."""
    page = STATUS_PAGE.read_bytes().replace(b"/*HISTORY_JS*/", HISTORY_SCRIPT.read_bytes())
    return web.Response(body=page, content_type="text/html",
                        charset="utf-8", headers={"Cache-Control": "no-store"})


# Answered without the admin token: a kubelet or a container engine's health check has none.
# They say nothing a client could not learn from the public port.
PROBES = frozenset({"/healthz", "/livez", "/readyz"})


async def livez(request: web.Request) -> web.Response:
    """Liveness: the process answers. 200 also while draining (a restart would cut the requests
    the grace period and the drain are there to finish)."""
    return web.Response(text="alive\n", headers={"Cache-Control": "no-store"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 503 `draining` from SIGTERM on (the grace period), 503 with the source's
    reason while it cannot serve (a single process: `starting` until the public listeners
    serve the first config), else 200."""
    source = request.app[SOURCE]
    reason = "draining" if source.draining else source.not_ready()
    if reason is not None:
        return web.Response(status=503, text=f"{reason}\n", headers={"Cache-Control": "no-store"})
    return web.Response(text="ready\n", headers={"Cache-Control": "no-store"})


async def healthz(request: web.Request) -> web.Response:
    if request.app[SOURCE].draining:
        return web.Response(status=503, text="draining\n")
    return web.Response(text="ok\n")


async def status(request: web.Request) -> web.Response:
    return web.json_response(await request.app[SOURCE].status_document())


def since_param(request: web.Request) -> float | None:
    """`?since=T` (wall clock seconds): only the points and events after T."""
    try:
        return float(request.query["since"])
    except (KeyError, ValueError):
        return None


async def history(request: web.Request) -> web.Response:
    """The last 15 minutes, one point a second (balancer.ops.history), for the page's charts."""
    document = await request.app[SOURCE].history_document(since_param(request))
    return web.json_response(document, headers={"Cache-Control": "no-store"})


async def reload(request: web.Request) -> web.Response:
    outcome = await request.app[SOURCE].reload()
    return web.json_response(outcome.answer(), status=200 if outcome.ok else 422)
