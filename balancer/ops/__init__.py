"""Running the balancer (I/O): processes, listeners, signals, the admin listener.

- `server`: one balancer process's `Balancer` (listeners, proxy, admin, reloads); `serve`:
  its life (start, reload on SIGHUP or a changed file, grace period, drain on SIGTERM).
- `supervisor`, `aggregate`: worker processes, and their status and metrics merged.
- `lifecycle`: what both share about signals (`SignalQueue`) and a failed start
  (`CannotStart`); `listeners`: binding sockets, the set one process serves on;
  `reloads`: a reload's outcome, one reload at a time, the last 20 kept.
- `admin`: one admin app for either process (an `AdminSource`): `/metrics`, `/status`, the
  status page, `/reload`, probes; `status`: the single process's `/status` document.
- `history`: the status page's 15-minute history.
- `config_file`, `filewatch`: reading the config file, reloading when it changes.
- `cgroup`: the container's CPU quota, for `--workers auto`.

Nothing here chooses an exit code: `balancer.cli` does.
"""
