#!/usr/bin/env bash
# Token endpoint benchmark: Segl's client_credentials throughput and latency, and the server's
# CPU time per token, for token signing_alg RS256 and ES256 at a few concurrency levels.
#
#   bash bench/run.sh [--quick] [--no-build] [--concurrency "4 16 64"] [--algs "RS256 ES256"] [--dpop]
#   bash bench/run.sh --matrix [matrix.sh options]   (the matrix, ceiling, peer and cost growth)
#
# --quick: 3 s runs instead of 10 s; --no-build: use the release binaries already built.
# The server is pinned to CPU 0 and segl-load to CPU 1 (after it has pre-signed its client
# assertions on all CPUs). Each algorithm gets a fresh server, database and keys in a temporary
# directory, removed on exit. The server logs at its default level (SEGL_LOG, if set, is
# passed on) to a file in that directory. SEGL_BIN=PATH runs another segl binary (for A/B
# comparisons of two builds). See bench/README.md.
set -euo pipefail

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
}

if [[ "${1:-}" == --matrix ]]; then
    shift
    exec bash "$(dirname "${BASH_SOURCE[0]}")/matrix.sh" "$@"
fi

QUICK=0
BUILD=1
CONCURRENCY="4 16 64"
ALGS="RS256 ES256"
DPOP=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --no-build) BUILD=0 ;;
        --concurrency) CONCURRENCY="$2"; shift ;;
        --algs) ALGS="$2"; shift ;;
        --dpop) DPOP=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

if [[ $QUICK -eq 1 ]]; then
    DURATION=3; REQUESTS=10000; WARMUP=100
else
    DURATION=10; REQUESTS=50000; WARMUP=500
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source "$ROOT/bench/common.sh"
bench_binaries "$BUILD"

NCPU="$(nproc)"
if [[ $NCPU -ge 2 ]]; then
    SERVER_PIN=(taskset -c 0)
    LOAD_PIN=(--pin-cpu 1)
    PINNING="server on CPU 0, segl-load on CPU 1"
else
    SERVER_PIN=()
    LOAD_PIN=()
    PINNING="none (only one CPU: server and segl-load share it)"
fi

COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git status --porcelain 2>/dev/null | head -1)" ]]; then COMMIT="$COMMIT (+ uncommitted changes)"; fi
CPU_MODEL="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"

echo
echo "## Segl token endpoint benchmark"
echo
echo "- machine: $NCPU CPUs, ${CPU_MODEL:-unknown CPU}, Linux $(uname -r)"
echo "- commit: $COMMIT"
echo "- rustc: $(rustc --version 2>/dev/null || echo unknown)"
echo "- pinning: $PINNING"
echo "- run: grant client_credentials, private_key_jwt (ES256 client key), SQLite;" \
     "timed phase ≤ ${DURATION} s or ≤ ${REQUESTS} requests, after ${WARMUP} warm-up requests$([[ $QUICK -eq 1 ]] && echo ' (--quick)')"
echo
DPOP_ARG=()
[[ $DPOP -eq 1 ]] && DPOP_ARG=(--dpop)
echo "- DPoP: $([[ $DPOP -eq 1 ]] && echo 'a proof with the server nonce on every request (nonce = required)' || echo 'off')"
echo
echo "| token alg | concurrency | tokens/s | p50 ms | p99 ms | server CPU µs/token | server CPU % | client CPU % | requests | errors |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"

for ALG in $ALGS; do
    DIR="$(mktemp -d -t segl-bench.XXXXXX)"
    TMP_DIRS+=("$DIR")
    PORT="$(free_port)"
    ISSUER="http://127.0.0.1:$PORT"
    openssl rand -base64 32 > "$DIR/kek.b64"
    "$SEGL" keys generate --alg ES256 --out "$DIR/bench" > /dev/null
    cat > "$DIR/segl.toml" <<TOML
issuer = "$ISSUER"
listen = "127.0.0.1:$PORT"
database = "sqlite://segl.db"
key_encryption_key_file = "kek.b64"

[tokens]
signing_alg = "$ALG"

[[api]]
audience = "bench:api"
scopes = ["bench:api/read"]

[[client]]
client_id = "bench"
name = "Bench client"
organization = "999977774"
grant_types = ["client_credentials"]
scopes = ["bench:api/read"]
jwks_file = "bench.public.jwks.json"
require_dpop = false
TOML

    # taskset execs segl, so $! is the server's own pid. The load comes from one address and
    # one client, so the rate limits are off for the benchmark.
    (cd "$DIR" && SEGL_RATE_LIMIT_ADDRESS_RATE=0 SEGL_RATE_LIMIT_CLIENT_RATE=0 \
        exec "${SERVER_PIN[@]}" "$SEGL" serve --config "$DIR/segl.toml") \
        > "$DIR/server.log" 2>&1 &
    PID=$!
    SERVER_PIDS+=("$PID")

    ready=0
    for _ in $(seq 300); do
        if ! kill -0 "$PID" 2>/dev/null; then break; fi
        if curl -fsS -o /dev/null --max-time 1 "$ISSUER/health/ready" 2>/dev/null; then ready=1; break; fi
        sleep 0.1
    done
    if [[ $ready -ne 1 ]]; then
        echo "run.sh: the $ALG server did not become ready; its log:" >&2
        cat "$DIR/server.log" >&2
        exit 1
    fi

    for C in $CONCURRENCY; do
        OUT="$("$LOAD" --issuer "$ISSUER" --client-id bench --key "$DIR/bench.private.jwk.json" \
            --scope bench:api/read --concurrency "$C" --requests "$REQUESTS" \
            --duration "$DURATION" --warmup "$WARMUP" --server-pid "$PID" "${LOAD_PIN[@]}" "${DPOP_ARG[@]}" --json)" || {
            echo "run.sh: segl-load failed ($ALG, concurrency $C); server log tail:" >&2
            tail -n 20 "$DIR/server.log" >&2
            exit 1
        }
        ALG="$ALG" python3 -c '
import json, os, sys
r = json.loads(sys.stdin.read())
def f(v, fmt):
    return "-" if v is None else format(v, fmt)
errs = r["errors"]
if errs:
    errs = "%d (%s)" % (errs, ", ".join("%s: %d" % kv for kv in r["errors_by_kind"].items()))
print("| %s | %d | %s | %s | %s | %s | %s | %s | %d | %s |" % (
    os.environ["ALG"], r["concurrency"], f(r["tokens_per_s"], ".0f"),
    f(r["p50_ms"], ".2f"), f(r["p99_ms"], ".2f"),
    f(r["server_cpu_us_per_token"], ".0f"),
    f(None if r["server_cpu_util"] is None else 100 * r["server_cpu_util"], ".0f"),
    f(None if r["client_cpu_util"] is None else 100 * r["client_cpu_util"], ".0f"),
    r["requests"], errs))
' <<< "$OUT"
    done

    stop_server "$PID"
done
echo
