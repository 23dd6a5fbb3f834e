#!/usr/bin/env bash
# Print the Debian mirror apt on this machine uses (deb822 `URIs:` or one-line `deb` entries):
# the first http(s) URI ending in /debian in APT_DIR's sources (default /etc/apt). Exits 1, saying
# so, when there is none. Usage: components/base/apt-mirror.sh [APT_DIR]
set -euo pipefail
apt_dir=${1:-/etc/apt}
# Only the files that exist: grep exits 2 on a missing one (an unmatched glob, or no
# sources.list), which pipefail would turn into a silent exit of the caller.
shopt -s nullglob
sources=()
for f in "$apt_dir/sources.list" "$apt_dir"/sources.list.d/*.list "$apt_dir"/sources.list.d/*.sources; do
    if [ -f "$f" ]; then sources+=("$f"); fi
done
shopt -u nullglob
mirror=
if [ ${#sources[@]} -gt 0 ]; then
    mirror=$( (grep -hoE '^(URIs:|deb) +https?://[^ ]*/debian/?( |$)' "${sources[@]}" || true) \
        | awk '{print $2; exit}')
fi
if [ -z "$mirror" ]; then
    echo "no Debian mirror in $apt_dir's sources lists; set DEBIAN_MIRROR" >&2
    exit 1
fi
echo "$mirror"
