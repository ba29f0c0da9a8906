"""Lifecycle: bind the listeners, serve, reload on SIGHUP, drain on SIGTERM/SIGINT.

Reads like a script: `serve()` starts the Balancer, then waits for signals. Signal handlers
only record what arrived; the main loop does the work. A reload builds a whole new Runtime
and swaps one reference; a config that fails to load leaves the old one serving.
"""

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import stat
from dataclasses import dataclass

from aiohttp import web

from balancer.addresses import Address
from balancer.admin import build_admin_app
from balancer.config import Config, load_config
from balancer.connections import Upstreams
from balancer.costs import CostModel
from balancer.metrics import Metrics, build_registry
from balancer.monitor import HealthMonitor
from balancer.proxy import Proxy
from balancer.routing_config import RoutingConfig
from balancer.runtime import Runtime
from balancer.yamltree import ConfigError

log = logging.getLogger("balancer")


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    ok: bool
    generation: int
    digest: str
    errors: tuple[str, ...] = ()


def _cost_model(config: Config) -> CostModel:
    routing = config.routing or RoutingConfig()
    return CostModel(routing.learning, cpu_threshold_ms=routing.cpu_threshold_ms,
                     io_threshold=routing.io_threshold)


def bind(address: Address, *, reuse_port: bool = False) -> socket.socket:
    """A listening, non-blocking socket for a listen address (port 0 picks a free port)."""
    if address.kind == "unix":
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(address.path).st_mode):
                os.unlink(address.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(address.path)
    else:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def describe(sock: socket.socket) -> str:
    name = sock.getsockname()
    if isinstance(name, str):
        return f"unix:{name}"
    host, port = name[0], name[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Balancer:
    """The running balancer: listeners, the proxy, the admin listener, connection pools."""

    def __init__(self, config: Config, config_path: str | None = None) -> None:
        self.config_path = config_path
        self.rng = random.Random()
        self.runtime = Runtime(config, generation=1, rng=self.rng)
        self.costs = _cost_model(config)
        self.metrics = Metrics()
        self.registry = build_registry(self)
        self.public_addresses: list[str] = []
        self.admin_address: str | None = None
        self.reloads: list[ReloadOutcome] = []
        self._runners: list[web.BaseRunner] = []
        self._upstreams: Upstreams | None = None
        self._monitor: HealthMonitor | None = None
        self._proxy: Proxy | None = None

    def __repr__(self) -> str:
        return f"<Balancer {self.public_addresses} {self.runtime!r}>"

    @property
    def proxy(self) -> Proxy | None:
        return self._proxy

    @property
    def upstreams(self) -> Upstreams:
        assert self._upstreams is not None, "start() first"
        return self._upstreams

    async def start(self) -> None:
        config = self.runtime.config
        self._upstreams = Upstreams(
            asyncio.get_running_loop(),
            on_connect=lambda address, seconds: self.metrics.connect_latency[
                address.key].observe(seconds))
        self._upstreams.start()
        self._proxy = Proxy(self.runtime, self._upstreams, self.costs, self.metrics)
        self._monitor = HealthMonitor(lambda: self.runtime, self._upstreams, self.metrics)
        self._monitor.start()
        limits = config.limits
        server = web.Server(
            self._proxy.handle,
            handler_cancellation=True,
            access_log=None,
            auto_decompress=False,
            keepalive_timeout=config.timeouts.client_idle,
            max_line_size=limits.max_uri_size,
            max_field_size=limits.max_header_size,
            max_headers=limits.max_headers,
        )
        public = web.ServerRunner(server, handle_signals=False,
                                  shutdown_timeout=config.timeouts.drain)
        await public.setup()
        self._runners.append(public)
        for address in config.listen:
            sock = bind(address)
            await web.SockSite(public, sock).start()
            self.public_addresses.append(describe(sock))
            log.info("listening on %s", describe(sock))
        if config.admin is not None:
            admin = web.AppRunner(build_admin_app(self), handle_signals=False, access_log=None,
                                  shutdown_timeout=1.0)
            await admin.setup()
            self._runners.append(admin)
            sock = bind(config.admin)
            await web.SockSite(admin, sock).start()
            self.admin_address = describe(sock)
            log.info("admin listening on %s", self.admin_address)

    def reload(self) -> ReloadOutcome:
        """Load, validate and swap in the config file; on any error keep the current one."""
        current = self.runtime
        if self.config_path is None:
            outcome = ReloadOutcome(False, current.generation, current.config.digest,
                                    ("no config file to reload from",))
        else:
            try:
                config = load_config(self.config_path)
            except ConfigError as exc:
                outcome = ReloadOutcome(False, current.generation, current.config.digest,
                                        tuple(str(p) for p in exc.problems))
            else:
                outcome = self._swap(config)
        self.reloads.append(outcome)
        self.metrics.reloads["ok" if outcome.ok else "error"] += 1
        del self.reloads[:-20]
        if outcome.ok:
            log.info("reloaded config: generation %d (%s)", outcome.generation, outcome.digest)
        else:
            for error in outcome.errors:
                log.error("reload refused, keeping generation %d: %s", current.generation, error)
        return outcome

    def _swap(self, config: Config) -> ReloadOutcome:
        current = self.runtime
        if config.listen != current.config.listen or config.admin != current.config.admin:
            log.warning("listen/admin address changes take effect on restart")
        runtime = Runtime(config, generation=current.generation + 1, rng=self.rng)
        self.upstreams.configure(config.pools, config.timeouts)
        if config.routing is not None:
            self.costs.configure(config.routing.learning,
                                 cpu_threshold_ms=config.routing.cpu_threshold_ms,
                                 io_threshold=config.routing.io_threshold)
        self.runtime = runtime
        if self._proxy is not None:
            self._proxy.runtime = runtime
        return ReloadOutcome(True, runtime.generation, config.digest)

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to the drain timeout), close."""
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        if self._monitor is not None:
            await self._monitor.stop()
        if self._upstreams is not None:
            await self._upstreams.close()


async def serve(config: Config, config_path: str | None) -> int:
    """Run until SIGTERM or SIGINT; reload on SIGHUP. Returns the exit code."""
    loop = asyncio.get_running_loop()
    balancer = Balancer(config, config_path)
    await balancer.start()
    received: asyncio.Queue[signal.Signals] = asyncio.Queue()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, received.put_nowait, sig)
    log.info("serving config generation %d (%s)", balancer.runtime.generation,
             balancer.runtime.config.digest)
    while True:
        sig = await received.get()
        if sig == signal.SIGHUP:
            balancer.reload()
            continue
        log.info("%s: draining (up to %gs)", sig.name, balancer.runtime.config.timeouts.drain)
        break
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.remove_signal_handler(sig)
    await balancer.stop()
    log.info("stopped")
    return 0
