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
- on SIGTERM/SIGINT passes SIGTERM on and waits for the workers to drain, then exits 0.
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
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from balancer.config.addresses import Address
from balancer.config.model import Config
from balancer.config.yamltree import ConfigError
from balancer.ops.admin import Guard, guard_middleware, livez, login, since_param, status_page
from balancer.ops.aggregate import ExpositionMerge, merge_history, merge_status
from balancer.ops.cgroup import worker_count
from balancer.ops.config_file import load_config
from balancer.ops.filewatch import watch_file
from balancer.ops.server import ReloadOutcome, bind, bind_error, describe, release_sighup

log = logging.getLogger("balancer.supervisor")

RESTART_BACKOFF = (0.5, 30.0)  # first delay, longest delay, for a worker that keeps crashing
STABLE_AFTER = 10.0            # a worker that ran this long resets its back-off
SUPERVISOR: web.AppKey["Supervisor"] = web.AppKey("supervisor")


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
    def __init__(self, config: Config, config_path: str, workers: int, log_level: str) -> None:
        self.config = config
        self.config_path = config_path
        self.log_level = log_level
        self.generation = 1
        self.reloads: list[ReloadOutcome] = []
        self.stopping = False
        self._dir = tempfile.mkdtemp(prefix="balancer-workers-")
        self.workers = [Worker(i, os.path.join(self._dir, f"worker-{i}.sock"))
                        for i in range(workers)]
        self._reload_lock = asyncio.Lock()
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
            app = web.Application(middlewares=[
                guard_middleware(lambda request: Guard.of(request.app[SUPERVISOR].config))])
            app[SUPERVISOR] = self
            app.router.add_get("/", status_page)
            app.router.add_post("/login", login)
            app.router.add_get("/healthz", _healthz)
            app.router.add_get("/livez", livez)
            app.router.add_get("/readyz", _readyz)
            app.router.add_get("/status", _status)
            app.router.add_get("/status/history", _history)
            app.router.add_get("/metrics", _metrics)
            app.router.add_post("/reload", _reload)
            self._admin = web.AppRunner(app, handle_signals=False, access_log=None,
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
        async with self._reload_lock:
            return await self._reload()

    async def _reload(self) -> ReloadOutcome:
        started = time.perf_counter()
        try:
            config = load_config(self.config_path)
            problems = shared_listen_problems(config, len(self.workers))
        except ConfigError as exc:
            problems = [str(p) for p in exc.problems]
        except Exception as exc:  # a bug must not end the supervisor (and every worker)
            log.exception("reload failed")
            problems = [f"{self.config_path}: internal error while reloading: "
                        f"{type(exc).__name__}: {exc}"]
        if problems:
            outcome = ReloadOutcome(False, self.generation, self.config.digest, tuple(problems))
            for problem in problems:
                log.error("reload refused, no worker signalled, keeping generation %d: %s",
                          self.generation, problem)
        else:
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
            outcome = ReloadOutcome(not errors, self.generation, config.digest, tuple(errors))
            log.log(logging.ERROR if errors else logging.INFO,
                    "reload passed to %d workers: generation %d (%s)%s", len(self.workers),
                    self.generation, config.digest, "; " + "; ".join(errors) if errors else "")
        outcome = ReloadOutcome(outcome.ok, outcome.generation, outcome.digest, outcome.errors,
                                at=time.time(), seconds=round(time.perf_counter() - started, 6))
        self.reloads.append(outcome)
        del self.reloads[:-20]
        return outcome

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

    async def stop(self) -> int:
        """SIGTERM to every worker; wait for them to drain; 0 when all exited 0."""
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
        return 0 if all(code == 0 for code in codes) else 1


async def supervise(config: Config, config_path: str, workers: int, log_level: str) -> int:
    loop = asyncio.get_running_loop()
    supervisor = Supervisor(config, config_path, workers, log_level)
    received: asyncio.Queue[signal.Signals] = asyncio.Queue()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, received.put_nowait, sig)
    release_sighup()
    loop.add_signal_handler(signal.SIGUSR1, supervisor.forward, signal.SIGUSR1)
    try:
        await supervisor.start()
    except RuntimeError as exc:
        log.error("%s", exc)
        await supervisor.stop()
        return 1
    file_watch = loop.create_task(watch_file(
        config_path, lambda: supervisor.config.watch,
        lambda: received.put_nowait(signal.SIGHUP), supervisor.config.digest))
    while True:
        sig = await received.get()
        if sig == signal.SIGHUP:
            await supervisor.reload()
            continue
        log.info("%s: stopping %d workers", sig.name, len(supervisor.workers))
        break
    file_watch.cancel()
    code = await supervisor.stop()
    log.info("stopped")
    return code


