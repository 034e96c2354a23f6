#!/usr/bin/env bash
# Proves in seconds that podman's container networks work the way the compose stack uses them,
# before anything spends minutes building an image:
#   - a bridge network (the stack's default network: NAT and isolation rules through netavark's
#     firewall tool) and an internal one (the stack's `db` network),
#   - a long-running container on both under a service name (`--network-alias svc`),
#   - a second container on each network that resolves that name (aardvark-dns).
# Fails with one line naming what is missing (e.g. iptables for netavark 1.4 on Debian 12).
#
# usage: check-container-network.sh IMAGE            an image with sh, sleep and getent
#        check-container-network.sh --rootfs DIR     an exploded root instead (the fresh-root check)
set -uo pipefail
[ $# -ge 1 ] || { echo "usage: $0 IMAGE | --rootfs DIR" >&2; exit 2; }
image=("$@")
name="facesvc-netcheck-$$"
log="$(mktemp)"
cleanup() {
  podman rm -f -t 0 "$name-svc" > /dev/null 2>&1
  podman network rm -f "$name-bridge" "$name-internal" > /dev/null 2>&1
  rm -f "$log"
}
trap cleanup EXIT

hint() {
  # the package a failure most likely lacks, from what netavark on this machine runs
  local release="" netavark_version
  release="$(. /etc/os-release 2> /dev/null && echo "${VERSION_CODENAME:-}")"
  netavark_version="$(/usr/lib/podman/netavark --version 2> /dev/null | awk '{print $2}')"
  if [ ! -x /usr/lib/podman/netavark ]; then
    echo "netavark is not installed (apt-get install netavark aardvark-dns)"
  elif [ ! -x /usr/lib/podman/aardvark-dns ]; then
    echo "aardvark-dns is not installed: no service names on podman networks (apt-get install aardvark-dns)"
  elif [ "$release" = bookworm ] && [ ! -x /usr/sbin/iptables ]; then
    echo "netavark $netavark_version runs iptables, which is not installed (apt-get install iptables)"
  elif [ "$release" != bookworm ] && [ ! -x /usr/sbin/nft ] && [ ! -x /usr/sbin/iptables ]; then
    echo "netavark $netavark_version has no firewall tool (apt-get install nftables)"
  elif [ "$(podman info --format '{{.Host.NetworkBackend}}' 2> /dev/null)" != netavark ]; then
    echo "podman's network backend is not netavark (scripts/system-deps.sh writes containers.conf)"
  else
    echo "see the error above"
  fi
}

fail() {
  echo "container network check failed at: $1" >&2
  tail -n 5 "$log" | sed 's/^/  /' >&2
  echo "container network check: $(hint); run scripts/system-deps.sh as root" >&2
  exit 1
}

podman network create "$name-bridge" > "$log" 2>&1 || fail "podman network create"
podman network create --internal "$name-internal" >> "$log" 2>&1 \
  || fail "podman network create --internal"
podman run -d --name "$name-svc" --network "$name-bridge" --network "$name-internal" \
  --network-alias svc "${image[@]}" sleep 120 >> "$log" 2>&1 \
  || fail "podman run on a bridge and an internal network"
for net in bridge internal; do
  podman run --rm --network "$name-$net" "${image[@]}" \
    sh -c 'for i in 1 2 3 4 5 6 7 8 9 10; do getent hosts svc && exit 0; sleep 0.5; done; exit 1' \
    >> "$log" 2>&1 || fail "resolving a service name on the $net network"
done
echo "container network check: podman $(podman --version | awk '{print $3}'), netavark $(/usr/lib/podman/netavark --version 2> /dev/null | awk '{print $2}'): service names resolve on a bridge and an internal network"
