"""Signals on a real `python -m balancer run` process: SIGTERM drains, SIGHUP reloads."""

import asyncio
import itertools
import re
import signal
from pathlib import Path

import aiohttp

from tests.helpers import BackendFactory, ProcessFactory, one_pool_config, wait_for


async def test_sigterm_lets_in_flight_requests_finish_then_exits_0(
    tmp_path: Path, backend_factory: BackendFactory,
    balancer_process: ProcessFactory,
) -> None:
    backend = await backend_factory()
    config = tmp_path / "lb.yaml"
    config.write_text(one_pool_config(backend.url, extra="timeouts: {drain: 10s}\n"))
    lb = balancer_process(config)
    async with aiohttp.ClientSession() as session:
        slow = asyncio.ensure_future(session.get(f"{lb.url}/slow?s=1"))
        await wait_for(lambda: bool(backend.seen), what="the request at the backend")  # 1 s more
        lb.signal(signal.SIGTERM)
        async with await slow as resp:
            assert resp.status == 200
            assert await resp.text() == "slow\n"
    assert await asyncio.to_thread(lb.proc.wait, 15) == 0
    assert "SIGTERM: draining" in lb.log()


async def test_sighup_swaps_a_valid_config_and_keeps_the_old_one_on_error(
    tmp_path: Path, backend_factory: BackendFactory,
    balancer_process: ProcessFactory,
) -> None:
    first, second = await backend_factory("first"), await backend_factory("second")
    config = tmp_path / "lb.yaml"
    config.write_text(one_pool_config(first.url, extra="watch: false\n"))  # SIGHUP's reload
    lb = balancer_process(config)
    async with aiohttp.ClientSession() as session:
        async def served_by() -> str:
            async with session.get(f"{lb.url}/") as resp:
                assert resp.status == 200
                return resp.headers["X-Backend"]

        assert await served_by() == "first"
        config.write_text(one_pool_config(second.url, extra="watch: false\n",
                                          listen=lb.url.removeprefix("http://")))
        lb.signal(signal.SIGHUP)
        await asyncio.to_thread(lb.wait_for_log, r"reloaded config: generation 2")
        assert await served_by() == "second"

        config.write_text("watch: false\nlisten: 127.0.0.1:0\npools:\n  default:\n"
                          "    backends: [http//x]\n")
        lb.signal(signal.SIGHUP)
        await asyncio.to_thread(lb.wait_for_log, r"reload refused, keeping generation 2: "
                                r".*lb\.yaml:5:16: pools\.default\.backends\[0\]")
        assert await served_by() == "second"
        async with session.get(f"{lb.admin_url}/status") as resp:
            status = await resp.json()
        assert status["generation"] == 2
        assert [r["ok"] for r in status["reloads"]] == [True, False]


def _two_pool_config(io: str, light: str, moved_to: str, extra: str = "") -> str:
    """Two pools; `/moved/**` is pinned to `moved_to`'s class, `/stay/**` always to io."""
    return f"""\
listen: 127.0.0.1:0
admin: 127.0.0.1:0
trusted_proxies: [127.0.0.1]
{extra}pools:
  io:    {{kind: async,    backends: [{io}]}}
  light: {{kind: threaded, backends: [{light}]}}
routing:
  classes: {{io: io, light_cpu: light, heavy_cpu: light}}
  default_class: io
  explain: true
  rules:
    - {{path: "/moved/**", class: {moved_to}, pin: true}}
    - {{path: "/stay/**", class: io}}
"""


class Load:
    """A steady closed-loop load: `workers` coroutines sending requests one after another."""

    def __init__(self, session: aiohttp.ClientSession, url: str, workers: int) -> None:
        self.session = session
        self.url = url
        self.ok = 0
        self.failures: list[str] = []
        self.stopped = False
        self.tasks = [asyncio.ensure_future(self._run(i)) for i in range(workers)]

    async def _run(self, index: int) -> None:
        path = "/stay/x" if index % 2 else "/moved/x"
        while not self.stopped:
            try:
                async with self.session.get(f"{self.url}{path}") as resp:
                    await resp.read()
                    if resp.status == 200:
                        self.ok += 1
                    else:
                        self.failures.append(f"{path}: {resp.status}")
            except aiohttp.ClientError as exc:
                self.failures.append(f"{path}: {exc!r}")

    async def stop(self) -> None:
        self.stopped = True
        await asyncio.gather(*self.tasks)


