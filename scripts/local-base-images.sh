#!/usr/bin/env bash
# Stand-ins for the official base images, built from Debian packages, for machines that reach
# no container registry (air-gapped sites do the same with their own mirror):
#
#   localhost/facesvc-standin/debian:bookworm   python 3.11, venv, CA certificates (Debian 12):
#                                               for PYTHON_IMAGE (python:3.11-slim-bookworm)
#   localhost/facesvc-standin/postgres:15       for POSTGRES_IMAGE (postgres:16-alpine)
#   localhost/facesvc-standin/nginx:1.22        for NGINX_IMAGE (nginx:1.27-alpine)
#
# Needs root, podman and debootstrap (scripts/system-deps.sh installs them). Idempotent: an
# image that exists is kept (FORCE=1 rebuilds). DEBIAN_MIRROR defaults to the machine's own.
set -euo pipefail
cd "$(dirname "$0")/standins"
PREFIX=localhost/facesvc-standin
BASE="$PREFIX/debian:bookworm"
mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
  mirror="$(grep -hoE '^URIs: *\S+/debian$' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | awk '{print $2}')"
  mirror="${mirror:-http://deb.debian.org/debian}"
fi

exists() { [ "${FORCE:-0}" != 1 ] && podman image exists "$1"; }

if ! exists "$BASE"; then
  root="$(mktemp -d)"
  trap 'rm -rf "$root"' EXIT
  echo "debootstrap bookworm from $mirror (about a minute)"
  debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$root" "$mirror" > /dev/null
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  # apt inside the image uses the same mirror
  echo "deb $mirror bookworm main" > "$root/etc/apt/sources.list"
  tar -C "$root" -c . | podman import -q - "$BASE" > /dev/null
  echo "built $BASE"
fi
for name in postgres:15 nginx:1.22; do
  image="$PREFIX/$name"
  if ! exists "$image"; then
    podman build -q --format docker --build-arg "BASE_IMAGE=$BASE" \
      -f "${name%%:*}.Containerfile" -t "$image" . > /dev/null
    echo "built $image"
  fi
done
