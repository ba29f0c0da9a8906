"""HTTP facts shared by the proxy and the upstream client, pure (sans-IO).

- `headers`: what is forwarded and how it is framed, both ways: hop-by-hop and
  `Connection`-named headers dropped (never framing or the balancer's own), the balancer's
  headers written, Content-Length / Transfer-Encoding decided here and nowhere else.
- `errors`: every failure the proxy can meet, as a typed class with its status, the body's
  wording and whether it counts against the backend.
- `body_rate`: how long to wait for the next piece of a streamed request body (the per-read
  timeout and the minimum average rate).
"""
