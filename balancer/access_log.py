"""The access log: one line per request, as text or JSON, written in batches.

I/O shell, kept off the hot path: `record` formats one line into a list; the lines are
written (one `write` for the batch) when the batch is large or, at the latest, by `flush`,
which the server calls every `FLUSH_INTERVAL` seconds and at shutdown. A slow disk never
stalls a request; at worst a crash loses the last second of lines.
"""

import json
import sys
from typing import TextIO

from balancer.config import AccessLogConfig

FLUSH_INTERVAL = 1.0
BATCH = 256


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
    def __init__(self, config: AccessLogConfig, stream: TextIO | None = None) -> None:
        self.config = config
        self._owned = stream is None and config.path not in ("-", "stdout")
        if stream is not None:
            self._stream = stream
        elif config.path == "-":
            self._stream = sys.stderr
        elif config.path == "stdout":
            self._stream = sys.stdout
        else:
            self._stream = open(config.path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())
        self._lines: list[str] = []
        self._format = _json if config.format == "json" else _text

    def record(self, entry: Entry) -> None:
        self._lines.append(self._format(entry))
        if len(self._lines) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if self._lines:
            lines, self._lines = self._lines, []
            self._stream.write("".join(lines))
            self._stream.flush()

    def close(self) -> None:
        self.flush()
        if self._owned:
            self._stream.close()


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
