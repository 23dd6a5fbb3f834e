#!/usr/bin/env bash
# Import a minimal Debian bookworm root file system as the image local/debian:bookworm, from the
# Debian mirror apt on this machine uses: for machines where no image registry answers.
# Usage: components/base/debian-rootfs.sh [IMAGE] (needs root, debootstrap and a Docker daemon).
set -euo pipefail
image=${1:-local/debian:bookworm}
if docker image inspect "$image" >/dev/null 2>&1; then
    echo "$image exists; not rebuilt (docker rmi $image to rebuild)"
    exit 0
fi
# The mirror apt already uses, unless DEBIAN_MIRROR is set.
mirror=${DEBIAN_MIRROR:-$("$(dirname "$0")/apt-mirror.sh")}
rootfs=$(mktemp -d /var/tmp/privfed-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap bookworm from $mirror"
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
    || { tail -n 30 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"
tar -C "$rootfs" -c . | docker import - "$image"
