"""The access log: one line per request, as text or JSON, written in batches.

I/O shell, kept off the hot path: `record` formats one line into a list; the lines are
written (a few `os.write`s for the batch) when the batch is large or, at the latest, by `flush`,
which the server calls every `FLUSH_INTERVAL` seconds and at shutdown: one system call per
second or per BATCH lines, not one per request; a crash loses at most the last second.
"""

import json
import os
import sys

from balancer.config import AccessLogConfig

FLUSH_INTERVAL = 1.0
BATCH = 256
ATOMIC = 4096  # PIPE_BUF: writes up to this size to a pipe are never interleaved


class Entry:
    """What the proxy learns about one request, filled in as it is handled."""

    __slots__ = ("backend", "bytes_sent", "method", "path", "pool", "request_class",
                 "request_id", "status", "total_s", "upstream_s")

    def __init__(self) -> None:
        self.request_id = "-"
        self.method = "-"
        self.path = "-"
        self.pool = "none"
        self.request_class = "none"
        self.backend = "-"
        self.status = 0
        self.bytes_sent = 0
        self.upstream_s = -1.0
        self.total_s = 0.0


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
            self._fd = os.open(config.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lines: list[str] = []
        self._format = _json if config.format == "json" else _text

    def record(self, entry: Entry) -> None:
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

    def close(self) -> None:
        self.flush()
        if self._owned:
            os.close(self._fd)


def _upstream_ms(entry: Entry) -> float | None:
    return None if entry.upstream_s < 0 else round(entry.upstream_s * 1000, 3)


_UNSAFE = {c: f"%{c:02X}" for c in (*range(0x21), 0x22, 0x7F)}


def _text(entry: Entry) -> str:
    upstream = _upstream_ms(entry)
    path = entry.path.translate(_UNSAFE)
    return (f'{entry.request_id} "{entry.method} {path}" {entry.status} {entry.bytes_sent} '
            f"class={entry.request_class} pool={entry.pool} backend={entry.backend} "
            f"upstream_ms={'-' if upstream is None else upstream} "
            f"total_ms={entry.total_s * 1000:.3f}\n")


def _json(entry: Entry) -> str:
    return json.dumps({
        "request_id": entry.request_id, "method": entry.method, "path": entry.path,
        "class": entry.request_class, "pool": entry.pool, "backend": entry.backend,
        "status": entry.status, "bytes": entry.bytes_sent,
        "upstream_ms": _upstream_ms(entry), "total_ms": round(entry.total_s * 1000, 3),
    }, ensure_ascii=False) + "\n"
