#!/bin/sh
# Install Debian packages that are missing: ensure-debs.sh CMD:PKG [CMD:PKG ...]
# Exits 0 when every command is present afterwards, 1 (with a note) when any is not.
missing=""
for pair in "$@"; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo -n"; else
  echo "note: cannot install$missing (not root, no sudo)" >&2; exit 1; fi
echo "installing Debian packages:$missing" >&2
$SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null 2>&1
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -o DPkg::Lock::Timeout=300 -y -qq $missing >/dev/null 2>&1 || {
  echo "note: apt-get could not install$missing" >&2; exit 1; }
