"""DNS discovery's I/O shell: resolves the config's `discover` names in a background task.

Asks the configured resolvers (`resolvers:`, else the system's /etc/resolv.conf) for A and
AAAA records with dnspython's asyncio resolver, feeds each answer to `discovery.observe`
(pure), logs and counts what it decides, and calls `on_change` with every name's addresses
when a set changed. Resolution never runs on the request path: requests read the Runtime
that `on_change` built.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver

from balancer.balancing.discovery import (
    Answer,
    Discovered,
    Failed,
    NameState,
    Resolved,
    observe,
    wanted_names,
)
from balancer.config.model import Config, DiscoveryConfig
from balancer.metrics import Metrics

log = logging.getLogger("balancer.discovery")



def make_resolver(resolvers: tuple[tuple[str, int], ...]) -> dns.asyncresolver.Resolver:
    """A resolver for the configured servers, or the system's (raises if it has none)."""
    if not resolvers:
        return dns.asyncresolver.Resolver()
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port)
                            for host, port in resolvers]
    return resolver


async def lookup(resolver: dns.asyncresolver.Resolver, name: str, timeout: float) -> Answer:
    """A and AAAA of `name` together; a failure of both, or no record at all, is `Failed`."""
    results = await asyncio.gather(
        *(resolver.resolve(name, kind, search=True, lifetime=timeout, raise_on_no_answer=False)
          for kind in ("A", "AAAA")),
        return_exceptions=True)
    hosts: list[str] = []
    ttls: list[float] = []
    errors: list[str] = []
    for result in results:
        if isinstance(result, dns.resolver.NXDOMAIN):
            errors.append("no such name (NXDOMAIN)")
        elif isinstance(result, dns.exception.Timeout):
            errors.append(f"no answer within {timeout:g}s")
        elif isinstance(result, dns.exception.DNSException):
            errors.append(str(result) or type(result).__name__)
        elif isinstance(result, BaseException):
            raise result
        elif result.rrset is not None:
            hosts.extend(record.address for record in result.rrset)
            ttls.append(result.rrset.ttl)
    if hosts:
        return Resolved(tuple(hosts), min(ttls))
    return Failed(errors[0] if errors else "no A or AAAA record")


class DnsDiscovery:
    """The discovered names of the current config, re-resolved in a background task."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 on_change: Callable[[Discovered], None], metrics: Metrics) -> None:
        self.loop = loop
        self.on_change = on_change
        self.metrics = metrics
        self.settings = DiscoveryConfig()
        self._states: dict[str, NameState] = {}
        self._resolvers: tuple[tuple[str, int], ...] | None = None
        self._resolver: dns.asyncresolver.Resolver | None = None
        self._resolver_error = ""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<DnsDiscovery {len(self._states)} names {self.discovered()}>"

    def configure(self, config: Config) -> None:
        """Follow a config: its names (known ones keep their addresses), resolvers, interval."""
        targets = [(d.name, d.port) for pool in config.pools for d in pool.discover]
        self._states = wanted_names(targets, self._states, self.loop.time())
        self.settings = config.discovery
        if config.resolvers != self._resolvers:
            self._resolvers = config.resolvers
            try:
                self._resolver = make_resolver(config.resolvers)
                self._resolver_error = ""
            except dns.exception.DNSException as exc:  # no /etc/resolv.conf, say
                self._resolver = None
                self._resolver_error = f"no resolver: {exc}"
        self._wake.set()

    def discovered(self) -> Discovered:
        return {key: state.addresses for key, state in self._states.items()
                if state.addresses is not None}

    def states(self) -> list[NameState]:
        return list(self._states.values())

    async def resolve_new(self) -> None:
        """Resolve now the names never resolved yet (at start and after a reload), so the
        first requests find their backends; bounded by the discovery timeout."""
        fresh = [s for s in self._states.values() if s.addresses is None]
        if fresh:
            await self._resolve(fresh, notify=False)

    def start(self) -> None:
        self._task = self.loop.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            now = self.loop.time()
            due = [s for s in self._states.values() if s.next_at <= now]
            if due:
                await self._resolve(due, notify=True)
                continue
            next_at = min((s.next_at for s in self._states.values()), default=now + 3600)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(next_at - now):
                    await self._wake.wait()

    async def _resolve(self, due: list[NameState], notify: bool) -> None:
        settings = self.settings
        answers = await asyncio.gather(*(self._lookup(s.name, settings.timeout) for s in due))
        changed = False
        now = self.loop.time()
        for state, answer in zip(due, answers, strict=True):
            if self._states.get(state.key) is not state:
                continue  # a reload dropped the name (or this is a stale round)
            step = observe(state, answer, now, settings.interval)
            self._states[state.key] = step.state
            if step.failed:
                self.metrics.discovery_failures[state.key] += 1
                kept = step.state.addresses
                log.warning("discovery of %s failed (%s): %s", state.key, step.state.last_error,
                            f"keeping its {len(kept)} addresses" if kept is not None
                            else "never resolved: its pool answers 503 until it does")
            elif step.changed:
                changed = True
                log.info("discovered %s: %d addresses%s%s", state.key,
                         len(step.state.addresses or ()),
                         "".join(f" +{a}" for a in step.added),
                         "".join(f" -{a}" for a in step.removed))
        if changed and notify:
            self.on_change(self.discovered())

    async def _lookup(self, name: str, timeout: float) -> Answer:
        if self._resolver is None:
            return Failed(self._resolver_error or "no resolver")
        try:
            return await lookup(self._resolver, name, timeout)
        except Exception as exc:  # whatever the library raises, discovery goes on
            log.exception("resolving %s", name)
            return Failed(f"{type(exc).__name__}: {exc}")
