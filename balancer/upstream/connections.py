"""The connections to one backend: bounded, kept alive, reused last-in first-out.

I/O shell (opens TCP or unix connections on its loop). httpcore's seam: `connection.py` is
one connection, this is the set of them (httpcore's pool). Rules this module keeps:
- At most `max_connections` connections carry requests at once (open or connecting);
  `acquire` past it waits for room up to `connect_timeout` (then PoolExhausted: 503), and
  closes an idle connection to make room rather than wait for it to expire.
- At most `max_idle` connections are kept idle, each for `idle_timeout`; `sweep` closes the
  expired ones. Only a connection that read a whole response and may be kept alive
  (`UpstreamConnection.is_reusable`) goes back idle; anything else is closed on `release`.
- A connection that switched protocols (`to_tunnel`) holds no room under max_connections;
  tunnels have their own cap, `max_tunnels`.
- Connecting has a deadline: ConnectTimeout or ConnectFailed, never a hang.
- A retired backend's connections (it left the config) are never kept idle: the requests
  in flight finish, then their connections close.
- A connection tells its `Connections` when it is gone (`on_lost`); they never read a
  connection's private state, nor does a connection read theirs.
"""

import asyncio
from collections.abc import Callable
from typing import Any

from balancer.config.addresses import Address
from balancer.http.errors import ConnectFailed, ConnectTimeout, PoolExhausted
from balancer.upstream.connection import UpstreamConnection
from balancer.upstream.waitqueue import WaitQueue


class Connections:
    """Bounded keep-alive connections to one backend, reused last-in first-out."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        address: Address,
        *,
        max_connections: int,
        max_idle: int,
        idle_timeout: float,
        connect_timeout: float,
        max_tunnels: int = 1024,
    ) -> None:
        self.loop = loop
        self.address = address
        self.max_connections = max_connections
        self.max_tunnels = max_tunnels
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self._idle: list[UpstreamConnection] = []
        self._open: set[UpstreamConnection] = set()
        self._tunnels: set[UpstreamConnection] = set()  # upgraded: no requests, not counted
        self._connecting = 0
        self._room = WaitQueue(loop, timeout_error=PoolExhausted)
        self._closed = False
        self.on_connect: Callable[[float], None] | None = None  # seconds each connect took

    def __repr__(self) -> str:
        return (f"<Connections {self.address} [{len(self._open)} open, "
                f"{len(self._idle)} idle, {len(self._room)} waiting, "
                f"{len(self._tunnels)} tunnels]>")

    @property
    def open_count(self) -> int:
        return len(self._open) + self._connecting

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    @property
    def tunnel_count(self) -> int:
        return len(self._tunnels)

    def buffered_bytes(self) -> int:
        """Bytes waiting in the write buffers of this backend's connections (tunnels too)."""
        return sum(conn.transport.get_write_buffer_size()
                   for conn in (*self._open, *self._tunnels) if conn.transport is not None)

    def has_tunnel_room(self) -> bool:
        return len(self._tunnels) < self.max_tunnels

    def to_tunnel(self, conn: UpstreamConnection) -> None:
        """The connection switched protocols: from now on it is no request in flight and
        holds no room under max_connections (tunnels have their own cap, max_tunnels)."""
        if conn in self._open:
            self._open.discard(conn)
            self._tunnels.add(conn)
            self._room.wake_one()

    @property
    def inflight(self) -> int:
        """Requests on their way to or from this backend (connections not idle)."""
        return len(self._open) + self._connecting - len(self._idle)

    async def acquire(self, *, fresh: bool = False) -> tuple[UpstreamConnection, bool]:
        """A connection and whether it was reused; `fresh` skips idle ones."""
        idle = self._idle
        if not fresh:
            now = self.loop.time()
            while idle:
                conn = idle.pop()
                if conn.is_usable() and now - conn.idle_since < self.idle_timeout:
                    conn.released = False
                    return conn, True
                conn.close()
        deadline = self.loop.time() + self.connect_timeout
        while self.open_count >= self.max_connections:
            if idle:  # make room: its connection_lost wakes us
                idle.pop(0).close()
            await self._room.wait(deadline)
        return await self._connect(), False

    def release(self, conn: UpstreamConnection) -> None:
        """Return a connection after its response: kept when reusable, else closed."""
        conn.released = True
        if conn.is_reusable() and not self._closed and len(self._idle) < self.max_idle:
            conn.idle_since = self.loop.time()
            self._idle.append(conn)
        else:
            conn.close()
        self._room.wake_one()

    def sweep(self) -> int:
        """Close idle connections older than the idle timeout; returns how many."""
        cutoff = self.loop.time() - self.idle_timeout
        expired = [c for c in self._idle if c.idle_since < cutoff or not c.is_usable()]
        if expired:
            self._idle = [c for c in self._idle if c not in expired]
            for conn in expired:
                conn.close()
        return len(expired)

    def retire(self) -> None:
        """The backend left the config: close the idle connections now; those in flight
        finish their request and are closed when released."""
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()
        # requests waiting for room started on the config that had this backend: they get
        # it as connections in flight are released (closed), not a 503

    def close(self) -> None:
        self.retire()
        self._room.fail_all(PoolExhausted("balancer stopping"))
        for conn in [*self._open, *self._tunnels]:
            conn.close()

    async def _connect(self) -> UpstreamConnection:
        self._connecting += 1
        address = self.address
        started = self.loop.time()
        factory: Callable[[], Any] = lambda: UpstreamConnection(  # noqa: E731
            self.loop, address, on_lost=self._forget)
        try:
            async with asyncio.timeout(self.connect_timeout):
                if address.kind == "unix":
                    _, conn = await self.loop.create_unix_connection(factory, address.path)
                else:
                    _, conn = await self.loop.create_connection(factory, address.host, address.port)
        except TimeoutError:
            raise ConnectTimeout(f"backend {address} did not accept within "
                                 f"{self.connect_timeout:g}s") from None
        except OSError as exc:
            raise ConnectFailed(f"backend {address} refused the connection "
                                f"({exc.strerror or exc})") from None
        finally:
            self._connecting -= 1
        assert isinstance(conn, UpstreamConnection)
        if self.on_connect is not None:
            self.on_connect(self.loop.time() - started)
        if conn.is_usable():
            self._open.add(conn)
        return conn

    def _forget(self, conn: UpstreamConnection) -> None:
        """One of these connections is gone (its `on_lost`): make its room free."""
        self._open.discard(conn)
        self._tunnels.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)
        self._room.wake_one()
