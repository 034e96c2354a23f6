#!/usr/bin/env bash
# Installs the real components the test suite starts itself (PostgreSQL, nginx, podman) when they are
# missing and we may (root with apt-get). Elsewhere it says what to install: those tests then
# skip locally, and fail in CI (CI=true), so CI can never pass without them.
set -euo pipefail
missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null || missing+=(postgresql)
command -v nginx > /dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v chromium > /dev/null || missing+=(chromium)
command -v chromedriver > /dev/null || missing+=(chromium-driver)
command -v npm > /dev/null || missing+=(nodejs npm)
# the compose test (tests/e2e/test_compose.py): podman with runc (crun fails in this VM's
# cgroups), debootstrap for the stand-in base images
command -v podman > /dev/null || missing+=(podman)
command -v runc > /dev/null || missing+=(runc)
command -v debootstrap > /dev/null || missing+=(debootstrap)
# netavark + aardvark-dns: compose service names (db, api) resolve on the stack's internal
# network; podman 4.3's other backend (CNI + dnsname) gives an internal network no DNS at all
[ -x /usr/lib/podman/netavark ] || missing+=(netavark aardvark-dns)
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
  echo "installing ${missing[*]} (Debian packages) for the tests"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d 101: never start the packaged services (the tests start their own)
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
  rm -f /usr/sbin/policy-rc.d
  configure_podman
else
  echo "note: ${missing[*]} not installed; their tests will be skipped (apt-get install ${missing[*]})"
fi
