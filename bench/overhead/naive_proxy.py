"""The floor to beat: a naive aiohttp reverse proxy (aiohttp server + one shared ClientSession).

usage: python naive_proxy.py LISTEN_PORT BACKEND_URL
"""

import sys

import aiohttp
import uvloop
from aiohttp import web

HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
       "proxy-connection", "content-length", "host"}


async def make_app(backend: str) -> web.Application:
    app = web.Application()
    session_key = web.AppKey("session", aiohttp.ClientSession)

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app[session_key] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
        yield
        await app[session_key].close()

    async def handle(request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        async with app[session_key].request(
            request.method, backend + request.raw_path, headers=headers,
            data=await request.read() if request.can_read_body else None,
        ) as upstream:
            body = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP}
            return web.Response(status=upstream.status, body=body, headers=out)

    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


if __name__ == "__main__":
    port, backend = int(sys.argv[1]), sys.argv[2]
    uvloop.install()
    web.run_app(make_app(backend), host="127.0.0.1", port=port, access_log=None,
                print=None)
