"""Load reports: what one backend instance tells the balancer about itself.

Every response carries `endpoint-load-metrics` in the ORCA text format that Envoy reads
(`key:value` items; Envoy rejects a report with a key it does not know, so the request's own
cost travels as `named_metrics.cost_<figure>`; `format_report` is the one place that names keys):

    TEXT cpu_utilization:0.42, rps_fractional:118, eps:0, named_metrics.inflight:3,
    named_metrics.queue:0, named_metrics.workers:4, named_metrics.cost_cpu_ms:12.5,
    named_metrics.cost_wall_ms:40.1, named_metrics.cost_io_ms:20.3

Rules:
- Instance-wide, not per worker: counters live in shared memory created before a prefork
  server forks, and utilisation sums the CPU of the whole process tree (psutil), divided by
  the machine's cores (1.0 = every core busy). It is sampled in a background thread, never
  on the request path.
- In-flight counts requests in the app plus those waiting in the server's queue (waitress's
  task queue, or the kernel's accept backlog for a prefork server), because a counter inside
  the app saturates at the worker count while the rest waits unseen.
- Request cost is this request's own CPU time (the thread's CPU clock), its wall time, and
  its I/O time: the part of its wall time spent blocked on something other than CPU. Off-CPU
  time is not I/O: under contention a thread also waits for the GIL (while the process's
  other threads run, or while the thread holding it waits for a core) and for a core (the
  kernel's run-queue wait, /proc/thread-self/schedstat). So io = wall - own CPU - the
  process's other threads' CPU meanwhile - own run-queue wait - the others' (estimated at
  this thread's rate of run-queue wait per CPU second), clamped at 0: a CPU-bound view
  reports little I/O however contended its backend is (it may
  under-count the I/O of a waiting view in a busy process, never over-count it). An `async`
  view on the event loop reports the time it spent suspended on awaits, I/O by construction.
"""

import ctypes
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import psutil

from balancer.ops.cgroup import available_cpus

HEADER = "endpoint-load-metrics"
SAMPLE_INTERVAL = 0.5
# Figures that are fields of Envoy's OrcaLoadReport, by our name; any other load figure is a
# named metric, and a cost figure (cpu_ms, wall_ms, io_ms, ...) is named_metrics.cost_<name>.
ORCA_FIELDS = {"cpu_utilization": "cpu_utilization",
               "application_utilization": "application_utilization",
               "mem_utilization": "mem_utilization", "rps": "rps_fractional", "eps": "eps"}


def report_key(figure: str, *, cost: bool = False) -> str:
    if cost:
        return f"named_metrics.cost_{figure}"
    return ORCA_FIELDS.get(figure) or f"named_metrics.{figure}"


def format_report(load: Mapping[str, float], cost: Mapping[str, float]) -> str:
    """The `endpoint-load-metrics` value: instance load figures, then this request's cost."""
    items = [f"{report_key(name)}:{_number(value)}" for name, value in load.items()]
    items += [f"{report_key(name, cost=True)}:{_number(value)}" for name, value in cost.items()]
    return "TEXT " + ", ".join(items)


def _number(value: float) -> str:
    """Up to 3 decimals, no exponent (Envoy reads it with absl::SimpleAtod; so do we)."""
    return f"{max(value, 0.0):.3f}".rstrip("0").rstrip(".")


SCHEDSTAT = "/proc/thread-self/schedstat"

Clocks = tuple[float, float, float, float]  # wall, thread CPU, process CPU, run-queue wait (s)


