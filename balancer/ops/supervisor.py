"""`balancer run --workers N`: N worker processes sharing the listeners, one supervisor.

Each worker is a whole balancer (`balancer worker`) bound to the public addresses with
SO_REUSEPORT, so the kernel spreads new connections over them; its admin listener is a
private unix socket in a directory of the supervisor's. The supervisor:
- holds the configured admin listener and answers it for all workers: `/metrics` sums
  counters and histograms over the workers (gauges and process metrics keep a `worker`
  label; what a restarted or silent worker counted is kept, so no sum drops), `/status`
  adds up in-flight and connection counts per backend, `/status/history` merges their
  last 15 minutes, `/` is the same status page;
- passes SIGUSR1 (reopen the access log) on to every worker;
- restarts a worker that exits unexpectedly (with a back-off when it keeps crashing);
- on SIGHUP (or POST /reload) validates the file itself first: a bad file is reported once
  and no worker is signalled; a good one is passed on as SIGHUP, and the supervisor waits
  until every worker serves the new digest;
- on SIGTERM/SIGINT passes SIGTERM on and waits for the workers to drain, then tells
  `balancer.cli` whether every worker exited 0.
The supervisor is an `AdminSource` (balancer.ops.admin): the admin listener is the same app
as a single process's, asking the supervisor for what it shows.
"""

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from balancer.config.addresses import Address
from balancer.config.model import Config
from balancer.config.yamltree import ConfigError
from balancer.ops.admin import build_admin_app
from balancer.ops.aggregate import ExpositionMerge, merge_history, merge_status
from balancer.ops.config_file import load_config
from balancer.ops.filewatch import watch_file
from balancer.ops.lifecycle import CannotStart, SignalQueue
from balancer.ops.listeners import bind, bind_error, describe
from balancer.ops.reloads import ReloadOutcome, Reloads

log = logging.getLogger("balancer.supervisor")

RESTART_BACKOFF = (0.5, 30.0)  # first delay, longest delay, for a worker that keeps crashing
STABLE_AFTER = 10.0            # a worker that ran this long resets its back-off


def shared_listen_problems(config: Config, workers: int) -> list[str]:
    """Listen addresses N processes cannot share with SO_REUSEPORT."""
    problems = []
    for address in config.listen:
        if address.kind == "unix":
            problems.append(f"{config.source}: listen {address}: a unix socket cannot be "
                            f"shared by {workers} workers (use host:port, or --workers 1)")
        elif address.port == 0:
            problems.append(f"{config.source}: listen {address}: port 0 would give each of "
                            f"the {workers} workers a different port; name the port")
    return problems


@dataclass(slots=True)
class Worker:
    index: int
    admin_socket: str
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = RESTART_BACKOFF[0]
    ready: bool = False  # answered /healthz since it was (re)started: its signal handlers are in
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)


