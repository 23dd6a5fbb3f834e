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
# The mirror apt already uses (deb822 URIs: or one-line deb entries), unless DEBIAN_MIRROR is set.
# Only the files that exist: grep exits 2 on a missing one (an unmatched glob, or no
# sources.list), which pipefail would turn into a silent exit of this script.
shopt -s nullglob
sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    if [ -f "$f" ]; then sources+=("$f"); fi
done
shopt -u nullglob
mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ] && [ ${#sources[@]} -gt 0 ]; then
    mirror=$( (grep -hoE '^(URIs:|deb) +https?://[^ ]*/debian/?( |$)' "${sources[@]}" || true) \
        | awk '{print $2; exit}')
fi
if [ -z "$mirror" ]; then
    echo "no Debian mirror in apt's sources list; set DEBIAN_MIRROR" >&2
    exit 1
fi
rootfs=$(mktemp -d /var/tmp/privfed-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap bookworm from $mirror"
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
    || { tail -n 30 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"
tar -C "$rootfs" -c . | docker import - "$image"
