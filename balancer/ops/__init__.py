"""Running the balancer (I/O): processes, listeners, signals, the admin listener.

- `server`: one balancer process: listeners, reload on SIGHUP, drain on SIGTERM.
- `supervisor`, `aggregate`: worker processes, and their status and metrics merged.
- `admin`: `/metrics`, `/status`, the status page, `/reload`, probes.
- `history`: the status page's 15-minute history.
- `config_file`, `filewatch`: reading the config file, reloading when it changes.
- `cgroup`: the container's CPU quota, for `--workers auto`.
"""