async def test_fifty_reloads_under_load_drop_nothing_and_move_the_route_each_time(
    tmp_path: Path, backend_factory: BackendFactory,
    balancer_process: ProcessFactory,
) -> None:
    io, light = await backend_factory("io"), await backend_factory("light")
    configs = {pool: _two_pool_config(io.url, light.url, cls, extra="watch: false\n")  # SIGHUP
               for pool, cls in (("io", "io"), ("light", "light_cpu"))}
    config = tmp_path / "lb.yaml"
    config.write_text(configs["io"])
    lb = balancer_process(config)
    async with aiohttp.ClientSession() as session:
        async def pool_of(path: str) -> str:
            async with session.get(f"{lb.url}{path}") as resp:
                assert resp.status == 200
                match = re.search(r"pool=(\w+)", resp.headers["X-Balancer-Decision"])
                assert match is not None
                return match.group(1)

        load = Load(session, lb.url, workers=8)
        ws = await session.ws_connect(f"{lb.url}/ws")  # an open websocket across every reload
        for generation in range(2, 52):
            expected = "light" if generation % 2 == 0 else "io"
            config.write_text(configs[expected])
            before = load.ok
            lb.signal(signal.SIGHUP)
            await asyncio.to_thread(lb.wait_for_log,
                                    rf"reloaded config: generation {generation} ")
            assert await pool_of("/moved/y") == expected, f"generation {generation}"
            assert await pool_of("/stay/y") == "io"
            await wait_for(lambda: load.ok > before + 20, what="load served between reloads")  # noqa: B023
        config.write_text(configs["io"].replace("routing:", "routing:\n  bogus: 1"))
        lb.signal(signal.SIGHUP)
        await asyncio.to_thread(lb.wait_for_log, r"reload refused, keeping generation 51: "
                                r".*lb\.yaml:\d+:\d+: routing\.bogus: unknown key")
        before = load.ok
        await wait_for(lambda: load.ok > before + 100, what="serving after the refused reload")
        await ws.send_str("after 50 reloads")
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.data == "echo:after 50 reloads"
        await ws.close()
        await load.stop()
        assert await pool_of("/moved/z") == "io"  # generation 51 (odd: io) still serves
    assert load.failures == []
    assert load.ok > 1000


async def test_sigterm_under_load_fails_no_request_in_flight(
    tmp_path: Path, backend_factory: BackendFactory,
    balancer_process: ProcessFactory,
) -> None:
    """Requests in flight when SIGTERM arrives all get their 200. A request is in flight
    if the backend received it; one that failed without reaching the backend was refused
    at connect (the listener is closed) or reset in the kernel's accept queue, never
    accepted: those are counted apart and must be connection errors, not error responses."""
    backend = await backend_factory("b")
    config = tmp_path / "lb.yaml"
    config.write_text(one_pool_config(backend.url, extra="timeouts: {drain: 10s}\n"))
    lb = balancer_process(config)
    answered: list[str] = []
    bad_status: list[str] = []
    connection_errors: dict[str, str] = {}
    ids = itertools.count()
    signalled = asyncio.Event()

    async def client() -> None:
        connector = aiohttp.TCPConnector(force_close=True)  # one connection per request
        async with aiohttp.ClientSession(connector=connector) as session:
            while True:
                request_id = f"r{next(ids)}"
                try:
                    async with session.get(f"{lb.url}/slow?s=0.2&id={request_id}") as resp:
                        await resp.read()
                    (answered if resp.status == 200 else bad_status).append(request_id)
                except aiohttp.ClientError as exc:
                    connection_errors[request_id] = repr(exc)
                    if signalled.is_set():
                        return

    clients = [asyncio.ensure_future(client()) for _ in range(16)]
    await wait_for(lambda: len(answered) > 50, what="a steady load")
    await wait_for(lambda: len(backend.seen) - len(answered) >= 8, what="requests in flight")
    in_flight = set(backend.seen) - set(answered)
    lb.signal(signal.SIGTERM)
    signalled.set()
    await asyncio.wait_for(asyncio.gather(*clients), 30)
    assert await asyncio.to_thread(lb.proc.wait, 15) == 0
    assert bad_status == []
    lost = set(backend.seen) & set(connection_errors)
    assert lost == set(), {key: connection_errors[key] for key in lost}
    assert in_flight <= set(answered)  # every request in flight at the signal was answered
    assert set(backend.seen) <= set(answered)
    assert "SIGTERM: draining" in lb.log()


async def test_sigterm_grace_period_keeps_serving_with_connection_close_and_healthz_503(
    tmp_path: Path, backend_factory: BackendFactory,
    balancer_process: ProcessFactory,
) -> None:
    backend = await backend_factory()
    config = tmp_path / "lb.yaml"
    config.write_text(one_pool_config(backend.url, extra="timeouts: {grace: 2s, drain: 5s}\n"))
    lb = balancer_process(config)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{lb.admin_url}/healthz") as resp:
            assert resp.status == 200
        async with session.get(f"{lb.url}/x") as resp:
            assert resp.status == 200 and "close" not in resp.headers.get("Connection", "")
        lb.signal(signal.SIGTERM)
        await asyncio.to_thread(lb.wait_for_log, r"SIGTERM: grace period of 2s")
        async with session.get(f"{lb.admin_url}/healthz") as resp:
            assert resp.status == 503 and await resp.text() == "draining\n"
        for path in ("/x", "/status/404"):  # whole answers, and one that is no 2xx
            async with session.get(f"{lb.url}{path}") as resp:  # new requests still served
                assert resp.headers["Connection"] == "close"
        async with session.get(f"{lb.url}/download?bytes=300000") as resp:  # streamed
            assert resp.status == 200 and resp.headers["Connection"] == "close"
            assert len(await resp.read()) == 300000
        await asyncio.to_thread(lb.wait_for_log, r"SIGTERM: draining")
    assert await asyncio.to_thread(lb.proc.wait, 15) == 0
    assert lb.log().index("grace period") < lb.log().index("draining (up to 5s)")