class Supervisor:
    """N worker processes sharing the listeners: starts and restarts them, passes reloads and
    SIGUSR1 on, and answers the admin listener for all of them (an `AdminSource`)."""

    def __init__(self, config: Config, config_path: str, workers: int, log_level: str) -> None:
        self.config = config
        self.config_path = config_path
        self.log_level = log_level
        self.generation = 1
        self.reloads = Reloads()
        self.stopping = False
        self._dir = tempfile.mkdtemp(prefix="balancer-workers-")
        self.workers = [Worker(i, os.path.join(self._dir, f"worker-{i}.sock"))
                        for i in range(workers)]
        self._admin: web.AppRunner | None = None
        self._admin_site: web.SockSite | None = None
        self.expositions = ExpositionMerge(workers)  # remembers: summed counters never drop

    # -- workers ---------------------------------------------------------------------------

    async def _spawn(self, worker: Worker) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(worker.admin_socket)
        worker.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "balancer", "worker", "-c", self.config_path,
            "--admin", f"unix:{worker.admin_socket}", "--index", str(worker.index),
            "--log-level", self.log_level,
        )
        worker.started_at = time.monotonic()
        worker.ready = False
        worker.watcher = asyncio.get_running_loop().create_task(self._watch(worker))
        log.info("worker %d started (pid %d)", worker.index, worker.process.pid)

    async def _watch(self, worker: Worker) -> None:
        assert worker.process is not None
        code = await worker.process.wait()
        if self.stopping:
            return
        ran = time.monotonic() - worker.started_at
        worker.backoff = (RESTART_BACKOFF[0] if ran > STABLE_AFTER
                          else min(worker.backoff * 2, RESTART_BACKOFF[1]))
        delay = RESTART_BACKOFF[0] if ran > STABLE_AFTER else worker.backoff
        log.error("worker %d (pid %d) exited with %s after %.1fs; restarting in %.1fs",
                  worker.index, worker.process.pid, _exit_text(code), ran, delay)
        await asyncio.sleep(delay)
        if not self.stopping:
            worker.restarts += 1
            await self._spawn(worker)
            with contextlib.suppress(RuntimeError):  # it exited again: its watcher says so
                await self._wait_ready(worker)

    async def _wait_ready(self, worker: Worker, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self._worker_get(worker, "/healthz") is not None:
                worker.ready = True
                return
            assert worker.process is not None
            if worker.process.returncode is not None:
                raise RuntimeError(f"worker {worker.index} exited "
                                   f"{_exit_text(worker.process.returncode)} while starting")
            await asyncio.sleep(0.05)
        raise RuntimeError(f"worker {worker.index} not ready after {timeout}s")

    async def _worker_get(self, worker: Worker, path: str) -> str | None:
        """A worker's private admin answer, or None when it does not answer (yet)."""
        connector = aiohttp.UnixConnector(path=worker.admin_socket)
        try:
            async with (aiohttp.ClientSession(connector=connector) as client,
                        client.get(f"http://worker{path}",
                                   timeout=aiohttp.ClientTimeout(total=5)) as resp):
                return await resp.text() if resp.status == 200 else None
        except (TimeoutError, aiohttp.ClientError, OSError):
            return None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        # the workers bind the public addresses with SO_REUSEPORT, which would silently share
        # them with another instance: first make sure each is free (and the admin one)
        for address in (*self.config.listen, *filter(None, [self.config.admin])):
            try:
                bind(address).close()
            except (OSError, UnicodeError) as exc:
                raise RuntimeError(f"cannot listen on {address}: {bind_error(exc)}") from None
        for worker in self.workers:
            await self._spawn(worker)
        await asyncio.gather(*(self._wait_ready(w) for w in self.workers))
        if self.config.admin is not None:
            self._admin = web.AppRunner(build_admin_app(self), handle_signals=False,
                                        access_log=None,
                                        shutdown_timeout=1.0)
            await self._admin.setup()
            try:
                await self._listen_admin(self.config.admin)
            except (OSError, UnicodeError) as exc:  # taken since the check above
                raise RuntimeError(f"cannot listen on {self.config.admin}: "
                                   f"{bind_error(exc)}") from None
        log.info("serving with %d workers, config generation %d (%s)", len(self.workers),
                 self.generation, self.config.digest)

    async def _listen_admin(self, address: Address) -> None:
        """Serve the admin API on `address`: the new socket first, then the old one closed."""
        assert self._admin is not None
        sock = bind(address)
        site = web.SockSite(self._admin, sock)
        await site.start()
        log.info("admin listening on %s", describe(sock))
        if self._admin_site is not None:
            await self._admin_site.stop()
        self._admin_site = site

    async def reload(self) -> ReloadOutcome:
        """Validate the file here; only a valid one is passed on to the workers. One reload
        at a time (SIGHUP and POST /reload queue behind each other)."""
        return await self.reloads.run(self._reload)

    async def _reload(self) -> ReloadOutcome:
        try:
            config = load_config(self.config_path)
            problems = shared_listen_problems(config, len(self.workers))
        except ConfigError as exc:
            problems = [str(p) for p in exc.problems]
        except Exception as exc:  # a bug must not end the supervisor (and every worker)
            log.exception("reload failed")
            problems = [f"{self.config_path}: internal error while reloading: "
                        f"{type(exc).__name__}: {exc}"]
        if not problems:
            return await self._pass_on(config)
        for problem in problems:
            log.error("reload refused, no worker signalled, keeping generation %d: %s",
                      self.generation, problem)
        return ReloadOutcome(False, self.generation, self.config.digest, tuple(problems))

    async def _pass_on(self, config: Config) -> ReloadOutcome:
        """A valid config: SIGHUP to the workers, wait until they all serve it, then move
        the admin listener if its address changed."""
        await self._signal_workers()
        errors = await self._await_digest(config.digest)
        if not errors:
            if config.admin != self.config.admin and config.admin is not None \
                    and self._admin is not None:
                try:
                    await self._listen_admin(config.admin)
                except (OSError, UnicodeError) as exc:
                    errors.append(f"cannot listen on {config.admin} (admin): "
                                  f"{bind_error(exc)}")
            self.generation += 1
            self.config = config
        log.log(logging.ERROR if errors else logging.INFO,
                "reload passed to %d workers: generation %d (%s)%s", len(self.workers),
                self.generation, config.digest, "; " + "; ".join(errors) if errors else "")
        return ReloadOutcome(not errors, self.generation, config.digest, tuple(errors))

    async def _signal_workers(self) -> None:
        """SIGHUP to every running worker, each once it is ready: one still starting (its
        interpreter not yet up) would die of it."""
        async def signal_when_ready(worker: Worker) -> None:
            process = worker.process
            if process is None or process.returncode is not None:
                return  # exited: its replacement reads the file anew
            if not worker.ready:
                with contextlib.suppress(RuntimeError):
                    await self._wait_ready(worker, timeout=10.0)
            if worker.process is process and process.returncode is None:
                process.send_signal(signal.SIGHUP)
        await asyncio.gather(*(signal_when_ready(w) for w in self.workers))

    async def _await_digest(self, digest: str, timeout: float = 10.0) -> list[str]:
        """Wait until every worker serves `digest`; what is still wrong after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            documents = await self.worker_status()
            behind = [f"worker {w.index} serves {d['digest'] if d else 'nothing (down)'}"
                      for w, d in zip(self.workers, documents, strict=True)
                      if d is None or d["digest"] != digest]
            if not behind or time.monotonic() > deadline:
                return behind
            await asyncio.sleep(0.02)

    async def worker_status(self) -> list[dict[str, Any] | None]:
        texts = await asyncio.gather(*(self._worker_get(w, "/status") for w in self.workers))
        return [None if text is None else _json(text) for text in texts]

    def forward(self, sig: signal.Signals) -> None:
        """Pass a signal on to every running worker (SIGUSR1: reopen the access log). Not to
        one still starting: it opens the log afresh, and its handler may not be in yet."""
        for worker in self.workers:
            if worker.ready and worker.process is not None and worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(sig)

    async def stop(self) -> bool:
        """SIGTERM to every worker; wait for them to drain; whether all exited 0."""
        self.stopping = True  # from now on /healthz answers 503
        running = [w.process for w in self.workers
                   if w.process is not None and w.process.returncode is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        timeouts = self.config.timeouts
        grace = timeouts.grace + timeouts.drain + 5.0
        try:
            codes = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), grace)
        except TimeoutError:
            log.error("workers still running %.0fs after SIGTERM; killing them", grace)
            for process in running:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            codes = [await p.wait() for p in running]
        for worker in self.workers:
            if worker.watcher is not None:
                worker.watcher.cancel()
        if self._admin is not None:
            await self._admin.cleanup()
        for worker in self.workers:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(worker.admin_socket)
        with contextlib.suppress(OSError):
            os.rmdir(self._dir)
        return all(code == 0 for code in codes)

    # -- what the admin listener shows (AdminSource) ---------------------------------------

    @property
    def draining(self) -> bool:
        """From SIGTERM on."""
        return self.stopping

    def not_ready(self) -> str | None:
        """The admin listener opens only once every worker serves the first config; later,
        not ready while no worker runs."""
        running = any(w.process is not None and w.process.returncode is None
                      for w in self.workers)
        return None if running else "no worker running"

    async def status_document(self) -> dict[str, Any]:
        """The workers' documents merged; the generation and reloads are the supervisor's."""
        documents = await self.worker_status()
        merged = merge_status(documents)
        merged["generation"] = self.generation
        merged["reloads"] = [outcome.as_dict() for outcome in self.reloads]
        merged["workers"] = [
            {"index": w.index, "pid": w.process.pid if w.process else None,
             "running": d is not None, "restarts": w.restarts,
             "digest": d["digest"] if d else None, "generation": d["generation"] if d else None}
            for w, d in zip(self.workers, documents, strict=True)]
        return merged

    async def history_document(self, since: float | None) -> dict[str, Any]:
        path = "/status/history" + (f"?since={since}" if since is not None else "")
        texts = await asyncio.gather(*(self._worker_get(w, path) for w in self.workers))
        return merge_history([None if t is None else _json(t) for t in texts],
                             [outcome.as_dict() for outcome in self.reloads])

    async def exposition(self) -> bytes:
        texts = await asyncio.gather(*(self._worker_get(w, "/metrics") for w in self.workers))
        registry = CollectorRegistry(auto_describe=False)  # one scrape's worth
        registry.register(_MergedMetrics(self, list(texts)))
        return generate_latest(registry)


async def supervise(config: Config, config_path: str, workers: int, log_level: str) -> bool:
    """Run the workers until SIGTERM or SIGINT; reload on SIGHUP. Whether every worker
    exited 0 in the end; raises `CannotStart` when they could not all start (balancer.cli
    turns both into the exit code)."""
    supervisor = Supervisor(config, config_path, workers, log_level)
    signals = SignalQueue(on_usr1=lambda: supervisor.forward(signal.SIGUSR1))
    try:
        await supervisor.start()
    except RuntimeError as exc:
        await supervisor.stop()
        raise CannotStart(str(exc)) from None
    file_watch = asyncio.get_running_loop().create_task(watch_file(
        config_path, lambda: supervisor.config.watch,
        lambda: signals.put(signal.SIGHUP), supervisor.config.digest))
    sig = await signals.until_stop(supervisor.reload)
    log.info("%s: stopping %d workers", sig.name, len(supervisor.workers))
    file_watch.cancel()
    clean = await supervisor.stop()
    log.info("stopped")
    return clean


class _MergedMetrics(Collector):
    """One scrape: the workers' expositions merged (balancer.ops.aggregate), and the workers'
    own."""

    def __init__(self, supervisor: Supervisor, expositions: list[str | None]) -> None:
        self.supervisor = supervisor
        self.expositions = expositions

    def collect(self) -> Iterator[Metric]:
        supervisor = self.supervisor
        yield from supervisor.expositions.merge(self.expositions)
        running = sum(1 for w in supervisor.workers
                      if w.process is not None and w.process.returncode is None)
        yield GaugeMetricFamily("balancer_workers", "Worker processes running", value=running)
        restarts = GaugeMetricFamily("balancer_worker_restarts",
                                     "Times each worker was restarted after exiting",
                                     labels=["worker"])
        for worker in supervisor.workers:
            restarts.add_metric([str(worker.index)], worker.restarts)
        yield restarts


def _json(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _exit_text(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"
