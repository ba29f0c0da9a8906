"""The access log's lines, without a balancer: `combined` lines that the standard
combined-format regex (what nginx/Apache log tools parse) reads, JSON with the contract's keys,
and lines written whole in pipe-atomic chunks. The log as a running balancer writes it:
tests/integration/test_access_log.py; reopening on SIGUSR1: tests/e2e/test_access_log.py."""

import json
import random
import re
import select
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from balancer.balancing.runtime import Runtime
from balancer.config.addresses import parse_backend
from balancer.config.model import AccessLogConfig
from balancer.config.parse import parse_config
from balancer.proxy.access_log import FORMATTERS, AccessLog
from balancer.proxy.context import RequestContext
from tests.helpers import COMBINED

RFC3339_MS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
KEYS = ["time", "client", "host", "method", "target", "protocol", "status", "bytes",
        "duration_ms", "upstream_ms", "backend", "class", "pool", "source", "request_id",
        "user_agent"]


RUNTIME = Runtime(parse_config("listen: 127.0.0.1:0\npools:\n"
                               "  io: {backends: ['http://127.0.0.1:8101']}\n"
                               "  p: {backends: ['http://b:1']}\n", "test.yaml"),
                  1, random.Random(0))


def entry(**fields: object) -> RequestContext:
    """A request's context as the proxy hands it to the log (`pool` and `backend` by name)."""
    record = RequestContext(RUNTIME, 0.0)
    record.wall_started = 1796571602.25  # 2026-12-06T15:40:02.250Z
    pool, backend = fields.pop("pool", None), fields.pop("backend", None)
    if pool is not None:
        record.pool = RUNTIME.pools[str(pool)]
    if backend is not None:
        record.address = parse_backend(f"http://{backend}")
    for name, value in fields.items():
        setattr(record, name, value)
    return record


def lines_of(tmp_path: Path, log_format: str, *entries: RequestContext) -> list[str]:
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


def test_access_log_lines_are_written_whole_in_pipe_atomic_chunks(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(AccessLogConfig(format="json", path=str(path)))
    writes: list[int] = []
    real_write = log._write
    log._write = lambda data: (writes.append(len(data)), real_write(data))  # type: ignore[method-assign]
    for index in range(300):
        entry = RequestContext(RUNTIME, 0.0)
        entry.request_id = f"r{index}"
        entry.path = "/p" + "x" * (index % 50)
        log.record(entry)
    log.close()
    lines = path.read_text().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == [f"r{i}" for i in range(300)]
    # POSIX guarantees at least 512 bytes, Linux 4096 (select.PIPE_BUF): the documented bound
    assert writes and max(writes) <= min(select.PIPE_BUF, 4096)
    assert len(writes) < 300  # lines are batched, not one write each
