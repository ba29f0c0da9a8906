"""Attack round (after issue 11): a request whose upgrade the balancer declines (`h2c`, or a
list with anything but websocket) and that ends in an error the balancer writes itself (502,
503, 504) closes the connection, as its normal answer already does. aiohttp's parser stops
parsing after any Upgrade request, so what the client pipelined behind it is never answered:
before, the connection stayed open after the 502 and the pipelined request hung until
client_idle. Two-sided: the backend saw only the first request, without Upgrade."""

import asyncio

import pytest

from tests.helpers import ProxiedFactory, raw_exchange
from tests.recording import Recorded


async def switches(request: Recorded, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n")


@pytest.mark.parametrize("upgrade", [b"h2c", b"websocket, h2c"])
async def test_a_declined_upgrade_that_ends_in_an_error_closes_the_connection(
    proxied: ProxiedFactory, upgrade: bytes,
) -> None:
    lb, backend = await proxied(switches)
    request = (b"GET /up HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: %b\r\n\r\n"
               b"GET /pipelined HTTP/1.1\r\nHost: a\r\n\r\n" % upgrade)
    received, closed = await raw_exchange(lb.url, request, timeout=3)
    assert received.startswith(b"HTTP/1.1 502 "), received[:200]
    assert closed  # the client knows at once that /pipelined must be sent again
    assert [r.target for r in backend.requests] == [b"/up"]
    assert backend.requests[0].header(b"upgrade") == []
