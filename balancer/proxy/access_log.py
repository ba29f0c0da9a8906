"""The access log: one line per request, as text or JSON, written in batches.

A line is the request's `RequestContext` (`describe_request` fills in what only the log
needs); the formats (text, combined, json) are a contract with log pipelines.

I/O shell, kept off the hot path: `record` formats one line into a list; the lines are
written (a few `os.write`s for the batch) when the batch is large or, at the latest, by `flush`,
which the server calls every `FLUSH_INTERVAL` seconds and at shutdown: one system call per
second or per BATCH lines, not one per request; a crash loses at most the last second.
"""

import json
import os
import sys
import time
from collections.abc import Callable

from aiohttp import web

from balancer.config.model import AccessLogConfig
from balancer.proxy.context import RequestContext

FLUSH_INTERVAL = 1.0
BATCH = 256
ATOMIC = 4096  # PIPE_BUF: writes up to this size to a pipe are never interleaved


class AccessLog:
    """Lines go out in writes of whole lines of at most PIPE_BUF bytes, on an O_APPEND
    descriptor when a file: with several worker processes writing to one file or one pipe
    (standard error), their lines never interleave mid-line."""

    def __init__(self, config: AccessLogConfig) -> None:
        self.config = config
        self._owned = config.path not in ("-", "stdout")
        if config.path == "-":
            self._fd = sys.stderr.fileno()
        elif config.path == "stdout":
            self._fd = sys.stdout.fileno()
        else:
            self._fd = _open(config.path)
        self._lines: list[str] = []
        self._format = FORMATTERS[config.format]

    def record(self, entry: RequestContext) -> None:
        self._lines.append(self._format(entry))
        if len(self._lines) >= BATCH:
            self.flush()

    def flush(self) -> None:
        lines, self._lines = self._lines, []
        chunk: list[bytes] = []
        size = 0
        for line in lines:
            encoded = line.encode("utf-8", "backslashreplace")
            if size + len(encoded) > ATOMIC and chunk:
                self._write(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(encoded)
            size += len(encoded)
        if chunk:
            self._write(b"".join(chunk))

    def _write(self, data: bytes) -> None:
        while data:
            try:
                written = os.write(self._fd, data)
            except BlockingIOError:  # a non-blocking pipe that is full: drop, never wait
                return
            data = data[written:]

    def reopen(self) -> None:
        """After logrotate moved the file: what is batched goes to the old file, the next
        lines to a new one at the configured path (standard streams are left as they are).
        Raises OSError, and keeps the old file, when the new one cannot be opened."""
        if not self._owned:
            return
        fd = _open(self.config.path)
        self.flush()
        old, self._fd = self._fd, fd
        os.close(old)

    def close(self) -> None:
        self.flush()
        if self._owned:
            os.close(self._fd)


def describe_request(ctx: RequestContext, request: web.BaseRequest, client: str) -> None:
    """The access log's view of the request (only when there is an access log); `client`
    is the peer's address."""
    headers = request.headers
    ctx.wall_started = time.time() - ctx.total_s
    forwarded_for = headers.get("X-Forwarded-For") if ctx.runtime.is_trusted(client) else None
    if forwarded_for:
        client = forwarded_for.partition(",")[0].strip() or client
    ctx.client = client
    ctx.host = headers.get("Host", "")
    ctx.method = request.method
    ctx.path = request.raw_path
    ctx.protocol = f"HTTP/{request.version.major}.{request.version.minor}"
    ctx.user_agent = headers.get("User-Agent", "")
    ctx.referer = headers.get("Referer", "")


def _open(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _upstream_ms(entry: RequestContext) -> float | None:
    return None if entry.upstream_s < 0 else round(entry.upstream_s * 1000, 3)


_UNSAFE = {c: f"%{c:02X}" for c in (*range(0x21), 0x22, 0x7F)}


def _text(entry: RequestContext) -> str:
    upstream = _upstream_ms(entry)
    path = entry.path.translate(_UNSAFE)
    return (f'{entry.request_id} "{entry.method} {path}" {entry.status} {entry.bytes_sent} '
            f"class={entry.request_class} pool={entry.pool_name} backend={entry.backend} "
            f"upstream_ms={'-' if upstream is None else upstream} "
            f"total_ms={entry.total_s * 1000:.3f}\n")


class _Clock:
    """Timestamps for log lines, the per-second part formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._rfc3339 = ""
        self._clf = ""

    def _tick(self, second: int) -> None:
        self._second = second
        parts = time.gmtime(second)
        self._rfc3339 = time.strftime("%Y-%m-%dT%H:%M:%S", parts)
        self._clf = (f"{parts.tm_mday:02d}/{_MONTHS[parts.tm_mon - 1]}/{parts.tm_year}:"
                     f"{parts.tm_hour:02d}:{parts.tm_min:02d}:{parts.tm_sec:02d} +0000")

    def rfc3339(self, at: float) -> str:
        """`2026-11-27T15:20:02.123Z` (RFC 3339, UTC, milliseconds)."""
        second = int(at)
        if second != self._second:
            self._tick(second)
        return f"{self._rfc3339}.{int((at - second) * 1000):03d}Z"

    def clf(self, at: float) -> str:
        """`27/Nov/2026:15:20:02 +0000` (the common log format's time, UTC)."""
        second = int(at)
        if second != self._second:
            self._tick(second)
        return self._clf


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_CLOCK = _Clock()
# inside "...": quotes, backslashes and control characters as \xHH (as nginx escapes them)
_QUOTED = {c: f"\\x{c:02X}" for c in (*range(0x20), 0x22, 0x5C, 0x7F)}


def _combined(entry: RequestContext) -> str:
    """nginx's and Apache's `combined` format, then key=value fields log tools ignore."""
    upstream = _upstream_ms(entry)
    target = entry.path.translate(_UNSAFE)
    return (f"{entry.client} - - [{_CLOCK.clf(entry.wall_started)}] "
            f'"{entry.method.translate(_UNSAFE)} {target} {entry.protocol}" '
            f"{entry.status} {entry.bytes_sent} "
            f'"{entry.referer.translate(_QUOTED) or "-"}" '
            f'"{entry.user_agent.translate(_QUOTED) or "-"}" '
            f'host="{entry.host.translate(_QUOTED)}" '
            f"duration_ms={entry.total_s * 1000:.3f} "
            f"upstream_ms={'-' if upstream is None else upstream} "
            f"backend={entry.backend} pool={entry.pool_name} class={entry.request_class} "
            f"source={entry.source} request_id={entry.request_id}\n")


def _json(entry: RequestContext) -> str:
    """One JSON object a line; the keys are a contract (log pipelines rely on them)."""
    return json.dumps({
        "time": _CLOCK.rfc3339(entry.wall_started), "client": entry.client, "host": entry.host,
        "method": entry.method, "target": entry.path, "protocol": entry.protocol,
        "status": entry.status, "bytes": entry.bytes_sent,
        "duration_ms": round(entry.total_s * 1000, 3), "upstream_ms": _upstream_ms(entry),
        "backend": entry.backend, "class": entry.request_class, "pool": entry.pool_name,
        "source": entry.source, "request_id": entry.request_id,
        "user_agent": entry.user_agent,
    }, ensure_ascii=False) + "\n"


FORMATTERS: dict[str, Callable[[RequestContext], str]] = {
    "text": _text, "combined": _combined, "json": _json}
