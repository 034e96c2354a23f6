#!/usr/bin/env bash
# The set-up on a machine nobody touched: debootstraps a minimal Debian root of RELEASE
# (bookworm = Debian 12, trixie = Debian 13), runs scripts/system-deps.sh inside it (chroot, as
# root), then scripts/check-tools.sh there: every command the suite and the compose stack call
# exists and starts, and podman's container networks resolve service names.
#
# usage: scripts/fresh-root-check.sh RELEASE        (root; debootstrap and unshare on the host)
#
# Everything happens in a private mount namespace (mounts vanish with it) and, for the network
# check, a private network namespace (netavark's bridges and firewall rules never touch the host).
# The downloaded .debs are cached under .cache/fresh-root/ (ignored), so a second run downloads
# nothing; the root itself is removed afterwards (KEEP_ROOT=1 keeps it for a look).
set -euo pipefail
release="${1:?usage: $0 bookworm|trixie}"
here="$(cd "$(dirname "$0")" && pwd)"
cache="$(cd "$here/.." && pwd)/.cache/fresh-root"
mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
  mirror="$(grep -hoE '^URIs: *\S+/debian$' /etc/apt/sources.list.d/*.sources 2> /dev/null | head -1 | awk '{print $2}' || true)"
  mirror="${mirror:-http://deb.debian.org/debian}"
fi
security="${DEBIAN_SECURITY_MIRROR:-${mirror%/debian}/debian-security}"
[ "$(id -u)" = 0 ] || { echo "fresh-root check: needs root (debootstrap, chroot)" >&2; exit 2; }
for tool in debootstrap unshare chroot; do
  command -v "$tool" > /dev/null || [ -x "/usr/sbin/$tool" ] \
    || { echo "fresh-root check: $tool is missing (scripts/system-deps.sh installs it)" >&2; exit 2; }
done

mkdir -p "$cache/debootstrap-$release" "$cache/apt-$release/partial"
root="$(mktemp -d "$cache/root-$release.XXXXXX")"
chmod 755 "$root" # a root directory every user may enter (postgres runs initdb)
cleanup() { [ "${KEEP_ROOT:-0}" = 1 ] || rm -rf --one-file-system "$root"; }
trap cleanup EXIT

started=$SECONDS
echo "fresh-root $release: debootstrap --variant=minbase from $mirror"
debootstrap --variant=minbase --cache-dir="$cache/debootstrap-$release" "$release" "$root" "$mirror" \
  > "$root.debootstrap.log" 2>&1 || { tail -20 "$root.debootstrap.log" >&2; exit 1; }
rm -f "$root.debootstrap.log"
echo "fresh-root $release: root ready in $((SECONDS - started)) s"

# the machine's apt settings (proxies, snapshot options) and name servers, a release's own suites
cp -a /etc/apt/apt.conf.d/. "$root/etc/apt/apt.conf.d/"
[ -e /etc/apt/apt.conf ] && cp /etc/apt/apt.conf "$root/etc/apt/"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
rm -f "$root/etc/apt/sources.list.d/"*
printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
  "$mirror" "$release" "$mirror" "$release" "$security" "$release" > "$root/etc/apt/sources.list"
# the docker-clean hook some images carry would empty the shared cache after each install
rm -f "$root/etc/apt/apt.conf.d/docker-clean"
# the bind-mounted cache belongs to the host's root: apt downloads as root here (no warning)
echo 'APT::Sandbox::User "root";' > "$root/etc/apt/apt.conf.d/99fresh-root"
mkdir -p "$root/opt/facesvc"
cp "${SYSTEM_DEPS:-$here/system-deps.sh}" "$root/opt/facesvc/system-deps.sh"
cp "$here/check-tools.sh" "$here/check-container-network.sh" "$root/opt/facesvc/"

# inside: private mounts (/proc, /sys, /dev, the .deb cache); the tools' check (podman networks,
# the firewall tool) in a private network namespace too, after the set-up has used the host's
unshare --mount --pid --fork --propagation private bash -euo pipefail -c '
  root="$1" apt_cache="$2"
  mount --bind "$root" "$root" # "/" a mount point in the chroot, as runc needs
  mount -t proc proc "$root/proc"
  mount --rbind /sys "$root/sys"
  mount --rbind /dev "$root/dev"
  mount -t tmpfs tmpfs "$root/run"
  mount -t tmpfs tmpfs "$root/tmp"
  mount --bind "$apt_cache" "$root/var/cache/apt/archives"
  in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 CI="${CI:-}" "$@"; }
  started=$SECONDS
  in_root bash /opt/facesvc/system-deps.sh
  echo "fresh-root: scripts/system-deps.sh done in $((SECONDS - started)) s"
  unshare --net bash -c "$(declare -f in_root); root=$root; in_root bash /opt/facesvc/check-tools.sh"
' fresh-root "$root" "$cache/apt-$release"
echo "fresh-root $release: passed in $((SECONDS - started)) s"
