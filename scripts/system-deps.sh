#!/usr/bin/env bash
# Installs the real servers the test suite starts (PostgreSQL) when they are missing and we
# are allowed to (root with apt-get). Elsewhere it says what to install; the PostgreSQL tests
# then skip locally, and fail in CI (CI=true), so CI can never pass without them.
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get > /dev/null; then
  echo "installing PostgreSQL (Debian package) for the database tests"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends postgresql > /dev/null
else
  echo "note: PostgreSQL is not installed; its tests will be skipped (apt-get install postgresql)"
fi
