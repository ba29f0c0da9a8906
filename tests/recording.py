"""The recording backend of every two-sided proxy test: it logs the exact bytes it receives on
each connection and parses them with h11 (an independent, strict parser: not the
llhttp/httptools the balancer uses). A handler answers each request: `answer_ok` and
`answer_echo` answer well; tests script others, so a backend can misbehave in ways no real
server library would. Bytes h11 refuses are a `Violation` (answered 400, connection closed).
Used in-process (tests/integration) and by the differential harness (tests/differential)."""

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import h11


@dataclass
class Recorded:
    """One request as h11 parsed it from what the backend received."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]  # names lower-cased by h11
    body: bytes = b""
    connection: int = 0
    http_version: bytes = b"1.1"

    def header(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key == name.lower()]

    @property
    def keep_alive(self) -> bool:
        """Whether the connection may carry another request after this one (h11's rule)."""
        tokens = {token.strip().lower() for value in self.header(b"connection")
                  for token in value.split(b",")}
        return b"close" not in tokens and self.http_version >= b"1.1"


@dataclass
class Link:
    """One backend connection: every byte received, and whether the peer closed it."""

    number: int
    raw: bytearray = field(default_factory=bytearray)
    closed: bool = False


@dataclass
class Violation:
    """Bytes the balancer sent that h11 refused: an ambiguous or broken framing."""

    connection: int
    error: str
    raw: bytes


Handler = Callable[[Recorded, asyncio.StreamWriter], Awaitable[None]]


async def answer_ok(request: Recorded, writer: asyncio.StreamWriter) -> None:
    """A well-behaved answer that names the request (its target), with Content-Length."""
    body = b"for " + request.target
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
    await writer.drain()


def echo_body(method: bytes, target: bytes, body: bytes) -> bytes:
    """What `answer_echo` answers: says which request it answers."""
    return b"%s %s len=%d sha=%s\n" % (method, target, len(body),
                                       hashlib.sha256(body).hexdigest()[:16].encode())


async def answer_echo(request: Recorded, writer: asyncio.StreamWriter) -> None:
    """An echo of the request's method, target, body and X-Test-Id (as X-Echo-Id); closes the
    connection after it when the request did not keep it alive."""
    echo = echo_body(request.method, request.target, request.body)
    tag = (request.header(b"x-test-id") or [b""])[0]
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
            b"X-Echo-Target: %b\r\nX-Echo-Id: %b\r\n" % (len(echo), request.target, tag))
    if not request.keep_alive:
        head += b"Connection: close\r\n"
    writer.write(head + b"\r\n" + (echo if request.method != b"HEAD" else b""))
    await writer.drain()
    if not request.keep_alive:
        writer.close()


class RecordingBackend:
    """Start with `start()` (on 127.0.0.1, port 0: `url`, `port`), end with `stop()`;
    `requests`, `links` and `violations` grow as the balancer talks to it."""

    def __init__(self, handler: Handler = answer_ok) -> None:
        self.handler = handler
        self.requests: list[Recorded] = []
        self.links: list[Link] = []
        self.violations: list[Violation] = []
        self.writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""
        self.port = 0

    async def start(self) -> "RecordingBackend":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for writer in self.writers:
            writer.close()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Parse what arrives with h11, hand each whole request to the handler, record it
        all. Long because it is one h11 event loop: the states read best in one place."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        link = Link(len(self.links))
        self.links.append(link)
        self.writers.append(writer)
        parser = h11.Connection(h11.SERVER)
        current: Recorded | None = None
        ended = False
        try:
            while not writer.is_closing():
                event = parser.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    link.raw += data
                    parser.receive_data(data)  # b"": the peer closed (h11 checks the message)
                    ended = not data
                    continue
                if isinstance(event, h11.Request):
                    current = Recorded(event.method, event.target, list(event.headers),
                                       connection=link.number, http_version=event.http_version)
                elif isinstance(event, h11.Data):
                    assert current is not None
                    current.body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    assert current is not None
                    self.requests.append(current)
                    await self.handler(current, writer)
                    tail, closed = parser.trailing_data
                    parser = h11.Connection(h11.SERVER)  # the raw answer bypassed h11's state
                    if tail:
                        parser.receive_data(bytes(tail))
                    if closed:
                        parser.receive_data(b"")
                    current = None
                elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                    break  # (PAUSED cannot come: each request gets a fresh parser)
        except h11.RemoteProtocolError as exc:
            self.violations.append(Violation(link.number, str(exc), bytes(link.raw)))
            if not ended:
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n")
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
