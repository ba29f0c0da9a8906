"""Upgrade tunnels: after 101 Switching Protocols, bytes flow both ways until either side closes.

The client side uses aiohttp's payload-parser slot (`set_parser`), which receives every byte
after the upgrade request (including what arrived with it); the backend side is the
UpstreamConnection's tunnel sink.
"""

import asyncio

from aiohttp import web

from balancer.headers import forward_response
from balancer.upstream import Response, UpstreamConnection


class _TunnelFeed:
    """Takes the client's bytes after a 101 (aiohttp's payload-parser slot) to the backend."""

    def __init__(self, conn: UpstreamConnection, done: "asyncio.Future[None]") -> None:
        self.conn = conn
        self.done = done

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        transport = self.conn.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)
        return False, b""

    def feed_eof(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def tunnel(
    request: web.BaseRequest, conn: UpstreamConnection, response: Response, request_id: str
) -> web.StreamResponse:
    """Relay bytes both ways after 101 Switching Protocols, until either side closes."""
    headers, _ = forward_response(response.headers, request_id, upgrade=True)
    reply = web.StreamResponse(status=101, reason=response.reason.decode("latin-1") or None,
                               headers=headers)
    await reply.prepare(request)
    client = request.transport
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def to_client(data: bytes) -> None:
        if data and client is not None and not client.is_closing():
            client.write(data)
        elif not done.done():
            done.set_result(None)

    conn.open_tunnel(to_client)
    request.protocol.set_parser(_TunnelFeed(conn, done))  # type: ignore[arg-type]
    try:
        await done
    finally:
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
