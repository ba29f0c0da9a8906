"""The admin listener: `/` (status page), `/healthz`, `/livez`, `/readyz`, `/status` (JSON),
`/metrics`, `POST /reload`.

I/O shell. It is bound only to the `admin` address, never to a public listener.
"""

import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from balancer.server import Balancer

BALANCER: web.AppKey["Balancer"] = web.AppKey("balancer")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_admin_app(balancer: "Balancer", *, check_token: bool = True) -> web.Application:
    middlewares = [token_middleware(_config_token)] if check_token else []
    app = web.Application(middlewares=middlewares)
    app[BALANCER] = balancer
    app.router.add_get("/", status_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_post("/reload", reload)
    app.router.add_get("/metrics", metrics)
    return app


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[BALANCER].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def token_middleware(get_token: Callable[[web.Request], str | None]) -> Middleware:
    """With an admin token set, everything but the PROBES needs `Authorization: Bearer TOKEN`
    (or `?token=TOKEN`, which the status page passes on to the requests it makes)."""
    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        token = get_token(request)
        if token is None or request.path in PROBES or token_matches(request, token):
            return await handler(request)
        return web.Response(status=401, text="401 admin token required\n",
                            headers={"WWW-Authenticate": 'Bearer realm="balancer admin"'})
    return require_token


def _config_token(request: web.Request) -> str | None:
    return request.app[BALANCER].runtime.config.admin_token


def token_matches(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    offered = header[7:] if header[:7].lower() == "bearer " else request.query.get("token", "")
    return hmac.compare_digest(offered.encode(), token.encode())


STATUS_PAGE = Path(__file__).with_name("static") / "status.html"


async def status_page(request: web.Request) -> web.Response:
    """The status page for people: static HTML whose script renders `/status` every second."""
    return web.Response(body=STATUS_PAGE.read_bytes(), content_type="text/html",
                        charset="utf-8", headers={"Cache-Control": "no-store"})


# Answered without the admin token: a kubelet or a container engine's health check has none.
# They say nothing a client could not learn from the public port.
PROBES = frozenset({"/healthz", "/livez", "/readyz"})


async def livez(request: web.Request) -> web.Response:
    """Liveness: the process answers. 200 also while draining (a restart would cut the requests
    the grace period and the drain are there to finish)."""
    return web.Response(text="alive\n", headers={"Cache-Control": "no-store"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 503 `starting` until the public listeners serve the first config, 503
    `draining` from SIGTERM on (the grace period), else 200."""
    balancer = request.app[BALANCER]
    if balancer.draining:
        return web.Response(status=503, text="draining\n", headers={"Cache-Control": "no-store"})
    if not balancer.public_addresses:
        return web.Response(status=503, text="starting\n", headers={"Cache-Control": "no-store"})
    return web.Response(text="ready\n", headers={"Cache-Control": "no-store"})


async def healthz(request: web.Request) -> web.Response:
    if request.app[BALANCER].draining:
        return web.Response(status=503, text="draining\n")
    return web.Response(text="ok\n")


def status_document(balancer: "Balancer") -> dict[str, Any]:
    runtime = balancer.runtime
    upstreams = balancer.upstreams
    connections = upstreams.pools()
    now = upstreams.loop.time()
    pools = []
    for pool in runtime.pools.values():
        backends = []
        weights = runtime.weights(pool, upstreams, now)
        for address, weight in zip(pool.backends, weights, strict=True):
            upstream = connections.get(address)
            health = upstreams.health(address)
            stats = upstreams.stats(address)
            report = stats.report
            backends.append({
                "address": address.url,
                "healthy": not health.is_ejected(now),
                "state": "down" if health.down else "ejected" if health.is_ejected(now) else "up",
                "ejections": health.ejections,
                "weight": round(weight, 4),
                "error_rate": round(stats.error_rate, 4),
                "last_report": None if report is None else {
                    "cpu_utilization": report.cpu_utilization, "rps": report.rps,
                    "eps": report.eps, **{f"named.{k}": v for k, v in report.named.items()}},
                "report_age_s": None if stats.report_at == float("-inf")
                else round(now - stats.report_at, 3),
                "inflight": upstream.inflight if upstream else 0,
                "open_connections": upstream.open_count if upstream else 0,
                "idle_connections": upstream.idle_count if upstream else 0,
            })
        pools.append({"name": pool.name, "kind": pool.config.kind, "backends": backends,
                      "unresolved": list(pool.unresolved)})
    costs = balancer.costs
    routes = [
        {"route": r.template, "class": r.learned_class, "cpu_ms": round(r.cpu_ms, 3),
         "io_share": round(r.io_share, 3), "samples": r.samples,
         "confidence": round(costs.confidence(r), 3), "confident": costs.is_confident(r)}
        for r in sorted(costs.routes(), key=lambda r: -r.samples)
    ]
    return {
        "generation": runtime.generation,
        "digest": runtime.config.digest,
        "config": runtime.config.source,
        "listen": balancer.public_addresses,
        "client_connections": balancer.client_connections,
        "pools": pools,
        "routes": routes,
        "discovery": [
            {"name": s.key, "addresses": None if s.addresses is None
             else [a.url for a in s.addresses], "failures": s.total_failures,
             "last_error": s.last_error or None,
             "next_in_s": round(max(0.0, s.next_at - now), 3)}
            for s in (balancer.discovery.states() if balancer.discovery else [])],
        "reloads": [
            {"ok": r.ok, "generation": r.generation, "digest": r.digest, "at": r.at,
             "ms": round(r.seconds * 1000, 3), "errors": list(r.errors)}
            for r in balancer.reloads
        ],
    }


async def status(request: web.Request) -> web.Response:
    return web.json_response(status_document(request.app[BALANCER]))


async def reload(request: web.Request) -> web.Response:
    outcome = await request.app[BALANCER].reload()
    body = {"ok": outcome.ok, "generation": outcome.generation, "digest": outcome.digest,
            "errors": list(outcome.errors)}
    return web.json_response(body, status=200 if outcome.ok else 422)
