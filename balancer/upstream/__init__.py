"""The backend side of the data path (I/O): connections to backends and what is known of them.

- `connection`: one HTTP/1.1 connection to a backend (send a request, read one response,
  nothing after it).
- `connections`: the connections to one backend (bounded, kept alive, reused; what httpcore
  calls a connection pool: "pool" here is only ever a group of backends).
- `backends`: the table of backends by address: their connections, stats, health.
- `health_events`: the one place that acts on a health transition (count, log, slow start).
- `waitqueue`: requests waiting for a free backend, with deadlines.
- `monitor`: the health loops: active checks and the end of ejections.
- `dns`: the DNS discovery task.

Never imports `balancer.ops` or `balancer.proxy`.
"""
