"""The backend side of the data path (I/O): connections to backends and what is known of them.

- `connection`: one HTTP/1.1 connection to a backend (send a request, read one response,
  nothing after it).
- `backends`: the table of backends by address: connection pools, stats, health.
- `waitqueue`: requests waiting for a free backend, with deadlines.
- `monitor`: active health checks.
- `dns`: the DNS discovery task.

Never imports `balancer.ops` or `balancer.proxy`.
"""
