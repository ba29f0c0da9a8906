"""What `serve` (one process) and `supervise` (the supervisor) share about their lives:
how they take signals, and how they say they could not start.

Signal handlers only record what arrived (uvicorn's pattern); the main loop takes the
signals in order and does the work: a SIGHUP is a reload, SIGTERM/SIGINT end the loop.
Neither function chooses an exit code: `balancer.cli` does, from `CannotStart` or what
`supervise` returns.
"""

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable

log = logging.getLogger("balancer")

STOP = (signal.SIGTERM, signal.SIGINT)


class CannotStart(Exception):
    """The process could not start serving (an address that cannot be bound, an access log
    that cannot be opened, a worker that would not start); the message says which. Whatever
    had started is stopped again before this is raised."""


class SignalQueue:
    """SIGTERM, SIGINT and SIGHUP recorded in arrival order; SIGUSR1 calls `on_usr1` at once
    (reopening a log waits for nothing). Installing the handlers releases a SIGHUP the CLI
    held back meanwhile: it is then taken as a reload."""

    def __init__(self, on_usr1: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._received: asyncio.Queue[signal.Signals] = asyncio.Queue()
        for sig in (*STOP, signal.SIGHUP):
            self._loop.add_signal_handler(sig, self._received.put_nowait, sig)
        release_sighup()
        self._loop.add_signal_handler(signal.SIGUSR1, on_usr1)

    def put(self, sig: signal.Signals) -> None:
        """As if `sig` had arrived (a changed config file: SIGHUP; an orphan: SIGTERM)."""
        self._received.put_nowait(sig)

    async def until_stop(self, reload: Callable[[], Awaitable[object]]) -> signal.Signals:
        """Reload on each SIGHUP, in turn, until SIGTERM or SIGINT arrives: that one."""
        while (sig := await self._received.get()) == signal.SIGHUP:
            await reload()
        return sig

    def close(self) -> None:
        """Back to the default actions: a signal from now on is not queued."""
        for sig in (*STOP, signal.SIGHUP, signal.SIGUSR1):
            self._loop.remove_signal_handler(sig)


def release_sighup() -> None:
    """Unblock SIGHUP once its handler is installed (the CLI blocks it from the start): one
    that arrived meanwhile is delivered now, as a reload."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})


async def stop_when_orphaned(parent: int, signals: SignalQueue) -> None:
    """A worker's: SIGTERM to itself once its supervisor (`parent`) is gone."""
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    log.error("supervisor (pid %d) is gone", parent)
    signals.put(signal.SIGTERM)
