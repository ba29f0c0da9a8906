"""A recording backend for two-sided proxy tests: it logs the exact bytes it receives on each
connection and parses them with h11 (an independent, strict parser: not the llhttp/httptools
the balancer uses). Each test scripts the answers with a handler, so a backend can misbehave in
ways no real server library would."""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import h11


@dataclass
class Recorded:
    """One request as h11 parsed it from what the backend received."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    connection: int = 0

    def header(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key == name.lower()]


@dataclass
class Link:
    """One backend connection: every byte received, and whether the peer closed it."""

    number: int
    raw: bytearray = field(default_factory=bytearray)
    closed: bool = False
    errors: list[str] = field(default_factory=list)


Handler = Callable[[Recorded, asyncio.StreamWriter], Awaitable[None]]


async def answer_ok(request: Recorded, writer: asyncio.StreamWriter) -> None:
    """A well-behaved answer that names the request (its target), with Content-Length."""
    body = b"for " + request.target
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
    await writer.drain()


class RecordingBackend:
    """Start with `start()`; `requests` and `links` grow as the balancer talks to it."""

    def __init__(self, handler: Handler = answer_ok) -> None:
        self.handler = handler
        self.requests: list[Recorded] = []
        self.links: list[Link] = []
        self.writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    async def start(self) -> "RecordingBackend":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for writer in self.writers:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        link = Link(len(self.links))
        self.links.append(link)
        self.writers.append(writer)
        parser = h11.Connection(h11.SERVER)
        current: Recorded | None = None
        try:
            while True:
                event = parser.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    link.raw += data
                    parser.receive_data(data)
                    if not data:
                        break
                    continue
                if isinstance(event, h11.Request):
                    current = Recorded(event.method, event.target, list(event.headers),
                                       connection=link.number)
                elif isinstance(event, h11.Data):
                    assert current is not None
                    current.body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    assert current is not None
                    self.requests.append(current)
                    await self.handler(current, writer)
                    tail, _ = parser.trailing_data
                    parser = h11.Connection(h11.SERVER)  # the raw answer bypassed h11's state
                    if tail:
                        parser.receive_data(bytes(tail))  # (b"" would mean the peer closed)
                    current = None
                elif isinstance(event, h11.ConnectionClosed):
                    break
        except h11.RemoteProtocolError as exc:
            link.errors.append(str(exc))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            link.closed = True
            with contextlib.suppress(Exception):
                writer.close()
            self._tasks.discard(task)  # type: ignore[arg-type]


@dataclass
class Answer:
    """A response as the client got it, parsed by h11."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key == name.lower()]


def parse_responses(data: bytes, methods: list[bytes] | None = None) -> list[Answer]:
    """The final responses in `data` (h11 as the client), in order; stops at the first thing
    that is not a whole response."""
    out: list[Answer] = []
    for method in methods or [b"GET"] * 64:
        parser = h11.Connection(h11.CLIENT)
        parser.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        parser.send(h11.EndOfMessage())
        parser.receive_data(data)
        response: h11.Response | None = None
        body = b""
        ended = False
        while True:
            try:
                event = parser.next_event()
            except h11.RemoteProtocolError:
                return out
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
            elif event is h11.NEED_DATA:
                if ended:
                    return out
                parser.receive_data(b"")  # the end of what was received: close-delimited
                ended = True
            elif isinstance(event, h11.ConnectionClosed):
                return out
        assert response is not None
        out.append(Answer(response.status_code, list(response.headers), body))
        data = bytes(parser.trailing_data[0])
        if not data:
            break
    return out
