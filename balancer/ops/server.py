"""The single process's `Balancer`: listeners, proxy, admin listener, backends, reloads.

Its life (start, reload on SIGHUP, drain on SIGTERM/SIGINT) is `balancer.ops.serve`. A reload
builds a whole new Runtime and swaps one reference; a config that fails to load leaves the old
one serving. The Balancer is an `AdminSource`: the admin listener (balancer.ops.admin) asks it
for what it shows.
"""

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from balancer.balancing.costs import CostModel
from balancer.balancing.discovery import Discovered
from balancer.balancing.runtime import Runtime
from balancer.config.addresses import Address
from balancer.config.model import Config
from balancer.config.routing import RoutingConfig
from balancer.config.yamltree import ConfigError
from balancer.metrics import Metrics, MetricsCollector, build_registry
from balancer.ops.admin import build_admin_app
from balancer.ops.config_file import load_config
from balancer.ops.history import INTERVAL, History, take_snapshot
from balancer.ops.listeners import CannotListen, ListenerSet
from balancer.ops.reloads import ReloadOutcome, Reloads
from balancer.ops.status import status_document
from balancer.proxy.access_log import FLUSH_INTERVAL, AccessLog
from balancer.proxy.client import ProxyServer
from balancer.proxy.handler import Proxy
from balancer.upstream.backends import BackendTable
from balancer.upstream.dns import DnsDiscovery
from balancer.upstream.monitor import HealthMonitor

log = logging.getLogger("balancer")


def _cost_model(config: Config) -> CostModel:
    routing = config.routing or RoutingConfig()
    return CostModel(routing.learning, cpu_threshold_ms=routing.cpu_threshold_ms,
                     io_threshold=routing.io_threshold)


