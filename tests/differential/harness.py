"""The machinery of the two-sided differential tests: a real balancer and a backend that
records every byte it receives, both running in a background thread's event loop, driven by
synchronous hypothesis tests over blocking sockets (so one balancer serves every example).

The backend (tests/recording.py, answering with `answer_echo`) parses what the balancer sends
with h11, an independent strict parser (the balancer parses with llhttp through aiohttp and
httptools), and clients parse what the balancer answers with h11 too.
"""

import asyncio
import contextlib
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import h11

from balancer.config.parse import parse_config
from balancer.ops.server import Balancer

T = TypeVar("T")
_RUN = os.urandom(3).hex()  # tags of this run never match a tag of another run
_COUNTER = itertools.count()


def new_tag() -> str:
    """A tag no other request of the session carries: it marks a request's own answer."""
    return f"tag{_RUN}x{next(_COUNTER):07d}"


class LoopThread:
    """An asyncio event loop in a daemon thread; `run` executes a coroutine there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="differential",
                                       daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(cancel_rest(), 10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


# -- a balancer in front of a backend, in the loop thread -----------------------------------

BALANCER_CONFIG = """\
listen: 127.0.0.1:0
timeouts: {{client_header: 5s, client_body: 5s, backend_response: 5s, client_idle: 30s}}
health: {{consecutive_failures: 1000000}}
pools:
  default:
    backends:
      - http://127.0.0.1:{port}
"""


class Harness:
    """A started balancer in front of `backend` (anything with start/stop/port)."""

    def __init__(self, backend: Any, config: str = BALANCER_CONFIG) -> None:
        self.loops = LoopThread()
        self.backend = backend
        self.balancer: Balancer | None = None
        try:
            self.loops.run(self._start(config))
        except BaseException:
            self.loops.close()
            raise

    async def _start(self, config: str) -> None:
        await self.backend.start()
        self.balancer = Balancer(parse_config(config.format(port=self.backend.port),
                                              "differential.yaml"), None, reuse_port=False)
        await self.balancer.start()

    @property
    def address(self) -> tuple[str, int]:
        assert self.balancer is not None
        host, port = self.balancer.public_addresses[0].rsplit(":", 1)
        return host, int(port)

    def close(self) -> None:
        async def stop() -> None:
            if self.balancer is not None:
                await self.balancer.stop()
            await self.backend.stop()

        try:
            self.loops.run(stop())
        finally:
            self.loops.close()

    def barrier(self) -> None:
        """One plain request on a fresh connection, answered: everything the balancer was
        going to send the backend for earlier (closed) client connections has been sent."""
        target = f"/barrier/{new_tag()}".encode()
        with socket.create_connection(self.address, timeout=10) as sock:
            sock.sendall(b"GET %s HTTP/1.1\r\nHost: barrier\r\nConnection: close\r\n\r\n"
                         % target)
            reader = ResponseReader(sock, time.monotonic() + 10)
            response = reader.read_response(b"GET")
        assert response.status == 200, f"barrier request failed: {response}"


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


# -- the client's side: responses parsed with h11 --------------------------------------------

@dataclass
class Parsed:
    """One response as a strict client read it; `error` says why it is not whole."""

    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    interim: list[int] = field(default_factory=list)
    raw: bytes = b""
    error: str = ""  # "" for a whole, valid response; else "closed", "invalid: ..."

    def header(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key == name]

    @property
    def closes(self) -> bool:
        return any(b"close" in v.lower() for v in self.header(b"connection"))

    def __str__(self) -> str:
        return f"<{self.status or self.error} {self.raw[:300]!r}>"


class ResponseReader:
    """Reads responses from a blocking socket, one at a time, each with a fresh h11 client
    told only the method (HEAD responses have no body); bytes left over carry on."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buffer = b""
        self.eof = False

    def _fill(self) -> bool:
        if self.eof:
            return False
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no more bytes from the balancer before the deadline")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        except TimeoutError:
            raise TimeoutError("no more bytes from the balancer before the deadline") from None
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def read_response(self, method: bytes) -> Parsed:
        client = h11.Connection(h11.CLIENT)
        client.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        client.send(h11.EndOfMessage())
        out = Parsed()
        fed = self.buffer
        if fed:
            client.receive_data(fed)  # (b"" would mean end of stream to h11)
        if self.eof:
            client.receive_data(b"")
        body = bytearray()
        while True:
            try:
                event = client.next_event()
            except h11.RemoteProtocolError as exc:
                out.raw, self.buffer = fed, b""
                out.error = "closed" if not fed and self.eof else f"invalid: {exc}"
                return out
            if event is h11.NEED_DATA:
                if self._fill():
                    data = self.buffer[len(fed):]
                    fed += data
                    client.receive_data(data)
                else:
                    client.receive_data(b"")
                continue
            if isinstance(event, h11.InformationalResponse):
                out.interim.append(event.status_code)
            elif isinstance(event, h11.Response):
                out.status = event.status_code
                out.headers = list(event.headers)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                rest = client.trailing_data[0]
                out.raw = fed[:len(fed) - len(rest)]
                out.body = bytes(body)
                self.buffer = rest
                return out
            elif isinstance(event, h11.ConnectionClosed):
                out.raw, self.buffer = fed, b""
                out.error = "closed"
                return out

    def rest(self) -> bytes:
        """Everything after the responses read, up to the balancer's close."""
        while self._fill():
            pass
        data, self.buffer = self.buffer, b""
        return data


class _Bytes:
    """A socket stand-in that yields bytes already received, then end of stream."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def settimeout(self, timeout: float) -> None:
        pass

    def recv(self, size: int) -> bytes:
        data, self.data = self.data, b""
        return data


def parse_responses(data: bytes, method: bytes = b"GET") -> list[Parsed]:
    """Every response in `data` (a whole connection's worth), the last maybe not whole."""
    reader = ResponseReader(_Bytes(data), time.monotonic() + 60)  # type: ignore[arg-type]
    out: list[Parsed] = []
    while True:
        response = reader.read_response(method)
        if response.error == "closed":
            return out
        out.append(response)
        if response.error:
            return out
