"""Failing backends: each fault gives the right status (or a safe retry) within the configured
timeouts, the client never hangs, and afterwards the balancer's file descriptors, asyncio
tasks and upstream connections are back where they were."""

import asyncio
import contextlib
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.fakes import RawHandler, echo_app, read_request_head
from tests.helpers import (
    BackendFactory,
    BalancerFactory,
    RawBackendFactory,
    Running,
    buffered_bytes,
    wait_for,
)

TIMEOUTS = "timeouts: {connect: 500ms, backend_response: 500ms}\n"


def resources(lb: Running) -> tuple[int, int, int]:
    """(open file descriptors of this process, asyncio tasks, upstream connections)."""
    pools = lb.balancer.backend_table.connections().values()
    upstream = sum(pool.open_count for pool in pools)
    return len(os.listdir("/proc/self/fd")), len(asyncio.all_tasks()), upstream


async def settled(lb: Running, baseline: tuple[int, int, int]) -> None:
    await wait_for(lambda: lb.balancer.client_connections == 0, what="client connections closed")
    await wait_for(lambda: resources(lb) == baseline, timeout=5,
                   what=f"resources back to {baseline} (now {resources(lb)})")


async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request_head(reader)
    await reader.read()  # accepts, never answers; returns when the balancer gives up


async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request_head(reader)
    writer.write(b"SSH-2.0-OpenSSH_9.2\r\nnot http at all\r\n\r\n")
    await writer.drain()
    await reader.read()


async def trickle_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request_head(reader)
    for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok":
        writer.write(bytes([byte]))  # a byte every 200 ms: the head takes over 7 s
        await writer.drain()
        await asyncio.sleep(0.2)


async def trickle_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nabc")
    for byte in b"defghijklmnopqrst":
        await asyncio.sleep(1.0)  # a byte a second: longer than backend_response between reads
        writer.write(bytes([byte]))
        await writer.drain()


