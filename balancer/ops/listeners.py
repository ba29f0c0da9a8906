"""Listening sockets: bind one for an address, say what it is bound to (used by the single
process and the supervisor alike), and the set a single process serves on (`ListenerSet`).

I/O shell. A bind error is turned into words here (`bind_error`, `CannotListen`); deciding
what it means (refuse a reload, fail the start) is the caller's.
"""

import contextlib
import logging
import os
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from balancer.config.addresses import Address

log = logging.getLogger("balancer")


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


class CannotListen(Exception):
    """An address that cannot be bound; the message names it and says why."""


class ListenerSet:
    """The sockets one process serves on: public ones (with SO_REUSEPORT when `reuse_port`:
    a supervisor's workers share them) and its admin one (never shared)."""

    def __init__(self, *, reuse_port: bool = False) -> None:
        self.reuse_port = reuse_port
        self.listeners: list[Listener] = []

    def bound(self, *, admin: bool) -> list[str]:
        return [listener.bound for listener in self.listeners if listener.admin == admin]

    def forget(self) -> None:
        """The runners were cleaned up (their sites stopped with them): keep no listener."""
        self.listeners = []

    async def serve_on(self, wanted: list[tuple[Address, bool]],
                       runner: Callable[[bool], web.BaseRunner]) -> None:
        """Serve on exactly `wanted` (address, admin): bind every new socket first (so a bind
        error changes nothing: CannotListen), then start them on `runner(admin)`, then close
        the listeners no longer wanted. Connections accepted by a closed listener carry on
        until they end."""
        kept, fresh = self._bind_new(wanted)
        for address, admin, sock in fresh:
            site = web.SockSite(runner(admin), sock)
            await site.start()
            listener = Listener(address, admin, describe(sock), site)
            kept.append(listener)
            log.info("%slistening on %s", "admin " if listener.admin else "", listener.bound)
        for listener in self.listeners:
            if listener not in kept:
                await listener.site.stop()
                log.info("stopped listening on %s", listener.bound)
        self.listeners = kept

    def _bind_new(self, wanted: list[tuple[Address, bool]]
                  ) -> tuple[list[Listener], list[tuple[Address, bool, socket.socket]]]:
        """(the listeners kept as they are, new sockets bound for the other addresses)"""
        kept: list[Listener] = []
        fresh: list[tuple[Address, bool, socket.socket]] = []
        try:
            for address, admin in wanted:
                existing = find_listener(self.listeners, address, admin)
                if existing is not None:
                    kept.append(existing)
                else:
                    reuse_port = self.reuse_port and not admin  # the admin port: never
                    fresh.append((address, admin, bind(address, reuse_port=reuse_port)))
        except (OSError, UnicodeError) as exc:
            for _, _, sock in fresh:
                sock.close()
            raise CannotListen(f"cannot listen on {address}: {bind_error(exc)}") from None
        return kept, fresh
