"""The access log as an in-process balancer writes it: one line per request (JSON and
text), failed requests too, the client behind a trusted proxy, and a log that cannot be opened
refusing the reload that asks for it."""

import json
import re
from pathlib import Path

import aiohttp

from tests.helpers import BackendFactory, BalancerFactory, free_port, one_pool_config, wait_for


async def test_json_access_log_has_one_line_per_request(
    tmp_path: Path, backend_factory: BackendFactory, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    backend = await backend_factory("b")
    log_path = tmp_path / "access.log"
    lb = await balancer_factory(one_pool_config(
        backend.url, extra=f"access_log: {{format: json, path: '{log_path}'}}\n"))
    async with session.get(f"{lb.url}/items?id=7") as resp:
        assert resp.status == 200
        body = await resp.read()
        request_id = resp.headers["X-Request-Id"]
    async with session.post(f"{lb.url}/x", data=b"1234") as resp:
        assert resp.status == 200
    await wait_for(lambda: log_path.exists() and log_path.read_text().count("\n") == 2,
                   what="two access log lines")
    first, second = (json.loads(line) for line in log_path.read_text().splitlines())
    assert first["request_id"] == request_id
    assert (first["method"], first["target"], first["status"]) == ("GET", "/items?id=7", 200)
    assert (first["pool"], first["class"]) == ("default", "none")
    assert first["backend"] == backend.url.removeprefix("http://")
    assert first["bytes"] == len(body)
    assert 0 < first["upstream_ms"] <= first["duration_ms"]
    assert second["method"] == "POST"


async def test_text_access_log_and_failed_requests(
    tmp_path: Path, balancer_factory: BalancerFactory, session: aiohttp.ClientSession,
) -> None:
    log_path = tmp_path / "access.log"
    port = free_port()  # nothing listens there: the connect fails
    lb = await balancer_factory(one_pool_config(
        f"http://127.0.0.1:{port}", extra=f"access_log: {{path: '{log_path}'}}\n"))
    async with session.get(f"{lb.url}/a%20b?q=\"x\"") as resp:
        assert resp.status == 503
        request_id = resp.headers["X-Request-Id"]
    await wait_for(lambda: log_path.exists() and log_path.read_text().endswith("\n"),
                   what="an access log line")
    line = log_path.read_text()
    assert re.fullmatch(
        rf'{request_id} "GET /a%20b\?q=%22x%22" 503 \d+ class=none pool=default '
        rf"backend=127\.0\.0\.1:{port} upstream_ms=- total_ms=\d+\.\d{{3}}\n", line), line


async def test_the_logged_client_is_the_forwarded_one_only_behind_a_trusted_proxy(
    tmp_path: Path, backend_factory: BackendFactory,
    balancer_factory: BalancerFactory,
) -> None:
    backend = await backend_factory("b")
    logs = {}
    for trusted in (True, False):
        path = logs[trusted] = tmp_path / f"access-{trusted}.log"
        extra = (f"access_log: {{format: json, path: '{path}'}}\n"
                 + ("trusted_proxies: [127.0.0.1]\n" if trusted else ""))
        lb = await balancer_factory(one_pool_config(backend.url, extra=extra))
        async with aiohttp.ClientSession() as client, client.get(
                f"{lb.url}/x?y=1", headers={"X-Forwarded-For": "203.0.113.9, 10.0.0.2",
                                            "User-Agent": "probe/1", "Host": "a.example"}
        ) as resp:
            assert resp.status == 200
            request_id = resp.headers["X-Request-Id"]
        await wait_for(lambda p=path: p.exists() and p.read_text().endswith("\n"))  # type: ignore[misc]
        document = json.loads(path.read_text())
        assert document["client"] == ("203.0.113.9" if trusted else "127.0.0.1")
        assert (document["host"], document["user_agent"], document["request_id"]) == (
            "a.example", "probe/1", request_id)
        assert (document["method"], document["target"], document["status"]) == (
            "GET", "/x?y=1", 200)
        assert document["backend"] == backend.url.removeprefix("http://")
        assert 0 < document["upstream_ms"] <= document["duration_ms"]
        assert (document["pool"], document["source"]) == ("default", "-")


# -- SIGUSR1: reopen, as logrotate's postrotate asks -----------------------------------------------


async def test_an_access_log_that_cannot_be_opened_refuses_the_reload(
    tmp_path: Path, backend_factory: BackendFactory, balancer_factory: BalancerFactory,
) -> None:
    backend = await backend_factory("b")
    path = tmp_path / "lb.yaml"
    path.write_text(one_pool_config(backend.url))
    lb = await balancer_factory(path.read_text(), str(path))
    missing = tmp_path / "no-such-dir" / "access.log"
    path.write_text(one_pool_config(backend.url,
                                    extra=f"access_log: {{path: '{missing}'}}\n"))
    outcome = await lb.balancer.reload()
    assert not outcome.ok and outcome.generation == 1
    assert f"cannot open the access log {missing}: No such file or directory" in \
        outcome.errors[0]
    async with aiohttp.ClientSession() as client, client.get(f"{lb.url}/x") as resp:
        assert resp.status == 200
