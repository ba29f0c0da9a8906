"""Listening sockets: bind one for an address, say what it is bound to, and the record of a
socket being served (`Listener`). Used by the single process and the supervisor alike.

I/O shell. A bind error is turned into words here (`bind_error`); deciding what it means
(refuse a reload, fail the start) is the caller's.
"""

import contextlib
import os
import socket
import stat
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from balancer.config.addresses import Address


def bind(address: Address, *, reuse_port: bool = False) -> socket.socket:
    """A listening, non-blocking socket for a listen address (port 0 picks a free port)."""
    if address.kind == "unix":
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(address.path).st_mode):
                os.unlink(address.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sockaddr: str | tuple[Any, ...] = address.path
    else:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(sockaddr)
    except BaseException:
        sock.close()
        raise
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def describe(sock: socket.socket) -> str:
    """What a socket is bound to, as host:port, [v6]:port or unix:/path."""
    name = sock.getsockname()
    if isinstance(name, str):
        return f"unix:{name}"
    host, port = name[0], name[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_error(exc: OSError | UnicodeError) -> str:
    """Why `bind` failed, in a few words."""
    if isinstance(exc, UnicodeError):  # the IDNA codec refused the host (`.0.0.1`)
        return "not a valid host name"
    return exc.strerror or str(exc)


@dataclass(eq=False, slots=True)
class Listener:
    address: Address  # as configured (port 0 = any)
    admin: bool
    bound: str        # what it is bound to, as host:port or unix:/path
    site: web.SockSite


def find_listener(listeners: list[Listener], address: Address, admin: bool) -> Listener | None:
    """The listener already serving `address` (port 0 matches the port it got)."""
    for listener in listeners:
        if listener.admin != admin:
            continue
        if listener.address == address or listener.bound == address.key:
            return listener
    return None