async def reset_before_response(reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
    await read_request_head(reader)
    writer.transport.abort()  # RST after reading the request, before any response byte


async def reset_mid_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
    await writer.drain()
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()  # RST


async def close_between_requests(reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter) -> None:
    await read_request_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # keep-alive implied
    await writer.drain()
    # ... and closes at once, as a backend with a short keep-alive timeout does


async def expect_status(url: str, status: int, body: str = "") -> float:
    """Get `url`: the answer must be `status` with a body that starts with `body`."""
    started = time.monotonic()
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        text = await resp.text()
        assert resp.status == status, text
        assert text.startswith(body), text
    return time.monotonic() - started


async def expect_cut_off(url: str) -> float:
    started = time.monotonic()
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    return time.monotonic() - started


@pytest.mark.parametrize(("handler", "status", "body", "within"), [
    (hang, 504, "504 backend response timed out", 2.0),
    (garbage, 502, "502 backend sent an invalid response", 2.0),
    (trickle_head, 504, "504 backend response timed out", 2.0),
    (reset_before_response, 502, "502 backend closed the connection", 2.0),
    (trickle_body, None, "", 3.0),  # the head was sent: the client connection is cut
    (reset_mid_body, None, "", 2.0),
], ids=["hanging", "garbage", "trickled head", "reset before the response", "trickled body",
        "reset mid-body"])
async def test_a_failing_backend_gets_the_right_answer_and_leaks_nothing(
    raw_backend_factory: RawBackendFactory, balancer_factory: BalancerFactory,
    handler: RawHandler, status: int | None, body: str, within: float,
) -> None:
    raw = await raw_backend_factory(handler)
    lb = await balancer_factory(
        f"listen: 127.0.0.1:0\n{TIMEOUTS}pools:\n  default: {{backends: [{raw.url}]}}\n")
    baseline = resources(lb)
    for _ in range(3):
        if status is None:
            elapsed = await expect_cut_off(f"{lb.url}/x")
        else:
            elapsed = await expect_status(f"{lb.url}/x", status, body)
        assert elapsed < within
    await settled(lb, baseline)


async def test_a_backend_closing_keep_alive_connections_between_requests_costs_no_request(
    raw_backend_factory: RawBackendFactory, balancer_factory: BalancerFactory,
) -> None:
    """The balancer sees the close and does not reuse the connection: every request is
    answered, each on a connection of its own, and nothing leaks. (When the close comes only
    after the next request was sent, the stale keep-alive retry is what saves it:
    test_proxy.py::test_stale_keepalive_connection_is_retried_on_a_fresh_one.)"""
    raw = await raw_backend_factory(close_between_requests)
    lb = await balancer_factory(
        f"listen: 127.0.0.1:0\n{TIMEOUTS}pools:\n  default: {{backends: [{raw.url}]}}\n")
    baseline = resources(lb)
    async with aiohttp.ClientSession() as session:
        for _ in range(10):
            async with session.get(f"{lb.url}/x") as resp:
                assert resp.status == 200 and await resp.read() == b"ok"
    assert raw.connections == 10
    await settled(lb, baseline)


async def test_all_backends_down_is_503_within_the_connect_timeout_and_back_up_serves(
    backend_factory: BackendFactory, balancer_factory: BalancerFactory,
) -> None:
    backends = [await backend_factory(f"b{i}") for i in range(2)]
    lb = await balancer_factory(
        f"listen: 127.0.0.1:0\n{TIMEOUTS}pools:\n  default:\n"
        f"    backends: [{backends[0].url}, {backends[1].url}]\n")
    await expect_status(f"{lb.url}/x", 200)
    ports = [int(b.url.rsplit(":", 1)[1]) for b in backends]
    for backend in backends:
        await backend.runner.cleanup()
    for _ in range(3):
        assert await expect_status(f"{lb.url}/x", 503) < 1.0
    # back up on the same ports: served again, no reload
    runners = []
    for port in ports:
        runner = web.AppRunner(echo_app("again"), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
    try:
        async def served() -> bool:
            with contextlib.suppress(AssertionError):
                await expect_status(f"{lb.url}/x", 200)
                return True
            return False

        deadline = time.monotonic() + 30
        while not await served():
            assert time.monotonic() < deadline, "not served again after the backends came back"
            await asyncio.sleep(0.2)
        assert lb.balancer.runtime.generation == 1
    finally:
        for runner in runners:
            await runner.cleanup()


SLOW_SERVER = textwrap.dedent("""
    import socket, sys, time
    server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 100000\\r\\n\\r\\n" + b"x" * 1000)
        time.sleep(60)  # killed here, mid-response
""")


async def test_a_backend_killed_mid_response_cuts_the_client_off_and_the_next_request_fails_over(
    tmp_path: Path, backend_factory: BackendFactory, balancer_factory: BalancerFactory,
) -> None:
    port = socket.create_server(("127.0.0.1", 0))
    number = port.getsockname()[1]
    port.close()
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SERVER, str(number)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        healthy = await backend_factory("healthy")
        lb = await balancer_factory(
            f"listen: 127.0.0.1:0\n{TIMEOUTS}pools:\n  default:\n"
            f"    policy: round_robin\n"  # in turn, from the first: healthy, then doomed
            f"    backends: [{healthy.url}, http://127.0.0.1:{number}]\n")
        async with aiohttp.ClientSession() as session, session.get(f"{lb.url}/x") as warm:
            assert warm.headers["X-Backend"] == "healthy"  # leaves a pooled connection
        await wait_for(lambda: lb.balancer.client_connections == 0, what="warm-up closed")
        baseline = resources(lb)
        async with aiohttp.ClientSession() as session:
            resp = await session.get(f"{lb.url}/x")
            assert resp.headers.get("Content-Length") == "100000"  # the doomed backend
            proc.send_signal(signal.SIGKILL)
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
            resp.release()
            for _ in range(6):  # the dead backend refuses: retried on the healthy one
                async with session.get(f"{lb.url}/x") as again:
                    assert again.status == 200
                    assert again.headers["X-Backend"] == "healthy"
        await settled(lb, baseline)
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def test_a_client_that_reads_nothing_is_dropped_after_client_send(
    backend_factory: BackendFactory, balancer_factory: BalancerFactory,
) -> None:
    backend = await backend_factory("b")
    lb = await balancer_factory(
        f"listen: 127.0.0.1:0\ntimeouts: {{client_send: 500ms}}\n"
        f"pools:\n  default: {{backends: [{backend.url}]}}\n")
    baseline = resources(lb)
    host, port = lb.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills up at once
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    sock.send(b"GET /download?bytes=50000000 HTTP/1.1\r\nHost: a\r\n\r\n")
    await wait_for(lambda: resources(lb)[2] == 1, what="the response streaming")
    started = time.monotonic()
    try:
        # the balancer gives up on this client: its connection and the upstream one close
        await wait_for(lambda: lb.balancer.client_connections == 0
                       and resources(lb)[2] == 0, timeout=10,
                       what="the non-reading client dropped")
        assert time.monotonic() - started < 5
    finally:
        sock.close()
    await settled(lb, baseline)


async def test_a_pipelining_client_that_reads_nothing_is_dropped_too(
    raw_backend_factory: RawBackendFactory, balancer_factory: BalancerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Responses that arrive whole are written in one go (SentResponse), not streamed; a
    client that pipelines requests for them and reads nothing would pile them all up in the
    balancer once the kernel's buffers are full. It is dropped after client_send instead."""
    body = b"z" * (100 << 10)

    async def whole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request_head(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b"
                         % (len(body), body))
            await writer.drain()

    raw = await raw_backend_factory(whole)
    lb = await balancer_factory(
        f"listen: 127.0.0.1:0\ntimeouts: {{client_send: 500ms}}\n"
        f"pools:\n  default: {{backends: [{raw.url}]}}\n")
    host, port = lb.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    await asyncio.get_running_loop().sock_sendall(
        sock, b"GET /whole HTTP/1.1\r\nHost: a\r\n\r\n" * 200)  # 20 MB of answers
    await wait_for(lambda: lb.balancer.client_connections == 1, what="the client connected")
    peak = [0]

    def dropped() -> bool:  # and, while the client is there, how much waits for it
        peak[0] = max(peak[0], buffered_bytes(lb)[0])
        return lb.balancer.client_connections == 0

    try:
        with caplog.at_level("INFO", logger="balancer.proxy"):
            await wait_for(dropped, timeout=10, what="the non-reading client dropped")
        assert "took nothing of a response" in caplog.text  # the whole-response path
        assert 0 < peak[0] < 1 << 20, f"{peak[0]} bytes piled up for a client reading nothing"
    finally:
        sock.close()


async def test_backends_that_never_accept_are_503_within_the_connect_timeouts(
    balancer_factory: BalancerFactory,
) -> None:
    """A backend whose accept queue is full drops new SYNs: connecting hangs. Each attempt
    gives up at `timeouts.connect` (500 ms); both backends down is 503 in about 1 s."""
    blackholes, fillers = [], []
    for _ in range(2):
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(0)  # never accepted: the queue fills up
        blackholes.append(server)
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(server.getsockname())
            fillers.append(filler)
    try:
        urls = [f"http://127.0.0.1:{s.getsockname()[1]}" for s in blackholes]
        lb = await balancer_factory(
            f"listen: 127.0.0.1:0\n{TIMEOUTS}pools:\n  default:\n"
            f"    backends: [{urls[0]}, {urls[1]}]\n")
        baseline = resources(lb)
        started = time.monotonic()
        async with aiohttp.ClientSession() as session, session.get(f"{lb.url}/x") as resp:
            text = await resp.text()
        elapsed = time.monotonic() - started
        assert resp.status == 503, text
        assert re.search(r"every backend of pool default is down \(2 tried; last: backend "
                         r"127\.0\.0\.1:\d+ did not accept within 0\.5s\)", text), text
        assert 0.9 < elapsed < 2.0
        await settled(lb, baseline)
    finally:
        for sock in fillers + blackholes:
            sock.close()
