#!/usr/bin/env bash
# The whole test suite: unit and core tests, the store conformance suite on SQLite and
# PostgreSQL, end-to-end tests against the real `segl` binary (on both stores), and the interop
# tests with independent client libraries (npm oauth4webapi + jose).
#
# PostgreSQL: SEGL_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test) must be
# reachable; set it to the empty string to skip the PostgreSQL variants explicitly.
# Interop: needs node and npm; SEGL_TEST_INTEROP=0 skips it explicitly.
set -euo pipefail
cd "$(dirname "$0")/.."

export SEGL_TEST_POSTGRES_URL="${SEGL_TEST_POSTGRES_URL-postgres://postgres@127.0.0.1:5432/test}"
if [ -n "$SEGL_TEST_POSTGRES_URL" ]; then
  hostport=$(printf '%s' "$SEGL_TEST_POSTGRES_URL" | sed -E 's#^[a-z]+://([^@/]*@)?([^/?]+).*#\2#')
  host=${hostport%:*}; port=${hostport##*:}; [ "$port" = "$hostport" ] && port=5432
  if ! (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
    echo "PostgreSQL is not reachable at $host:$port (SEGL_TEST_POSTGRES_URL)." >&2
    echo "Start it, or run with SEGL_TEST_POSTGRES_URL= to skip the PostgreSQL tests." >&2
    exit 1
  fi
else
  echo "SEGL_TEST_POSTGRES_URL is empty: the PostgreSQL variants will be skipped."
fi

export SEGL_TEST_INTEROP="${SEGL_TEST_INTEROP-1}"
if [ "$SEGL_TEST_INTEROP" = 1 ]; then
  command -v node >/dev/null && command -v npm >/dev/null || {
    echo "node and npm are needed for the interop tests (or set SEGL_TEST_INTEROP=0)." >&2; exit 1; }
  [ -d tests/interop/node_modules/oauth4webapi ] || npm ci --prefix tests/interop --no-audit --no-fund
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace -j2 --no-fail-fast "$@"
else
  cargo test --workspace -j2 --no-fail-fast "$@"
fi
