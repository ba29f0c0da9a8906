"""Attack round (after issue 11): a client that goes away while its response streams must cost
no more than a debug line. Before, such a client could make the balancer log aiohttp's ERROR
"Error handling request" with a 20-line traceback (the relay wrote to the client's closing
transport): any client could flood the log, where README promises that faults a client causes
are logged at debug level only. Real subprocess (uvloop), as deployed."""

import asyncio
import contextlib
import socket
from pathlib import Path

from tests.helpers import ProcessFactory
from tests.recording import Recorded, RecordingBackend


async def test_clients_gone_mid_response_log_no_error(
    balancer_process: ProcessFactory, tmp_path: Path,
) -> None:
    async def streams(request: Recorded, writer: asyncio.StreamWriter) -> None:
        if request.target != b"/stream":
            body = b"for " + request.target
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
            return
        # the head first, the body in small pieces after it: the client's reset then meets a
        # piece on its way (seen failing 3 runs of 3 before the fix)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 40000\r\n\r\n")
        with contextlib.suppress(ConnectionError):  # the balancer drops it when the client goes
            for _ in range(400):
                await writer.drain()
                await asyncio.sleep(0.0002)
                writer.write(b"a" * 100)

    backend = await RecordingBackend(streams).start()
    try:
        config = tmp_path / "lb.yaml"
        config.write_text(f"listen: 127.0.0.1:0\npools:\n  default:\n"
                          f"    backends: [{backend.url}]\n")
        lb = balancer_process(config)
        host, port = lb.url.removeprefix("http://").rsplit(":", 1)

        def hit_and_leave() -> None:
            with socket.create_connection((host, int(port)), timeout=10) as conn:
                conn.sendall(b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n")
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(100)
            # gone as soon as the head arrived, mid-body

        for _ in range(30):
            await asyncio.to_thread(hit_and_leave)

        def after() -> bytes:
            with socket.create_connection((host, int(port)), timeout=10) as conn:
                conn.sendall(b"GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                return data

        answer = await asyncio.to_thread(after)
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"for /after")
        log = lb.log()
        assert "ERROR" not in log and "Traceback" not in log, log[-3000:]
    finally:
        await backend.stop()
