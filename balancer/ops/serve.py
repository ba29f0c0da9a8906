"""One balancer process's life: start the `Balancer`, reload on SIGHUP (and when the config
file changes), keep serving through the grace period after the first SIGTERM/SIGINT, drain,
stop. Reads like a script; the signals come through `balancer.ops.lifecycle.SignalQueue`.
"""

import asyncio
import contextlib
import gc
import logging
import os
import signal

from balancer.config.addresses import Address
from balancer.config.model import Config
from balancer.ops.filewatch import watch_file
from balancer.ops.lifecycle import CannotStart, SignalQueue, stop_when_orphaned
from balancer.ops.server import ApplyError, Balancer

log = logging.getLogger("balancer")


async def serve(config: Config, config_path: str | None, *, admin: Address | None = None,
                worker: int | None = None) -> None:
    """Run until SIGTERM or SIGINT; reload on SIGHUP. Raises `CannotStart` when the config
    cannot be put in place (balancer.cli turns that into the exit code).

    As a worker of a supervisor (`worker` is its index), the admin listener is the private
    `admin` socket, and the worker drains and exits if the supervisor goes away.
    """
    balancer = Balancer(config, config_path, admin=admin, reuse_port=worker is not None)
    await _start(balancer)
    signals = SignalQueue(on_usr1=balancer.reopen_access_log)
    watcher = _watch(balancer, signals, worker)
    # Everything made so far (modules, the runtime, the app) lives as long as the process:
    # out of the collector's sight, full collections stop walking it (it cut the slowest
    # reload builds; `make bench-reload` measures reload latency)
    gc.freeze()
    log.info("serving config generation %d (%s)", balancer.runtime.generation,
             balancer.runtime.config.digest)
    sig = await _grace_period(balancer, signals, await signals.until_stop(balancer.reload))
    log.info("%s: draining (up to %gs)", sig.name, balancer.runtime.config.timeouts.drain)
    signals.close()
    if watcher is not None:
        watcher.cancel()
    await balancer.stop()
    log.info("stopped")


async def _start(balancer: Balancer) -> None:
    try:
        await balancer.start()
    except ApplyError as exc:
        await balancer.stop()
        raise CannotStart(f"{balancer.runtime.config.source}: {exc}") from None


def _watch(balancer: Balancer, signals: SignalQueue,
           worker: int | None) -> "asyncio.Task[None] | None":
    """A worker watches for its supervisor's end; a single process with a config file
    watches the file (a supervisor watches it for its workers)."""
    loop = asyncio.get_running_loop()
    if worker is not None:
        return loop.create_task(stop_when_orphaned(os.getppid(), signals))
    if balancer.config_path is None:
        return None
    return loop.create_task(watch_file(
        balancer.config_path, lambda: balancer.runtime.config.watch,
        lambda: signals.put(signal.SIGHUP), balancer.runtime.config.digest))


async def _grace_period(balancer: Balancer, signals: SignalQueue,
                        sig: signal.Signals) -> signal.Signals:
    """After the first SIGTERM/SIGINT: keep serving for `timeouts.grace` (still reloading on
    SIGHUP), or until a second stop signal; the signal that ends it."""
    grace = balancer.runtime.config.timeouts.grace
    if grace <= 0 or balancer.draining:
        return sig
    balancer.draining = True
    log.info("%s: grace period of %gs: still serving, /healthz answers 503, every "
             "response closes its connection (signal again to skip)", sig.name, grace)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(grace):
            sig = await signals.until_stop(balancer.reload)
    return sig
