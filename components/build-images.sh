#!/usr/bin/env bash
# `make images`: build the CPU image (and with GPU=1 the CUDA image), tagged by git commit.
#
# Chooses, unless given:
#   BASE_IMAGE        python:3.11-slim when a registry answers, else local/python:3.11-bookworm
#                     built from the Debian mirror apt uses (components/base/).
#   TORCH_FIND_LINKS  this machine's pip find-links folder holding the locked torch wheel, served
#                     on 127.0.0.1 for the build only; else PyTorch's wheel page.
#   BUILD_CA_FILES    extra CA certificates for pip behind a TLS-inspecting proxy (default: the
#                     PEM files in /usr/local/share/ca-certificates); only the build stage sees
#                     them, never the final image.
# Docker runs on the host network only (`--network host`): no bridge, nothing but 127.0.0.1 and
# the proxy the host uses.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=${IMAGE_REPO:-privfed/privfed}
tag=${IMAGE_TAG:-$(git describe --always --dirty --abbrev=7)}
commit=$(git rev-parse HEAD)

if [ -z "${BASE_IMAGE:-}" ]; then
    if docker image inspect python:3.11-slim >/dev/null 2>&1 \
        || timeout 60 docker pull -q python:3.11-slim >/dev/null 2>&1; then
        BASE_IMAGE=python:3.11-slim
    else
        echo "no registry answers: building the base image from a Debian mirror"
        components/base/debian-rootfs.sh local/debian:bookworm
        docker build --network host -q -f components/base/Dockerfile.debian \
            -t local/python:3.11-bookworm components/base
        BASE_IMAGE=local/python:3.11-bookworm
    fi
fi

server_pid=
cleanup() { if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi; }
trap cleanup EXIT
if [ -z "${TORCH_FIND_LINKS:-}" ]; then
    links=$(pip config get global.find-links 2>/dev/null || true)
    if [ -n "$links" ] && ls "$links"/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then
        # a fixed port: the URL is part of the build cache key of the torch layer
        port=${WHEEL_PORT:-38111}
        python3 -m http.server "$port" --bind 127.0.0.1 --directory "$links" >/dev/null 2>&1 &
        server_pid=$!
        TORCH_FIND_LINKS=http://127.0.0.1:$port/
        for _ in $(seq 50); do
            python3 -c "import urllib.request as u; u.urlopen('$TORCH_FIND_LINKS', timeout=1)" \
                2>/dev/null && break
            kill -0 "$server_pid" 2>/dev/null \
                || { echo "cannot serve $links on 127.0.0.1:$port (WHEEL_PORT)" >&2; exit 1; }
            sleep 0.1
        done
    else
        TORCH_FIND_LINKS=https://download.pytorch.org/whl/torch/
    fi
fi

ca_pem=
shopt -s nullglob
for f in ${BUILD_CA_FILES:-/usr/local/share/ca-certificates/*.crt}; do ca_pem+=$(cat "$f")$'\n'; done
shopt -u nullglob

build() {  # Dockerfile, tag, extra args...
    local file=$1 image=$2
    shift 2
    echo "building $image from $file (base $BASE_IMAGE)"
    local t0=$SECONDS
    docker build --network host -f "$file" \
        --build-arg BASE_IMAGE="$BASE_IMAGE" \
        --build-arg BUILD_CA_PEM="$ca_pem" \
        --build-arg GIT_COMMIT="$commit" \
        "$@" -t "$image" .
    echo "built $image in $((SECONDS - t0)) s: $(docker image inspect -f '{{.Size}}' "$image" \
        | awk '{printf "%.2f GB", $1/1e9}')"
}

build components/Dockerfile "$repo:$tag" --build-arg TORCH_FIND_LINKS="$TORCH_FIND_LINKS"
if [ "${GPU:-0}" = 1 ]; then
    build components/Dockerfile.gpu "$repo:$tag-cuda" \
        ${TORCH_SPEC_GPU:+--build-arg TORCH_SPEC="$TORCH_SPEC_GPU"}
else
    echo "GPU image skipped (GPU=1 builds it: several GB more disk for the CUDA libraries)"
fi
echo "PRIVFED_IMAGE=$repo:$tag"