# -- the admin listener ---------------------------------------------------------------------

async def _healthz(request: web.Request) -> web.Response:
    if request.app[SUPERVISOR].stopping:
        return web.Response(status=503, text="draining\n")
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    """503 from SIGTERM on, or while no worker runs (the admin listener opens only once every
    worker serves the first config)."""
    supervisor = request.app[SUPERVISOR]
    if supervisor.stopping:
        return web.Response(status=503, text="draining\n", headers={"Cache-Control": "no-store"})
    if not any(w.process is not None and w.process.returncode is None
               for w in supervisor.workers):
        return web.Response(status=503, text="no worker running\n",
                            headers={"Cache-Control": "no-store"})
    return web.Response(text="ready\n", headers={"Cache-Control": "no-store"})


async def _status(request: web.Request) -> web.Response:
    supervisor = request.app[SUPERVISOR]
    documents = await supervisor.worker_status()
    merged = merge_status(documents)
    merged["generation"] = supervisor.generation
    merged["reloads"] = [
        {"ok": r.ok, "generation": r.generation, "digest": r.digest, "at": r.at,
         "ms": round(r.seconds * 1000, 3), "errors": list(r.errors)}
        for r in supervisor.reloads]
    merged["workers"] = [
        {"index": w.index, "pid": w.process.pid if w.process else None,
         "running": d is not None, "restarts": w.restarts,
         "digest": d["digest"] if d else None, "generation": d["generation"] if d else None}
        for w, d in zip(supervisor.workers, documents, strict=True)]
    return web.json_response(merged)


async def _history(request: web.Request) -> web.Response:
    supervisor = request.app[SUPERVISOR]
    since = request.query.get("since")
    path = "/status/history" + (f"?since={since_param(request)}" if since else "")
    texts = await asyncio.gather(*(supervisor._worker_get(w, path) for w in supervisor.workers))
    reloads = [{"at": r.at, "ok": r.ok, "generation": r.generation} for r in supervisor.reloads]
    merged = merge_history([None if t is None else _json(t) for t in texts], reloads)
    return web.json_response(merged, headers={"Cache-Control": "no-store"})


async def _reload(request: web.Request) -> web.Response:
    outcome = await request.app[SUPERVISOR].reload()
    body = {"ok": outcome.ok, "generation": outcome.generation, "digest": outcome.digest,
            "errors": list(outcome.errors)}
    return web.json_response(body, status=200 if outcome.ok else 422)


async def _metrics(request: web.Request) -> web.Response:
    supervisor = request.app[SUPERVISOR]
    texts = await asyncio.gather(*(supervisor._worker_get(w, "/metrics")
                                   for w in supervisor.workers))
    registry = CollectorRegistry(auto_describe=False)  # one scrape's worth
    registry.register(_MergedMetrics(supervisor, list(texts)))
    body = generate_latest(registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


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


def workers_from_arg(text: str) -> int:
    """`--workers N` or `auto` (the CPUs allowed: the cgroup quota, else the cores)."""
    if text == "auto":
        return worker_count()
    count = int(text)
    if count < 1:
        raise ValueError("at least 1 worker")
    return count

