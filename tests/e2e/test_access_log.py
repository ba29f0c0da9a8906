"""The access log as operators use it: `combined` lines that the standard combined-format
regex (what nginx/Apache log tools parse) reads, JSON with the contract's keys, the client
behind a trusted proxy, and reopening on SIGUSR1 (logrotate's postrotate), also with workers."""

import asyncio
import json
import os
import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
from hypothesis import given
from hypothesis import strategies as st

from balancer.config.model import AccessLogConfig
from balancer.proxy.access_log import FORMATTERS, AccessLog, Entry
from tests.fakes import Backend
from tests.helpers import (
    BackendFactory,
    BalancerFactory,
    ProcessFactory,
    free_port,
    one_pool_config,
    wait_for,
)

# The combined log format as log tools match it (GoAccess' COMBINED, the ELK/Grok
# COMBINEDAPACHELOG, awk recipes): host ident user [time] "request" status bytes "referer" "ua"
COMBINED = re.compile(
    r'^(?P<client>\S+) (?P<ident>\S+) (?P<user>\S+) \[(?P<time>\d{2}/[A-Z][a-z]{2}/\d{4}:'
    r'\d{2}:\d{2}:\d{2} [+-]\d{4})\] "(?P<method>[^ "]+) (?P<target>[^ "]+) '
    r'(?P<protocol>HTTP/\d\.\d)" (?P<status>\d{3}) (?P<bytes>\d+|-) '
    r'"(?P<referer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)"')
RFC3339_MS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
KEYS = ["time", "client", "host", "method", "target", "protocol", "status", "bytes",
        "duration_ms", "upstream_ms", "backend", "class", "pool", "source", "request_id",
        "user_agent"]


def entry(**fields: object) -> Entry:
    record = Entry()
    record.started = 1796571602.25  # 2026-12-06T15:40:02.250Z
    for name, value in fields.items():
        setattr(record, name, value)
    return record


def lines_of(tmp_path: Path, log_format: str, *entries: Entry) -> list[str]:
    path = tmp_path / f"access-{log_format}.log"
    log = AccessLog(AccessLogConfig(format=log_format, path=str(path)))  # type: ignore[arg-type]
    for record in entries:
        log.record(record)
    log.close()
    return path.read_text().splitlines()


def test_a_combined_line_is_what_log_tools_parse(tmp_path: Path) -> None:
    [line] = lines_of(tmp_path, "combined", entry(
        client="203.0.113.9", method="GET", path="/a b?q=\"x\"", status=200, bytes_sent=84,
        referer="https://example.com/", user_agent='curl/8.5 "quoted"', host="shop.example",
        backend="127.0.0.1:8101", pool="io", request_class="io", source="rule",
        request_id="3f9c-1b", total_s=0.0023, upstream_s=0.0019))
    match = COMBINED.match(line)
    assert match is not None, line
    assert match.group("client", "ident", "user") == ("203.0.113.9", "-", "-")
    assert match["time"] == "06/Dec/2026:15:40:02 +0000"
    assert match.group("method", "target", "protocol") == ("GET", "/a%20b?q=%22x%22",
                                                           "HTTP/1.1")
    assert match.group("status", "bytes", "referer") == ("200", "84", "https://example.com/")
    assert match["agent"] == r"curl/8.5 \x22quoted\x22"
    assert line[match.end():] == (' host="shop.example" duration_ms=2.300 upstream_ms=1.9 '
                                  "backend=127.0.0.1:8101 pool=io class=io source=rule "
                                  "request_id=3f9c-1b")


@given(st.text(), st.text(), st.text(), st.text(min_size=1))
def test_any_header_text_gives_one_parseable_combined_line(
    agent: str, referer: str, host: str, path: str,
) -> None:
    text = FORMATTERS["combined"](entry(user_agent=agent, referer=referer, host=host, status=200,
                                        path="/" + path))
    assert text.endswith("\n") and text.count("\n") == 1 and "\r" not in text
    assert COMBINED.match(text) is not None, text


