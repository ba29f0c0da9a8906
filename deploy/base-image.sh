#!/bin/sh
# Build a stand-in for python:3.12-slim where no image registry is reachable: a Debian 13
# (trixie, Python 3.13) root file system from Debian packages, imported as an image.
#   sh deploy/base-image.sh [TAG]        (default localhost/echonext-base:trixie)
# Needs root, debootstrap and podman (or ENGINE=docker). Does nothing when TAG exists.
# A user who can pull python:3.12-slim never needs this (see README, Deploying).
set -eu
TAG=${1:-localhost/echonext-base:trixie}
ENGINE=${ENGINE:-podman}
if $ENGINE image inspect "$TAG" >/dev/null 2>&1; then
    echo "base image $TAG exists"
    exit 0
fi
# the mirror apt already uses here (deb822 sources or a classic sources.list)
MIRROR=${MIRROR:-$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | grep -v security | head -n 1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "debootstrap trixie from $MIRROR into $work/root"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    trixie "$work/root" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log"; exit 1; }
# the certificate authorities this host added (a TLS-inspecting egress proxy, say): builds
# from this base reach PyPI the way the host does
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
    cp /usr/local/share/ca-certificates/*.crt "$work/root/usr/local/share/ca-certificates/"
    chroot "$work/root" update-ca-certificates >/dev/null
fi
# what python:3.12-slim does not carry either
rm -rf "$work/root/var/cache/apt/archives"/*.deb "$work/root/var/lib/apt/lists"/* \
    "$work/root/usr/share/doc" "$work/root/usr/share/man" "$work/root/usr/share/info"
tar -C "$work/root" -c . | $ENGINE import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$TAG"
echo "base image $TAG built"
