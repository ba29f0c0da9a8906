"""A fake transport and a loop with a hand-driven clock, for protocol tests without sockets.

uvicorn's pattern (`MockTransport` and `MockLoop` in its tests/protocols/test_http.py): feed a
protocol's `data_received` byte strings, see what it wrote and whether it paused reading, and
fire its timers by moving the clock (`advance`), never by waiting.

Two loops: `FakeLoop` wraps the running loop (its futures, so the protocol's coroutines can be
awaited by the test) and keeps the timers to itself, for a protocol that makes no task
(`UpstreamConnection`); `ManualClockLoop` is a whole event loop whose clock moves only by
`advance`, for one that makes its own tasks on the loop it is given (aiohttp's handler, whose
tasks must await futures of that same loop).
"""

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


class FakeTimer:
    """A timer of `FakeLoop`: fires when `advance` moves the clock past `when`."""

    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]):
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """`time`, `call_later` and `call_at` on a clock that moves only by `advance`; anything
    else (futures, tasks, call_soon) is the running loop's."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.timers: list[FakeTimer] = []
        self._real = asyncio.get_running_loop()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> FakeTimer:
        timer = FakeTimer(when, callback, args)
        self.timers.append(timer)
        return timer

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> FakeTimer:
        return self.call_at(self.now + delay, callback, *args)

    def pending(self) -> list[FakeTimer]:
        return [t for t in self.timers if not t.cancelled]

    def advance(self, seconds: float) -> None:
        """Move the clock and run the timers now due, in order."""
        self.now += seconds
        due = sorted((t for t in self.pending() if t.when <= self.now), key=lambda t: t.when)
        for timer in due:
            self.timers.remove(timer)
            timer.callback(*timer.args)


class ManualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose `time` moves only by `advance`: its timers fire when the clock
    passes them (on the loop's next turn), however long the test really takes."""

    def __init__(self, start: float = 1000.0) -> None:
        super().__init__()
        self.now = start

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def run(self, scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `scenario` to its end on this loop, then close the loop."""
        try:
            self.run_until_complete(scenario())
        finally:
            self.close()


class FakeTransport:
    """Records what the protocol wrote and did to its transport."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closing = False
        self.aborted = False
        self.reading = True
        self.extra: dict[str, Any] = {"peername": ("127.0.0.1", 40000),
                                      "sockname": ("127.0.0.1", 8080)}

    def write(self, data: bytes) -> None:
        self.written += data

    def writelines(self, lines: list[bytes]) -> None:
        for line in lines:
            self.written += line

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True
        self.aborted = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


async def settle() -> None:
    """Let tasks woken by a fed byte or a fired timer run (a few loop turns, no clock)."""
    for _ in range(5):
        await asyncio.sleep(0)



class ConnectedTransport(FakeTransport):
    """A `FakeTransport` that, once closed, reports the connection lost to its protocol on
    the next loop turn, as asyncio does."""

    def __init__(self, protocol: asyncio.BaseProtocol) -> None:
        super().__init__()
        self.protocol = protocol

    def close(self) -> None:
        if not self.closing:
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)
        super().close()

    def abort(self) -> None:
        self.close()
        self.aborted = True


class FakeNetwork(FakeLoop):
    """A `FakeLoop` whose `create_connection` connects at once to a `ConnectedTransport`, or
    raises `refuse`, or never answers while `hang` is set."""

    def __init__(self, start: float = 1000.0) -> None:
        super().__init__(start)
        self.transports: list[ConnectedTransport] = []
        self.refuse: OSError | None = None
        self.hang = False

    async def create_connection(self, factory: Callable[[], asyncio.Protocol], host: str,
                                port: int) -> tuple[ConnectedTransport, asyncio.Protocol]:
        if self.refuse is not None:
            raise self.refuse
        if self.hang:
            await self._real.create_future()
        protocol = factory()
        transport = ConnectedTransport(protocol)
        self.transports.append(transport)
        protocol.connection_made(transport)  # type: ignore[arg-type]
        return transport, protocol
