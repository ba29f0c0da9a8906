"""One admin app for any `AdminSource` (balancer.ops.admin): the routes answer from what the
source says, so the single process and the supervisor (which answers for its workers) serve
the same listener. Driven here by a stand-in source, without a balancer behind it."""

from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CONTENT_TYPE_LATEST

from balancer.config.model import Config
from balancer.config.parse import parse_config
from balancer.ops.admin import AdminSource, build_admin_app
from balancer.ops.reloads import ReloadOutcome

TOKEN = "s3cret-token-0123456789"


class Source:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.draining = False
        self.reason: str | None = "no worker running"
        self.asked_since: list[float | None] = []
        self.outcome = ReloadOutcome(False, 7, "old", ("lb.yaml:1:1: bad",), at=5.0, seconds=1.0)

    def not_ready(self) -> str | None:
        return self.reason

    async def status_document(self) -> dict[str, Any]:
        return {"generation": 7}

    async def history_document(self, since: float | None) -> dict[str, Any]:
        self.asked_since.append(since)
        return {"points": []}

    async def exposition(self) -> bytes:
        return b"# HELP x y\n# TYPE x gauge\nx 1.0\n"

    async def reload(self) -> ReloadOutcome:
        return self.outcome


def _config(extra: str = "") -> Config:
    return parse_config("listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\n"
                        f"pools: {{p: {{backends: [http://127.0.0.1:9]}}}}\n{extra}")


async def _answer(client: TestClient[Any, Any], method: str, path: str,
                  **kwargs: Any) -> tuple[int, str]:
    async with client.request(method, path, **kwargs) as resp:
        return resp.status, await resp.text()


async def test_the_probes_answer_from_the_source() -> None:
    source = Source(_config())
    typed: AdminSource = source
    async with TestClient(TestServer(build_admin_app(typed))) as client:
        assert await _answer(client, "GET", "/readyz") == (503, "no worker running\n")
        assert await _answer(client, "GET", "/healthz") == (200, "ok\n")
        source.reason = None
        assert await _answer(client, "GET", "/readyz") == (200, "ready\n")
        source.draining = True
        assert await _answer(client, "GET", "/readyz") == (503, "draining\n")
        assert await _answer(client, "GET", "/healthz") == (503, "draining\n")
        assert await _answer(client, "GET", "/livez") == (200, "alive\n")


async def test_the_documents_metrics_and_reload_come_from_the_source() -> None:
    source = Source(_config())
    async with TestClient(TestServer(build_admin_app(source))) as client:
        assert await _answer(client, "GET", "/status") == (200, '{"generation": 7}')
        await _answer(client, "GET", "/status/history?since=12.5")
        await _answer(client, "GET", "/status/history")
        assert source.asked_since == [12.5, None]
        async with client.get("/metrics") as resp:
            assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
            assert await resp.text() == "# HELP x y\n# TYPE x gauge\nx 1.0\n"
        async with client.post("/reload") as resp:
            assert resp.status == 422
            assert await resp.json() == {"ok": False, "generation": 7, "digest": "old",
                                         "errors": ["lb.yaml:1:1: bad"]}


async def test_the_guard_reads_the_token_from_the_sources_config() -> None:
    source = Source(_config(f"admin_token: {TOKEN}\n"))
    async with TestClient(TestServer(build_admin_app(source))) as client:
        assert (await _answer(client, "GET", "/status"))[0] == 401
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert await _answer(client, "GET", "/status", headers=headers) == (
            200, '{"generation": 7}')
        source.config = _config()  # a reload dropped the token: the guard follows
        assert (await _answer(client, "GET", "/status"))[0] == 200
