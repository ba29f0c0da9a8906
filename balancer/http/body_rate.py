"""How long the proxy waits for the next piece of a streamed request body.

Pure (the caller passes the clock's `now`). A streamed body (over 64 KiB or chunked) goes to
the backend as it arrives, on a connection of its own; a client that trickles it keeps that
connection busy. Two bounds, both answered with 408 and the backend connection closed:
- `timeouts.client_body` between two reads (nginx's client_body_timeout);
- an average rate: by `started + client_body + received / min_body_rate` the client must
  have sent more than `received` bytes (Apache's mod_reqtimeout `body=20,MinRate=500`: the
  allowance grows by one second for every `min_body_rate` bytes received). A steady upload
  at or over the rate never meets it; one byte every (client_body - e) seconds, which the
  first bound alone let through for ever, meets it after about `client_body` seconds.
  `min_body_rate` 0 turns it off.
"""


def body_wait(started: float, received: int, now: float, idle: float,
              min_rate: int) -> tuple[float, bool]:
    """Seconds to wait for the next piece of a body whose first `received` bytes arrived
    since `started`, and whether the rate (not the idle bound) sets that wait (0: it is
    already too slow)."""
    if min_rate <= 0:
        return idle, False
    due = started + idle + received / min_rate - now
    if due < idle:
        return max(due, 0.0), True
    return idle, False
