#!/bin/sh
# Podman on a host with hybrid cgroups (v1 controllers, as on these build machines): crun
# refuses ("cgroups in hybrid mode not supported") and setrlimit in a container is refused
# without explicit ulimits. Write a containers.conf that picks runc and default ulimits, once.
# Nothing is done on a host with the unified cgroup v2 hierarchy or an existing config.
set -eu
CONF=${CONTAINERS_CONF_PATH:-/etc/containers/containers.conf}
[ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] && exit 0
[ -e "$CONF" ] && exit 0
command -v runc >/dev/null || { echo "podman-setup: install runc (apt-get install runc)" >&2; exit 1; }
nofile=$(ulimit -Hn)  # podman's default (1048576) is over what this process may set
nproc=4096  # at the host's hard limit (96365 here) runc was refused; lower is allowed
mkdir -p "$(dirname "$CONF")"
cat >"$CONF" <<CONF
# written by echonext-balancer's deploy/podman-setup.sh: hybrid cgroups here
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
CONF
echo "podman-setup: wrote $CONF (runtime runc, default ulimits)"
