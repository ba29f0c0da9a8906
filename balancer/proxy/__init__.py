"""The client side of the data path (I/O): from the client's bytes to the response it gets.

- `client`: the client connection (one message parsed at a time, head timer, parse errors).
- `handler`: a request's steps, from the head to the log line; `context`: the
  `RequestContext` those steps share (the request's snapshot, where it went, its timings).
- `exchange`: one exchange with a backend (send the body, read the head, relay the
  response) and the retry and replay rules.
- `replies`: the responses the balancer writes itself (errors, refusals).
- `tunnel`: WebSocket upgrades, byte for byte.
- `access_log`: one line per request.

Imports `balancer.upstream` for backends, never `balancer.ops`.
"""
