"""A hostile backend: it parses each request with h11, finds the request's tag (X-Test-Id), and
answers as the test planned for that tag: well, or with extra bytes, an interim or a 101 it
should not send, conflicting framing, a short body, a reset at a byte offset.

What it records lets the tests check the backend's side: every request it read (tag, method,
connection), and any request that arrived on a connection after the backend misbehaved on it
(the balancer must retire such a connection, never reuse it).
"""

import asyncio
import socket
import struct
from dataclasses import dataclass, field

import h11


@dataclass(frozen=True)
class Behaviour:
    """How to answer one request. `act`:
    ok          a correct response whose body and X-Echo-Id carry the request's tag
    interim     `arg` 1xx responses (100 Continue, 103 Early Hints) then a correct one
    extra       a correct response, then in the same write `payload` (taints the connection)
    unsolicited a correct response; later, when the test says so, `payload` (taints)
    status101   a 101 Switching Protocols (the request asked for no upgrade), then `payload`
    cl_te       Content-Length and Transfer-Encoding: chunked together (taints)
    double_cl   two different Content-Length values (taints)
    short       Content-Length `arg` more than the body sent, then close
    reset       the first `arg` bytes of a correct response, then a TCP reset
    close_after a correct response, then close
    """

    act: str = "ok"
    arg: int = 0
    payload: bytes = b""

    def __str__(self) -> str:
        return f"{self.act}({self.arg}, {self.payload!r})"


TAINTING = frozenset({"extra", "unsolicited", "status101", "cl_te", "double_cl"})


def good_response(tag: bytes) -> bytes:
    body = b"answer for " + tag + b"\n"
    return (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Echo-Id: %s\r\n\r\n%s"
            % (len(body), tag, body))


def evil(tag: bytes) -> bytes:
    """Bytes that belong to request `tag` but come when no request of it is pending."""
    body = b"EVIL for " + tag + b"\n"
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Echo-Id: %s\r\n\r\n%s" % (
        len(body), tag, body)


@dataclass
class Read:
    conn: int
    tag: bytes
    method: bytes
    tainted_before: bool


@dataclass
class HostileBackend:
    plan: dict[bytes, Behaviour] = field(default_factory=dict)
    reads: list[Read] = field(default_factory=list)
    connections: int = 0
    closed: set[int] = field(default_factory=set)
    unsolicited: dict[bytes, "_Hostile"] = field(default_factory=dict)  # tag -> its connection
    server: asyncio.Server | None = None
    port: int = 0
    transports: set[asyncio.Transport] = field(default_factory=set)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Hostile(self), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for transport in list(self.transports):
                transport.abort()
            await self.server.wait_closed()

    def reused_after_taint(self) -> list[Read]:
        return [read for read in self.reads if read.tainted_before]

    async def send_unsolicited(self, tag: bytes) -> int:
        """Write the planned unsolicited bytes for `tag` on its (idle) connection; its id."""
        conn = self.unsolicited.pop(tag)
        assert conn.transport is not None
        conn.tainted = True
        conn.transport.write(self.plan[tag].payload)
        return conn.id


class _Hostile(asyncio.Protocol):
    def __init__(self, backend: HostileBackend) -> None:
        self.backend = backend
        self.id = backend.connections
        backend.connections += 1
        self.h11 = h11.Connection(h11.SERVER)
        self.transport: asyncio.Transport | None = None
        self.request: h11.Request | None = None
        self.tainted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.backend.transports.add(self.transport)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.backend.transports.discard(self.transport)
        self.backend.closed.add(self.id)

    def data_received(self, data: bytes) -> None:
        self.h11.receive_data(data)
        self._pump()

    def eof_received(self) -> bool:
        return False

    def _pump(self) -> None:
        transport = self.transport
        assert transport is not None
        while not transport.is_closing():
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError:
                transport.abort()
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self.request = event
            elif isinstance(event, h11.EndOfMessage):
                self._answer()
                return  # one request per connection state: reset h11 for the next one
            elif isinstance(event, h11.ConnectionClosed):
                transport.close()

    def _answer(self) -> None:
        request = self.request
        transport = self.transport
        assert request is not None and transport is not None
        tag = dict(request.headers).get(b"x-test-id", b"")
        self.backend.reads.append(Read(self.id, tag, request.method, self.tainted))
        rest = self.h11.trailing_data[0]
        self.h11 = h11.Connection(h11.SERVER)  # answer by hand, then read the next request
        behaviour = self.backend.plan.get(tag, Behaviour())
        good = good_response(tag)
        act = behaviour.act
        if act == "ok":
            transport.write(good)
        elif act == "interim":
            transport.write(b"HTTP/1.1 100 Continue\r\n\r\n" * (behaviour.arg % 2) +
                            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" * behaviour.arg
                            + good)
        elif act == "extra":
            self.tainted = True
            transport.write(good + behaviour.payload)
        elif act == "unsolicited":
            transport.write(good)
            self.backend.unsolicited[tag] = self
        elif act == "status101":
            self.tainted = True
            transport.write(b"HTTP/1.1 101 Switching Protocols\r\n" + behaviour.payload)
        elif act == "cl_te":
            self.tainted = True
            body = b"answer for " + tag
            transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: "
                            b"chunked\r\nX-Echo-Id: %s\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
                            % (tag, len(body), body))
        elif act == "double_cl":
            self.tainted = True
            body = b"answer for " + tag
            transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Length: %d\r\n"
                            b"\r\n%s" % (len(body), len(body) + 2, body))
        elif act == "short":
            head, body = good.split(b"\r\n\r\n", 1)
            head = head.replace(b"Content-Length: %d" % len(body),
                                b"Content-Length: %d" % (len(body) + behaviour.arg))
            transport.write(head + b"\r\n\r\n" + body)
            transport.close()
        elif act == "reset":
            transport.write(good[:behaviour.arg])
            sock = transport.get_extra_info("socket")
            if sock is not None:  # SO_LINGER 0: close sends a reset
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        elif act == "close_after":
            transport.write(good)
            transport.close()
        else:
            raise AssertionError(f"unknown behaviour {behaviour}")
        if rest and not transport.is_closing():
            self.data_received(rest)
