#!/usr/bin/env bash
# The whole test suite: unit and core tests, the store conformance suite on SQLite and
# PostgreSQL, end-to-end tests against the real `segl` binary (on both stores), and the interop
# tests with independent client libraries (npm oauth4webapi + jose).
#
# PostgreSQL: SEGL_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test) must be
# reachable; set it to the empty string to skip the PostgreSQL variants explicitly.
# Interop: needs node and npm; SEGL_TEST_INTEROP=0 skips it explicitly.
# Browser: a real-browser login (tests/browser) needs Debian's Chromium at /usr/bin/chromium
# (`apt-get install chromium`; CHROMIUM=PATH for another binary), node and npm;
# SEGL_TEST_BROWSER=0 skips it explicitly.
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

export SEGL_TEST_BROWSER="${SEGL_TEST_BROWSER-1}"
if [ "$SEGL_TEST_BROWSER" = 1 ]; then
  # Set-up on a fresh Debian machine: install Chromium when we may (root with apt-get).
  if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "Installing Debian's chromium for the browser test…"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || true
  fi
  [ -x "${CHROMIUM:-/usr/bin/chromium}" ] || {
    echo "Chromium is needed for the browser test: ${CHROMIUM:-/usr/bin/chromium} is missing." >&2
    echo "Install it (Debian: apt-get install chromium), or set SEGL_TEST_BROWSER=0 to skip it." >&2
    exit 1; }
  command -v node >/dev/null && command -v npm >/dev/null || {
    echo "node and npm are needed for the browser test (or set SEGL_TEST_BROWSER=0)." >&2; exit 1; }
  # playwright-core only drives the installed Chromium; it never downloads a browser.
  [ -d tests/browser/node_modules/playwright-core ] ||
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix tests/browser --no-audit --no-fund
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace -j2 --no-fail-fast "$@"
else
  cargo test --workspace -j2 --no-fail-fast "$@"
fi
