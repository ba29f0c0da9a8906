"""Deciding where a request goes, pure: no socket, no clock, no randomness of its own.

Time comes in as `now`, randomness as a random source; every decision is returned, never
acted on (the shell in `balancer.proxy` / `balancer.upstream` acts on it).

- `classify`: request facts + rules + learned costs -> class, pool, score, reason.
- `costs`: the per-route cost model learned from backends' reports.
- `load_report`: parsing the `endpoint-load-metrics` header (never raises).
- `weights`, `latency`: per-backend weights and latency estimates from reports and outcomes.
- `selection`: choosing a backend in a pool, one selector per policy.
- `health`: passive ejection, active-check rise/fall, the retry budget.
- `discovery`: DNS answers -> the set of backend addresses.
- `runtime`: the snapshot a request runs on (config + classifier + pools), rebuilt on reload.
"""