class Balancer:
    """The running balancer: listeners, the proxy, the admin listener, the backend table.
    An `AdminSource` (balancer.ops.admin) for its own admin listener."""

    def __init__(self, config: Config, config_path: str | None = None, *,
                 reuse_port: bool = False, admin: Address | None = None) -> None:
        self.config_path = config_path
        self.rng = random.Random()
        self.runtime = Runtime(config, generation=1, rng=self.rng)
        self.costs = _cost_model(config)
        self.metrics = Metrics()
        self.registry: CollectorRegistry | None = None  # start() builds it
        self.clock: Callable[[], float] = time.monotonic  # start(): the running loop's time
        self.history = History()
        self.admin_override = admin  # a worker's private admin socket, whatever the config says
        self.reloads = Reloads()
        # SO_REUSEPORT on the public listeners: only for a supervisor's workers, which share
        # them; a single process must not share its ports with a second instance unawares
        self._listeners = ListenerSet(reuse_port=reuse_port)
        self._public: web.ServerRunner | None = None
        self._server: ProxyServer | None = None
        self._admin: web.AppRunner | None = None
        self._access_log: AccessLog | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._sampler: asyncio.Task[None] | None = None
        self._backend_table: BackendTable | None = None
        self._monitor: HealthMonitor | None = None
        self._proxy: Proxy | None = None
        self.discovery: DnsDiscovery | None = None

    def __repr__(self) -> str:
        return f"<Balancer {self.public_addresses} {self.runtime!r}>"

    @property
    def proxy(self) -> Proxy | None:
        return self._proxy

    @property
    def backend_table(self) -> BackendTable:
        assert self._backend_table is not None, "start() first"
        return self._backend_table

    @property
    def config(self) -> Config:
        """The config in force."""
        return self.runtime.config

    async def start(self) -> None:
        """Backends, discovery, the access log and the proxy; then the public and admin
        listeners. Raises ApplyError (a log or an address it cannot open): stop() then."""
        await self._start_data_path(self.runtime.config)
        await self._start_servers(self.runtime.config)

    async def _start_data_path(self, config: Config) -> None:
        loop = asyncio.get_running_loop()
        self.clock = loop.time  # one clock for every part: the loop's (its timers use it)
        self._backend_table = BackendTable(
            loop, self.metrics,
            on_connect=lambda address, seconds: self.metrics.connect_latency[
                address.key].observe(seconds))
        self._backend_table.start()
        self.discovery = DnsDiscovery(loop, self._rediscovered, self.metrics)
        self.discovery.configure(config)
        await self.discovery.resolve_new()
        self.runtime = self.runtime.rediscovered(self.discovery.discovered())
        self.discovery.start()
        self._access_log = _open_access_log(config)  # may raise ApplyError
        self._proxy = Proxy(self.runtime, self._backend_table, self.costs, self.metrics,
                            self._access_log, clock=self.clock)
        self._monitor = HealthMonitor(lambda: self.runtime, self._backend_table)
        self._monitor.start()
        self.registry = build_registry(MetricsCollector(
            self.metrics, runtime=lambda: self.runtime, backends=self._backend_table,
            clock=self.clock, retry_budget=self._proxy.retry_budget,
            discovered=self.discovery.states, costs=self.costs))
        self._flusher = loop.create_task(self._flush_access_log())
        self._sampler = loop.create_task(self._sample_history())

    async def _start_servers(self, config: Config) -> None:
        assert self._proxy is not None
        server = self._server = ProxyServer(
            self._proxy.handle, config,
            on_bad_request=self.metrics.bad_request,
            on_refused=self.metrics.refused_connection,
            new_request_id=self._proxy.ids.new,
            handler_cancellation=True,
            access_log=None,
            auto_decompress=False,
        )
        self._public = web.ServerRunner(server, handle_signals=False,
                                        shutdown_timeout=_aiohttp_timeout(config.timeouts.drain))
        await self._public.setup()
        # a worker's private admin socket (in the supervisor's 0700 directory) needs no token
        app = build_admin_app(self, check_token=self.admin_override is None)
        self._admin = web.AppRunner(app, handle_signals=False, access_log=None,
                                    shutdown_timeout=1.0)
        await self._admin.setup()
        await self._listen(config)

    async def _listen(self, config: Config) -> None:
        """Serve on exactly the config's addresses (ListenerSet.serve_on); ApplyError when
        one cannot be bound, and then nothing changed."""
        assert self._public is not None and self._admin is not None
        public, admin = self._public, self._admin
        wanted: list[tuple[Address, bool]] = [(address, False) for address in config.listen]
        admin_address = self.admin_override or config.admin
        if admin_address is not None:
            wanted.append((admin_address, True))
        try:
            await self._listeners.serve_on(wanted, lambda is_admin: admin if is_admin else public)
        except CannotListen as exc:
            raise ApplyError(str(exc)) from None

    @property
    def draining(self) -> bool:
        """In SIGTERM's grace period: /healthz answers 503, every response closes."""
        return self._proxy is not None and self._proxy.draining

    @draining.setter
    def draining(self, value: bool) -> None:
        if self._proxy is not None:
            self._proxy.draining = value

    @property
    def public_addresses(self) -> list[str]:
        return self._listeners.bound(admin=False)

    @property
    def client_connections(self) -> int:
        """Client connections open on the public listeners."""
        server = self._public.server if self._public is not None else None
        return len(server.connections) if server is not None else 0

    def buffered_bytes(self) -> tuple[int, int]:
        """Bytes waiting in write buffers: (towards clients, towards backends). What flow
        control bounds: a side that does not read must not make the balancer hold more."""
        server = self._public.server if self._public is not None else None
        to_clients = sum(h.transport.get_write_buffer_size() for h in server.connections
                         if h.transport is not None) if server is not None else 0
        to_backends = sum(conns.buffered_bytes()
                          for conns in self.backend_table.connections().values())
        return to_clients, to_backends

    @property
    def admin_address(self) -> str | None:
        return next(iter(self._listeners.bound(admin=True)), None)

    # -- what the admin listener shows (AdminSource) ---------------------------------------

    def not_ready(self) -> str | None:
        return None if self.public_addresses else "starting"

    async def status_document(self) -> dict[str, Any]:
        return status_document(
            self.runtime, self.backend_table, self.costs, now=self.clock(),
            listen=self.public_addresses, client_connections=self.client_connections,
            discovery=self.discovery.states() if self.discovery else [], reloads=self.reloads)

    async def history_document(self, since: float | None) -> dict[str, Any]:
        return self.history.document(since)

    async def exposition(self) -> bytes:
        assert self.registry is not None, "start() first"
        return generate_latest(self.registry)

    async def _flush_access_log(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            if self._access_log is not None:
                self._access_log.flush()

    async def _sample_history(self) -> None:
        while True:
            self.history.add(take_snapshot(
                time.time(), self.metrics, self.runtime, self.backend_table,
                self.clock(), self._proxy.queues if self._proxy else {},
                self.costs, self.reloads))
            await asyncio.sleep(INTERVAL)

    def reopen_access_log(self) -> None:
        """SIGUSR1 (logrotate's postrotate): write to a fresh file at the configured path."""
        if self._access_log is not None:
            try:
                self._access_log.reopen()
            except OSError as exc:
                log.error("cannot reopen the access log %s: %s (still writing to the old "
                          "file)", self._access_log.config.path, exc.strerror or exc)
            else:
                log.info("access log reopened")

    async def reload(self) -> ReloadOutcome:
        """Load, validate and swap in the config file; on any error keep the current one.
        One reload at a time (SIGHUP and POST /reload queue behind each other)."""
        outcome = await self.reloads.run(self._reload)
        self.metrics.reloads["ok" if outcome.ok else "error"] += 1
        if outcome.ok:
            log.info("reloaded config: generation %d (%s) in %.1f ms", outcome.generation,
                     outcome.digest, outcome.seconds * 1000)
        else:
            for error in outcome.errors:
                log.error("reload refused, keeping generation %d: %s", outcome.generation,
                          error)
        return outcome

    async def _reload(self) -> ReloadOutcome:
        current = self.runtime
        if self.config_path is None:
            return ReloadOutcome(False, current.generation, current.config.digest,
                                 ("no config file to reload from",))
        try:
            return await self._swap(load_config(self.config_path))
        except ConfigError as exc:
            errors = tuple(str(p) for p in exc.problems)
        except ApplyError as exc:
            errors = (f"{self.config_path}: {exc}",)
        except Exception as exc:  # a bug must not end the process: refuse, keep serving
            log.exception("reload failed")
            errors = (f"{self.config_path}: internal error while reloading: "
                      f"{type(exc).__name__}: {exc}",)
        return ReloadOutcome(False, current.generation, current.config.digest, errors)

    def _rediscovered(self, discovered: Discovered) -> None:
        """DNS discovery changed a name's addresses: swap in a runtime with them; backends
        that left are retired as a reload retires them (in flight finish, then close)."""
        runtime = self.runtime.rediscovered(discovered)
        self.backend_table.configure(runtime.backend_pools(), runtime.config.timeouts)
        self.runtime = runtime
        if self._proxy is not None:
            self._proxy.runtime = runtime

    async def _swap(self, config: Config) -> ReloadOutcome:
        current = self.runtime
        access_log = self._access_log
        if config.access_log != current.config.access_log:
            access_log = _open_access_log(config)  # before anything changes: may refuse
        try:
            await self._listen(config)
        except ApplyError:
            if access_log is not self._access_log and access_log is not None:
                access_log.close()
            raise
        if self.discovery is not None:
            self.discovery.configure(config)
            await self.discovery.resolve_new()  # names new to this config, bounded by timeout
        discovered = self.discovery.discovered() if self.discovery is not None else {}
        runtime = Runtime(config, generation=self.runtime.generation + 1, rng=self.rng,
                          discovered=discovered)
        if self._server is not None:
            self._server.apply(config)  # limits and client timeouts of new connections
        if self._public is not None:
            # a private attribute of aiohttp's runner (3.10 to 3.14), read by its cleanup(): the
            # drain timeout a reload sets must hold at stop (re-check on an aiohttp upgrade)
            self._public._shutdown_timeout = _aiohttp_timeout(config.timeouts.drain)
        self.backend_table.configure(runtime.backend_pools(), config.timeouts)
        if config.routing is not None:
            self.costs.configure(config.routing.learning,
                                 cpu_threshold_ms=config.routing.cpu_threshold_ms,
                                 io_threshold=config.routing.io_threshold)
        if access_log is not self._access_log:
            if self._access_log is not None:
                self._access_log.close()
            self._access_log = access_log
        self.runtime = runtime
        if self._proxy is not None:
            self._proxy.runtime = runtime
            self._proxy.access_log = self._access_log
        return ReloadOutcome(True, runtime.generation, config.digest)

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to the drain timeout), close."""
        for runner in (self._public, self._admin):
            if runner is not None:
                await runner.cleanup()
        self._listeners.forget()
        for task in (self._flusher, self._sampler):
            if task is not None:
                task.cancel()
        if self._monitor is not None:
            await self._monitor.stop()
        if self.discovery is not None:
            await self.discovery.stop()
        if self._backend_table is not None:
            await self._backend_table.close()
        if self._access_log is not None:
            self._access_log.close()


def _aiohttp_timeout(seconds: float) -> float:
    """aiohttp reads a timeout of 0 as "no limit"; ours means "at once"."""
    return max(seconds, 0.001)


class ApplyError(Exception):
    """A valid config that cannot be put in place here (an address that cannot be bound, an
    access log that cannot be opened): at start the balancer exits, on reload it refuses."""


def _open_access_log(config: Config) -> AccessLog | None:
    if config.access_log is None:
        return None
    try:
        return AccessLog(config.access_log)
    except OSError as exc:
        raise ApplyError(f"cannot open the access log {config.access_log.path}: "
                         f"{exc.strerror or exc}") from None
