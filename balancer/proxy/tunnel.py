"""Upgrade tunnels: after 101 Switching Protocols, bytes flow both ways until either side
closes, or neither sends a byte for `timeouts.tunnel_idle`.

The client side uses aiohttp's payload-parser slot (`set_parser`), which receives every byte
after the upgrade request (including what arrived with it); the backend side is the
UpstreamConnection's tunnel sink. A tunnel is no request in flight: its connection leaves its
backend's in-flight count (selection, max_connections, spill and queueing ignore it) for the
backend's tunnel count (capped by `max_tunnels`).
"""

import asyncio

from aiohttp import web

from balancer.http.headers import forward_response
from balancer.proxy.replies import PlainStreamResponse
from balancer.upstream.connection import Response, UpstreamConnection

# Bytes a tunnel lets pile up for a client that reads slower than its backend sends; then the
# backend is not read until the client has taken them (the kernel's buffers hold the rest).
CLIENT_HIGH_WATER = 256 * 1024


class _TunnelFeed:
    """Takes the client's bytes after a 101 (aiohttp's payload-parser slot) to the backend,
    and stops reading the client while the backend is not reading."""

    def __init__(self, request: web.BaseRequest, conn: UpstreamConnection,
                 done: "asyncio.Future[None]", active: list[float]) -> None:
        self.request = request
        self.conn = conn
        self.done = done
        self.active = active
        self.waiting: asyncio.Task[None] | None = None

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.active[0] = self.conn.loop.time()
        transport = self.conn.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)
            if self.conn.write_paused and self.waiting is None:
                client = self.request.transport
                if client is not None:
                    client.pause_reading()
                    self.waiting = asyncio.ensure_future(self._resume(client))
        return False, b""

    async def _resume(self, client: asyncio.Transport) -> None:
        await self.conn.drained()
        self.waiting = None
        if not client.is_closing():
            client.resume_reading()

    def feed_eof(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


class _ToClient:
    """Takes the backend's bytes to the client (the connection's tunnel sink), and stops
    reading the backend while the client's buffer is over CLIENT_HIGH_WATER; an empty read
    (the backend closed) ends the tunnel."""

    def __init__(self, request: web.BaseRequest, conn: UpstreamConnection,
                 done: "asyncio.Future[None]", active: list[float]) -> None:
        self.request = request
        self.client = request.transport
        self.conn = conn
        self.done = done
        self.active = active
        self.waiting: asyncio.Task[None] | None = None

    def __call__(self, data: bytes) -> None:
        self.active[0] = self.conn.loop.time()
        client = self.client
        if data and client is not None and not client.is_closing():
            client.write(data)
            if client.get_write_buffer_size() > CLIENT_HIGH_WATER and self.waiting is None \
                    and self.conn.transport is not None:
                self.conn.transport.pause_reading()
                self.waiting = asyncio.ensure_future(self._resume())
        elif not self.done.done():
            self.done.set_result(None)

    async def _resume(self) -> None:
        await self.request.writer.drain()  # returns when the client's transport has room again
        self.waiting = None
        backend = self.conn.transport
        if backend is not None and not backend.is_closing():
            backend.resume_reading()


async def tunnel(
    request: web.BaseRequest, conn: UpstreamConnection, response: Response, request_id: str,
    idle_timeout: float,
) -> web.StreamResponse:
    """Relay bytes both ways after 101 Switching Protocols, until either side closes or
    nothing moves for `idle_timeout`; each direction stops reading its source while its
    destination is not reading. The caller has moved `conn` to its backend's tunnels
    (`Connections.to_tunnel`)."""
    headers, _ = forward_response(response.headers, request_id, upgrade=True)
    reply = PlainStreamResponse(status=101, reason=response.reason.decode("latin-1") or None,
                               headers=headers)
    await reply.prepare(request)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    active = [loop.time()]  # when a byte last went either way
    to_client = _ToClient(request, conn, done, active)
    to_backend = _TunnelFeed(request, conn, done, active)
    conn.open_tunnel(to_client)
    request.protocol.set_parser(to_backend)  # type: ignore[arg-type]
    try:
        while (left := active[0] + idle_timeout - loop.time()) > 0:
            try:
                async with asyncio.timeout(left):
                    await asyncio.shield(done)
                break
            except TimeoutError:
                continue  # bytes moved meanwhile: wait out the rest from the last one
    finally:
        for task in (to_client.waiting, to_backend.waiting):
            if task is not None:
                task.cancel()
        conn.close()
        drop_client(request)
    return reply


def drop_client(request: web.BaseRequest, *, discard: bool = False) -> None:
    """Close the client connection; `discard`: without waiting to send what is buffered
    (for a client that takes nothing, which would otherwise keep it open forever)."""
    transport = request.transport
    if transport is not None and discard:
        transport.abort()
    request.protocol.force_close()
    if transport is not None:
        transport.close()
