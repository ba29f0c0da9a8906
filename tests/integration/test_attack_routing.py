"""Attack round (after issue 11): headers that make a backend server route another path than
the one the balancer classified.

gunicorn (23, the multiprocess runner) believes `SCRIPT_NAME` (and lists `PATH_INFO`) from a
front end in `forwarded_allow_ips`, which by default is 127.0.0.1 and every unix socket: the
balancer's own address. A client's `SCRIPT_NAME: /mount` then turns `GET /mount/process/image`
into PATH_INFO `/process/image` on gunicorn, while the classifier matched `/mount/process/image`.
Two-sided: the path the real gunicorn routes (tests/routing_echo.py) is the path the classifier
saw."""

import asyncio

import pytest

from tests.helpers import BalancerFactory, Running
from tests.routing_echo import RoutingServer


async def _get(url: str, target: bytes, extra: bytes) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n" + extra
                     + b"Connection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize("header", [b"SCRIPT_NAME", b"script_name", b"Script_Name",
                                    b"PATH_INFO"])
async def test_a_client_cannot_move_the_path_gunicorn_routes(
    servers: list[RoutingServer], balancer_factory: BalancerFactory,
    header: bytes,
) -> None:
    gunicorn = next(server for server in servers if server.name == "gunicorn")
    lb: Running = await balancer_factory(f"""\
listen: 127.0.0.1:0
pools:
  mp: {{backends: [http://127.0.0.1:{gunicorn.port}]}}
routing:
  classes: {{light_cpu: mp}}
  rules:
    - {{path: "/process/**", class: light_cpu}}
""")
    status, body = await _get(lb.url, b"/mount/process/image", header + b": /mount\r\n")
    assert status == 200, body
    # the path the classifier matched is the path gunicorn routes (not /process/image)
    assert bytes.fromhex(body.decode()) == b"/mount/process/image"
    # and the header reaches nobody
    status, body = await _get(lb.url, b"/plain", header + b": /plain\r\n")
    assert status == 200 and bytes.fromhex(body.decode()) == b"/plain", body
