#!/usr/bin/env bash
# Stand-ins for the official base images, built from Debian packages, for machines that reach
# no container registry (air-gapped sites do the same with their own mirror):
#
#   localhost/facesvc-standin/debian:bookworm   python 3.11, venv, CA certificates (Debian 12):
#                                               for PYTHON_IMAGE (python:3.11-slim-bookworm)
#   localhost/facesvc-standin/debian:trixie     CA certificates (Debian 13): the base of the next
#   localhost/facesvc-standin/postgres:17-pgvector  PostgreSQL 17 + pgvector 0.8 (Debian 13's
#                                               packages): for POSTGRES_IMAGE (pgvector/pgvector:pg17)
#   localhost/facesvc-standin/nginx:1.22        for NGINX_IMAGE (nginx:1.27-alpine)
#
# Needs root, podman and debootstrap (scripts/system-deps.sh installs them). Idempotent: an
# image that exists is kept (FORCE=1 rebuilds). DEBIAN_MIRROR defaults to the machine's own.
set -euo pipefail
cd "$(dirname "$0")/standins"
PREFIX=localhost/facesvc-standin
BASE="$PREFIX/debian:bookworm"
BASE_TRIXIE="$PREFIX/debian:trixie"
mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
  mirror="$(grep -hoE '^URIs: *\S+/debian$' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | awk '{print $2}' || true)"
  mirror="${mirror:-http://deb.debian.org/debian}"
fi

exists() { [ "${FORCE:-0}" != 1 ] && podman image exists "$1"; }

roots=()
trap 'rm -rf "${roots[@]}"' EXIT
base_image() { # base_image IMAGE RELEASE PACKAGES: a minimal Debian root imported as an image
  local image="$1" release="$2" packages="$3" root
  exists "$image" && return 0
  root="$(mktemp -d)"
  roots+=("$root")
  echo "debootstrap $release from $mirror (about a minute)"
  debootstrap --variant=minbase --include="$packages" "$release" "$root" "$mirror" > /dev/null
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  # apt inside the image uses the same mirror
  echo "deb $mirror $release main" > "$root/etc/apt/sources.list"
  tar -C "$root" -c . | podman import -q - "$image" > /dev/null
  rm -rf "$root"
  echo "built $image"
}
base_image "$BASE" bookworm python3,python3-venv,python-is-python3,ca-certificates
base_image "$BASE_TRIXIE" trixie ca-certificates
build() { # build NAME CONTAINERFILE BASE
  local image="$PREFIX/$1"
  if ! exists "$image"; then
    podman build -q --format docker --build-arg "BASE_IMAGE=$3" -f "$2" -t "$image" . > /dev/null
    echo "built $image"
  fi
}
build postgres:17-pgvector postgres.Containerfile "$BASE_TRIXIE"
build nginx:1.22 nginx.Containerfile "$BASE"
