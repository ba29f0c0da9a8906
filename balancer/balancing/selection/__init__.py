"""Choosing a backend for a request (pure; `now` and a random source are passed in).

- `choose.py`: the choose step, the same for every policy: exclusion (backends a retry has
  tried), health (ejected backends left out, all used when all are: panic), the in-flight
  cap, spilling to `spill_to` pools, and the pick past the cap (`over_cap`).
- `selectors.py`: one selector per `policy` (round_robin, least_request,
  weighted_least_request, least_latency), built once per pool by the Runtime; it reads the
  live backends through a `BackendView`.
- `algorithms.py`: the drawing rules over a plain candidate list (round robin, power of two
  choices, least latency, weighted sampling).
- `pool.py`: a pool's backends, static weights, selector and spill pools.
"""