def run_queue_wait() -> float:
    """Seconds the calling thread has spent runnable but waiting for a core (0 if unknown)."""
    try:
        with open(SCHEDSTAT, "rb") as fh:
            return int(fh.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def clocks() -> Clocks:
    """The calling thread's clocks, to time a request with `cpu_and_io`."""
    return time.perf_counter(), time.thread_time(), time.process_time(), run_queue_wait()


def cpu_and_io(started: Clocks) -> tuple[float, float, float]:
    """(wall, CPU, I/O) seconds of the calling thread since `started` (see the module doc)."""
    wall = time.perf_counter() - started[0]
    cpu = time.thread_time() - started[1]
    others = max(0.0, time.process_time() - started[2] - cpu)
    queued = max(0.0, run_queue_wait() - started[3])
    # While another thread holds the GIL but waits for a core, this one waits too: the
    # others' run-queue wait is estimated at this thread's own rate of waiting per CPU second.
    others_queued = others * min(queued / cpu, 10.0) if cpu > 0 else 0.0
    return wall, cpu, max(0.0, wall - cpu - others - queued - others_queued)


class Counters:
    """In-flight, completed and failed requests; shared across forks when `shared` is set."""

    def __init__(self, *, shared: bool = False) -> None:
        if shared:
            self._values: Any = multiprocessing.RawArray(ctypes.c_longlong, 3)
            self._lock: Any = multiprocessing.Lock()
        else:
            self._values = [0, 0, 0]
            self._lock = threading.Lock()

    def begin(self) -> int:
        with self._lock:
            self._values[0] += 1
            return int(self._values[0])

    def end(self, failed: bool) -> None:
        with self._lock:
            self._values[0] -= 1
            self._values[1] += 1
            if failed:
                self._values[2] += 1

    def snapshot(self) -> tuple[int, int, int]:
        with self._lock:
            return int(self._values[0]), int(self._values[1]), int(self._values[2])


def accept_backlog(port: int) -> int:
    """Connections waiting in the kernel's accept queue of a listening TCP port (Linux)."""
    total = 0
    hex_port = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                next(fh)
                for line in fh:
                    fields = line.split()
                    if fields[3] == "0A" and fields[1].endswith(hex_port):  # LISTEN
                        total += int(fields[4].split(":")[1], 16)  # rx_queue = backlog
        except OSError:
            continue
    return total


class LoadMeter:
    """Measures requests and formats the load report; one per backend instance."""

    def __init__(
        self,
        counters: Counters,
        *,
        workers: int,
        queue_depth: Callable[[], int] | None = None,
        root_pid: int | None = None,
        cgroup_root: str = "/",
    ) -> None:
        self.counters = counters
        self.workers = workers
        self.queue_depth = queue_depth
        self.root_pid = root_pid or os.getpid()
        self.cpu_utilization = 0.0
        self.rps = 0.0
        self.eps = 0.0
        self._sampler_pid = 0
        self._cores = available_cpus(cgroup_root)  # a container's quota, not the host's

    def begin(self) -> Clocks:
        """Start timing a request (on the thread that will run it)."""
        if self._sampler_pid != os.getpid():
            self._start_sampler()
        self.counters.begin()
        return clocks()

    def end(self, started: Clocks, status: int, cpu_s: float | None = None,
            io_s: float | None = None) -> str:
        """Finish a request; returns its header value. `cpu_s` and `io_s` override what the
        calling thread's clocks say (for a request that ran on another thread, or awaited)."""
        wall_s, thread_cpu_s, thread_io_s = cpu_and_io(started)
        wall_ms = wall_s * 1000
        cpu_ms = (thread_cpu_s if cpu_s is None else cpu_s) * 1000
        io_ms = min(wall_ms, (thread_io_s if io_s is None else io_s) * 1000)
        inflight, _, _ = self.counters.snapshot()
        queue = self._queue()
        value = format_report(
            {"cpu_utilization": self.cpu_utilization, "rps": self.rps, "eps": self.eps,
             "inflight": inflight + queue, "queue": queue, "workers": self.workers},
            {"cpu_ms": cpu_ms, "wall_ms": wall_ms, "io_ms": io_ms})
        self.counters.end(failed=status >= 500)
        return value

    def document(self) -> dict[str, float | int]:
        """The same figures as JSON, for `GET /__load`."""
        if self._sampler_pid != os.getpid():
            self._start_sampler()
        inflight, completed, failed = self.counters.snapshot()
        queue = self._queue()
        return {
            "cpu_utilization": round(self.cpu_utilization, 3),
            "rps_fractional": round(self.rps, 1),
            "eps": round(self.eps, 1),
            "named_metrics.inflight": inflight + queue,
            "named_metrics.queue": queue,
            "named_metrics.workers": self.workers,
            "requests_total": completed,
            "errors_total": failed,
        }

    def _queue(self) -> int:
        if self.queue_depth is None:
            return 0
        try:
            return max(0, int(self.queue_depth()))
        except Exception:  # a queue probe must never fail a request
            return 0

    def _start_sampler(self) -> None:
        self._sampler_pid = os.getpid()
        thread = threading.Thread(target=self._sample_forever, name="load-sampler", daemon=True)
        thread.start()

    def _sample_forever(self) -> None:
        pid = os.getpid()
        known: dict[int, psutil.Process] = {}
        last_cpu = self._tree_cpu(known)
        last_time = time.monotonic()
        _, last_done, last_failed = self.counters.snapshot()
        while self._sampler_pid == pid:
            time.sleep(SAMPLE_INTERVAL)
            now = time.monotonic()
            cpu = self._tree_cpu(known)
            _, done, failed = self.counters.snapshot()
            elapsed = max(now - last_time, 1e-6)
            self.cpu_utilization = max(0.0, (cpu - last_cpu) / elapsed / self._cores)
            self.rps = (done - last_done) / elapsed
            self.eps = (failed - last_failed) / elapsed
            last_cpu, last_time, last_done, last_failed = cpu, now, done, failed

    def _tree_cpu(self, known: dict[int, psutil.Process]) -> float:
        """CPU seconds of the instance's process tree (processes are cached so that the
        CPU of a process is read from the same handle each time)."""
        try:
            root = psutil.Process(self.root_pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0.0
        total = 0.0
        for proc in procs:
            proc = known.setdefault(proc.pid, proc)
            try:
                times = proc.cpu_times()
            except psutil.Error:
                known.pop(proc.pid, None)
                continue
            total += times.user + times.system + times.children_user + times.children_system
        return total