def test_json_lines_carry_exactly_the_contract_keys(tmp_path: Path) -> None:
    [line] = lines_of(tmp_path, "json", entry(
        client="198.51.100.7", host="h", method="POST", path="/p?x=1", status=502,
        bytes_sent=12, total_s=0.5, backend="b:1", pool="p", request_class="heavy_cpu",
        source="learned", request_id="r1", user_agent="ua"))
    document = json.loads(line)
    assert list(document) == KEYS
    assert RFC3339_MS.fullmatch(document["time"]) and document["time"] == \
        "2026-12-06T15:40:02.250Z"
    assert document["upstream_ms"] is None and document["duration_ms"] == 500.0
    assert (document["target"], document["protocol"], document["source"]) == (
        "/p?x=1", "HTTP/1.1", "learned")


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

def _get(url: str) -> None:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200


def _wait_for_lines(path: Path, count: int, timeout: float = 15.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"{path}: fewer than {count} lines after {timeout}s")


def rotation(tmp_path: Path, backend: Backend, start: ProcessFactory, processes: int,
             *args: str) -> Iterator[None]:
    """Lines, then mv + SIGUSR1, then lines: the new ones are in a new file."""
    log_path, rotated = tmp_path / "access.log", tmp_path / "access.log.1"
    config = tmp_path / "lb.yaml"
    port = free_port()
    config.write_text(one_pool_config(
        backend.url, extra=f"access_log: {{format: combined, path: '{log_path}'}}\n"
    ).replace("listen: 127.0.0.1:0", f"listen: 127.0.0.1:{port}"))
    lb = start(config, *args, ready=r"serving with 2 workers" if args else "serving config")
    yield
    for _ in range(4):
        _get(f"{lb.url}/before")
    _wait_for_lines(log_path, 4)
    os.rename(log_path, rotated)
    lb.signal(signal.SIGUSR1)
    deadline = time.monotonic() + 15
    while not log_path.exists():  # every process opens the new file at once, empty
        assert time.monotonic() < deadline, "SIGUSR1 did not create a new access log"
        time.sleep(0.02)
    lb.wait_for_log(r"(?s)" + ".*".join(["access log reopened"] * processes))
    for _ in range(4):
        _get(f"{lb.url}/after")
    new = _wait_for_lines(log_path, 4)
    old = rotated.read_text().splitlines()
    assert all(COMBINED.match(line) for line in old + new)
    assert all(" /before " in line for line in old) and len(old) == 4
    assert all(" /after " in line for line in new) and len(new) == 4
    assert lb.proc.poll() is None


async def test_sigusr1_reopens_the_access_log(
    tmp_path: Path, backend_factory: BackendFactory,
    balancer_process: ProcessFactory,
) -> None:
    backend = await backend_factory("b")
    steps = rotation(tmp_path, backend, balancer_process, 1)
    next(steps)
    await _in_thread(steps)


async def test_sigusr1_reopens_the_access_log_of_every_worker(
    tmp_path: Path, backend_factory: BackendFactory,
    balancer_process: ProcessFactory,
) -> None:
    backend = await backend_factory("b")
    steps = rotation(tmp_path, backend, balancer_process, 2, "--workers", "2")
    next(steps)
    await _in_thread(steps)


async def _in_thread(steps: Iterator[None]) -> None:
    """The blocking part (urllib, sleeps on files) off the loop the backend runs on."""
    await asyncio.to_thread(lambda: next(steps, None))


async def test_sigusr1_while_a_worker_restarts_does_not_kill_it(
    tmp_path: Path, backend_factory: BackendFactory,
    balancer_process: ProcessFactory,
) -> None:
    """logrotate may signal at any moment: SIGUSR1 reaches no worker before its handler is
    in (the supervisor passes it to ready workers only; a starting one ignores it)."""
    backend = await backend_factory("b")
    config = tmp_path / "lb.yaml"
    config.write_text(one_pool_config(
        backend.url, extra=f"access_log: {{path: '{tmp_path / 'access.log'}'}}\n"
    ).replace("listen: 127.0.0.1:0", f"listen: 127.0.0.1:{free_port()}"))
    lb = balancer_process(config, "--workers", "2", ready=r"serving with 2 workers")
    pid = int(lb.wait_for_log(r"worker 1 started \(pid (\d+)\)").group(1))
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while not re.search(rf"worker 1 started \(pid (?!{pid}\))", lb.log()):
        assert time.monotonic() < deadline, lb.log()
        lb.signal(signal.SIGUSR1)
        await asyncio.sleep(0.005)
    for _ in range(300):  # through the new worker's start (bounded: 300 signals)
        lb.signal(signal.SIGUSR1)
        await asyncio.sleep(0.005)
    assert "exited with signal SIGUSR1" not in lb.log()
