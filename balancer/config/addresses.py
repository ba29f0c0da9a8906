"""Listen and backend addresses: `host:port`, `http://host:port`, `unix:/path`.

Pure. Parsers raise ValueError whose message names the accepted forms.
"""

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, slots=True)
class Address:
    """A TCP (host, port) or a unix socket path; `key` identifies a backend across reloads."""

    kind: Literal["tcp", "unix"]
    host: str = ""
    port: int = 0
    path: str = ""
    key: str = field(init=False, compare=False, repr=False)  # made once: used per request

    def __post_init__(self) -> None:
        key = f"unix:{self.path}" if self.kind == "unix" else f"{self.host}:{self.port}"
        object.__setattr__(self, "key", key)

    @property
    def url(self) -> str:
        return f"unix:{self.path}" if self.kind == "unix" else f"http://{self.key}"

    def __str__(self) -> str:
        return self.key


def _host_port(text: str, original: str, expected: str) -> Address:
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"{original!r} is not {expected}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"{original!r}: port {port} is out of range (0-65535)")
    return Address("tcp", host=host, port=port)


def _unix(text: str, original: str, expected: str) -> Address:
    path = text[len("unix:"):]
    if path.startswith("//"):
        path = path[2:]
    if not path.startswith("/"):
        raise ValueError(f"{original!r} is not {expected} (a unix path must be absolute)")
    if not path.isprintable():  # it is named in logs and headers
        raise ValueError(f"{original!r}: a unix path must have no control characters")
    return Address("unix", path=path)


def parse_backend(text: object) -> Address:
    """`http://host:port` or `unix:/path`."""
    expected = "a backend address (expected http://host:port or unix:/path)"
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not {expected}")
    if text.startswith("unix:"):
        return _unix(text, text, expected)
    if text.startswith("http://"):
        rest = text[len("http://"):].rstrip("/")
        if "/" in rest:
            raise ValueError(f"{text!r}: a backend address has no path ({expected})")
        return _host_port(rest, text, expected)
    raise ValueError(f"{text!r} is not {expected}")


def parse_listen(text: object) -> Address:
    """`host:port` (port 0 picks a free one) or `unix:/path`."""
    expected = "a listen address (expected host:port or unix:/path)"
    if isinstance(text, int) and not isinstance(text, bool):
        text = f"0.0.0.0:{text}"
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not {expected}")
    if text.startswith("unix:"):
        return _unix(text, text, expected)
    return _host_port(text, text, expected)
