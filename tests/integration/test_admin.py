"""The admin listener's guard: the token from a header or a login cookie (never the URL);
without a token, only the admin address or an allowed name as Host (no DNS rebinding); no
cross-site POST (no CSRF), with or without a token."""

import re
from pathlib import Path

import aiohttp
import pytest
import yaml

from balancer.config.parse import parse_config
from tests.helpers import (
    ROOT,
    BackendFactory,
    BalancerFactory,
    Running,
    one_pool_config,
)

TOKEN = "s3cret-token-0123456789"


async def test_the_admin_listener_can_require_a_bearer_token(
    backend_factory: BackendFactory, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    backend = await backend_factory("b")
    token = "s3cret-token-0123456789"
    lb = await balancer_factory(one_pool_config(backend.url, extra=f"admin_token: {token}\n"))
    async with session.get(f"{lb.admin_url}/healthz") as resp:
        assert resp.status == 200  # health checks need no token
    for path in ("/status", "/metrics", "/"):
        async with session.get(f"{lb.admin_url}{path}") as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        async with session.get(f"{lb.admin_url}{path}",
                               headers={"Authorization": "Bearer wrong-token-0123456789"}) as resp:
            assert resp.status == 401
        async with session.get(f"{lb.admin_url}{path}",
                               headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200
    async with session.post(f"{lb.admin_url}/reload") as resp:
        assert resp.status == 401
    async with session.get(f"{lb.admin_url}/status?token={token}") as resp:
        assert resp.status == 401  # never in the URL (a header or the login cookie only)


async def test_the_token_in_the_query_string_is_not_accepted(
    backend_factory: BackendFactory, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    backend = await backend_factory("b")
    lb = await balancer_factory(one_pool_config(backend.url, extra=f"admin_token: {TOKEN}\n"))
    for path in ("/status", "/metrics", "/"):
        async with session.get(f"{lb.admin_url}{path}?token={TOKEN}") as resp:
            assert resp.status == 401, path


async def _started(balancer_factory: BalancerFactory, tmp_path: Path, text: str) -> Running:
    config = tmp_path / "lb.yaml"  # a file to reload from
    config.write_text(text)
    return await balancer_factory(text, str(config))


async def test_the_login_form_sets_an_httponly_strict_cookie_that_then_authorises(
    tmp_path: Path, backend_factory: BackendFactory, balancer_factory: BalancerFactory,
) -> None:
    backend = await backend_factory("b")
    lb = await _started(balancer_factory, tmp_path,
                        one_pool_config(backend.url, extra=f"admin_token: {TOKEN}\n"))
    jar = aiohttp.CookieJar(unsafe=True)  # keep cookies of an IP address host
    async with aiohttp.ClientSession(cookie_jar=jar) as client:
        async with client.get(f"{lb.admin_url}/") as resp:
            assert resp.status == 401
            page = await resp.text()
            assert re.search(r'<form method="post" action="login"', page)
            assert 'type="password" name="token"' in page
        async with client.post(f"{lb.admin_url}/login", data={"token": "wrong-token-0123456789"},
                               allow_redirects=False) as resp:
            assert resp.status == 401
            assert "Set-Cookie" not in resp.headers
        async with client.post(f"{lb.admin_url}/login", data={"token": TOKEN},
                               allow_redirects=False) as resp:
            assert resp.status == 303
            assert resp.headers["Location"] == "./"
            cookie = resp.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert TOKEN not in cookie  # a value derived from the token, not the token
        for path in ("/", "/status", "/metrics"):
            async with client.get(f"{lb.admin_url}{path}") as resp:
                assert resp.status == 200, path
        async with client.post(f"{lb.admin_url}/reload") as resp:
            assert resp.status == 200
    assert lb.balancer.runtime.generation == 2


async def test_a_cookie_for_an_old_token_is_refused(
    tmp_path: Path, backend_factory: BackendFactory, balancer_factory: BalancerFactory,
) -> None:
    backend = await backend_factory("b")
    config = tmp_path / "lb.yaml"
    config.write_text(one_pool_config(backend.url, extra=f"admin_token: {TOKEN}\n"))
    lb = await balancer_factory(config.read_text(), str(config))
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as client:
        async with client.post(f"{lb.admin_url}/login", data={"token": TOKEN}) as resp:
            assert resp.status == 200  # the status page, after the redirect
        config.write_text(config.read_text().replace(TOKEN, "another-token-0123456789"))
        async with client.post(f"{lb.admin_url}/reload") as resp:
            assert resp.status == 200, await resp.text()
        async with client.get(f"{lb.admin_url}/status") as resp:
            assert resp.status == 401


@pytest.mark.parametrize("token", [None, TOKEN])
async def test_cross_site_posts_are_refused(
    token: str | None, tmp_path: Path, backend_factory: BackendFactory,
    balancer_factory: BalancerFactory, session: aiohttp.ClientSession,
) -> None:
    backend = await backend_factory("b")
    extra = f"admin_token: {token}\n" if token else ""
    lb = await _started(balancer_factory, tmp_path, one_pool_config(backend.url, extra=extra))
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    for hostile in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                    {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}):
        for path in ("/reload", "/login"):
            async with session.post(f"{lb.admin_url}{path}", headers={**auth, **hostile}) as resp:
                assert resp.status == 403, (hostile, path)
                assert "cross-site" in await resp.text()
    assert lb.balancer.runtime.generation == 1
    for friendly in ({}, {"Origin": lb.admin_url}, {"Sec-Fetch-Site": "same-origin"},
                     {"Sec-Fetch-Site": "none"}):
        async with session.post(f"{lb.admin_url}/reload", headers={**auth, **friendly}) as resp:
            assert resp.status == 200, friendly
    assert lb.balancer.runtime.generation == 5


async def test_without_a_token_only_the_admin_address_or_an_allowed_name_is_served(
    backend_factory: BackendFactory, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    backend = await backend_factory("b")
    lb = await balancer_factory(one_pool_config(
        backend.url, extra="admin_allowed_hosts: [balancer.internal]\n"))
    port = lb.admin_url.rsplit(":", 1)[1]
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.nip.io:{port}",
                 "balancer.internal.evil.example", f"10.1.2.3:{port}"):
        for method, path in (("GET", "/status"), ("GET", "/"), ("GET", "/metrics"),
                             ("POST", "/reload")):
            async with session.request(method, f"{lb.admin_url}{path}",
                                       headers={"Host": host}) as resp:
                assert resp.status == 403, (host, path)
                assert "admin_allowed_hosts" in await resp.text()
    for host in (f"127.0.0.1:{port}", "127.0.0.1", f"localhost:{port}", "LOCALHOST",
                 f"balancer.internal:{port}", "Balancer.Internal"):
        async with session.get(f"{lb.admin_url}/status", headers={"Host": host}) as resp:
            assert resp.status == 200, host
    async with session.get(f"{lb.admin_url}/healthz", headers={"Host": "evil.example"}) as resp:
        assert resp.status == 200  # a health probe may use any name


async def test_with_a_token_any_host_name_may_be_used(
    backend_factory: BackendFactory, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    backend = await backend_factory("b")
    lb = await balancer_factory(one_pool_config(backend.url, extra=f"admin_token: {TOKEN}\n"))
    async with session.get(f"{lb.admin_url}/status", headers={
            "Host": "balancer:9901", "Authorization": f"Bearer {TOKEN}"}) as resp:
        assert resp.status == 200


def test_admin_allowed_hosts_takes_names_only() -> None:
    for bad in ("[evil example]", "[evil.example:80]", "[http://x]", "['*']", "[1]", "[\"\"]"):
        with pytest.raises(Exception, match=r"admin_allowed_hosts\[0\]"):
            parse_config(f"listen: 127.0.0.1:0\nadmin_allowed_hosts: {bad}\n"
                         "pools: {a: {backends: [http://127.0.0.1:1]}}\n")


def test_the_docker_config_does_not_open_an_unguarded_admin_listener() -> None:
    config = parse_config((ROOT / "config" / "docker.yaml").read_text(), "docker.yaml")
    assert config.admin is not None
    loopback = config.admin.kind == "tcp" and config.admin.host in ("127.0.0.1", "::1",
                                                                    "localhost")
    assert loopback or config.admin_token is not None
    assert yaml.safe_load((ROOT / "config" / "docker.yaml").read_text())["admin"]
