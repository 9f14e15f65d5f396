#!/usr/bin/env bash
# The token-endpoint matrix against the crypto ceiling and a reference peer, and cost growth.
#
#   bash bench/matrix.sh [--quick] [--no-build] [--concurrency "1 2 4 8 16 32 64"]
#                        [--algs "RS256 ES256"] [--dpop "off on"] [--stores "sqlite postgres"]
#                        [--no-peer] [--no-matrix] [--growth] [--growth-sizes "10 10000 1000000"]
#                        [--jti] [--out DIR]
#
# Matrix: token alg x DPoP x store (a fresh server and database per cell, pinned to CPU 0), and
# the peer (panva's oidc-provider, /work/shared/peer) per alg x DPoP; every cell is swept over
# the concurrency levels with segl-load pinned to CPU 1, which also measures the crypto ceiling
# on CPU 0 before and after each run. --growth: throughput, RSS and start-up time with many
# registered clients. --jti: throughput with a large pre-filled jti table, and the purge.
# --quick: 3 s runs instead of 10 s. Raw JSON lines go to --out (default: a temporary
# directory, removed). See bench/README.md.
set -euo pipefail

usage() {
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
}

QUICK=0
BUILD=1
CONCURRENCY="1 2 4 8 16 32 64"
ALGS="RS256 ES256"
DPOPS="off on"
STORES="sqlite postgres"
PEER=1
MATRIX=1
GROWTH=0
GROWTH_SIZES="10 10000 1000000"
JTI=0
OUT=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --no-build) BUILD=0 ;;
        --concurrency) CONCURRENCY="$2"; shift ;;
        --algs) ALGS="$2"; shift ;;
        --dpop) DPOPS="$2"; shift ;;
        --stores) STORES="$2"; shift ;;
        --no-peer) PEER=0 ;;
        --no-matrix) MATRIX=0 ;;
        --growth) GROWTH=1 ;;
        --growth-sizes) GROWTH_SIZES="$2"; shift ;;
        --jti) JTI=1 ;;
        --out) OUT="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "matrix.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
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
PEER_DIR="/work/shared/peer"
PEER_CACHE="$ROOT/bench/.peer"
PG_URL_BASE="postgres://postgres@127.0.0.1:5432"
source "$ROOT/bench/common.sh"
bench_binaries "$BUILD"

[[ "$(nproc)" -ge 2 ]] || { echo "matrix.sh: needs at least 2 CPUs (server on CPU 0, load on CPU 1)" >&2; exit 1; }

WORK="$(mktemp -d -t segl-matrix.XXXXXX)"
TMP_DIRS+=("$WORK")
if [[ -z "$OUT" ]]; then OUT="$WORK/out"; fi
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"

status_kb() { # PID FIELD -> kB
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}

# segl_config DIR PORT ALG DPOP(on|off) DATABASE_URL CLIENTS
segl_config() {
    local dir="$1" port="$2" alg="$3" dpop="$4" db="$5" clients="${6:-1}"
    local require=false
    [[ "$dpop" == on ]] && require=true
    openssl rand -base64 32 > "$dir/kek.b64"
    "$SEGL" keys generate --alg ES256 --out "$dir/bench" > /dev/null
    cat > "$dir/segl.toml" <<TOML
issuer = "http://127.0.0.1:$port"
listen = "127.0.0.1:$port"
database = "$db"
key_encryption_key_file = "kek.b64"

[tokens]
signing_alg = "$alg"

[dpop]
nonce = "required"

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
require_dpop = $require
TOML
    if [[ "$clients" -gt 1 ]]; then
        # More clients, all with the bench client's public key (the load uses "bench").
        python3 - "$dir/segl.toml" "$((clients - 1))" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "a") as f:
    for i in range(n):
        f.write('\n[[client]]\nclient_id = "c%d"\nname = "Client %d"\norganization = "999977774"\n'
                'grant_types = ["client_credentials"]\nscopes = ["bench:api/read"]\n'
                'jwks_file = "bench.public.jwks.json"\n' % (i, i))
PY
    fi
}

# start_segl DIR -> sets PID; logs to DIR/server.log
start_segl() {
    local dir="$1"
    (cd "$dir" && SEGL_RATE_LIMIT_ADDRESS_RATE=0 SEGL_RATE_LIMIT_CLIENT_RATE=0 \
        exec taskset -c 0 "$SEGL" serve --config "$dir/segl.toml") > "$dir/server.log" 2>&1 &
    PID=$!
    SERVER_PIDS+=("$PID")
}

new_pg_db() {
    local db="segl_bench_$$_$RANDOM$RANDOM"
    psql -h 127.0.0.1 -U postgres -d test -qc "CREATE DATABASE $db" >/dev/null
    PG_DBS+=("$db")
    echo "$db"
}

drop_pg_db() {
    psql -h 127.0.0.1 -U postgres -d test -qc "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null
}

# load ISSUER PID C DPOP EXTRA-ARGS... -> prints JSON (or fails)
load() {
    local issuer="$1" pid="$2" c="$3" dpop="$4"; shift 4
    local dp=()
    [[ "$dpop" == on ]] && dp=(--dpop)
    "$LOAD" --issuer "$issuer" --concurrency "$c" --requests "$REQUESTS" --duration "$DURATION" \
        --warmup "$WARMUP" --server-pid "$pid" --pin-cpu 1 --ceiling-cpu 0 "${dp[@]}" --json "$@"
}

CPU_MODEL="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git status --porcelain 2>/dev/null | head -1)" ]]; then COMMIT="$COMMIT (+ uncommitted changes)"; fi
echo
echo "## Segl token endpoint: matrix against the crypto ceiling"
echo
echo "- machine: $(nproc) CPUs, ${CPU_MODEL:-unknown CPU}, Linux $(uname -r); $(date -u +%Y-%m-%d)"
echo "- commit: $COMMIT; $(rustc --version 2>/dev/null || echo 'rustc unknown'); node $(node --version 2>/dev/null || echo '-')"
echo "- server (Segl or peer) on CPU 0 (taskset), segl-load on CPU 1; ES256 client assertion;" \
     "timed phase ≤ ${DURATION} s or ≤ ${REQUESTS} requests after ${WARMUP} warm-up requests$([[ $QUICK -eq 1 ]] && echo ' (--quick)')"
echo "- concurrency sweep: $CONCURRENCY; load average at the start: $(cut -d" " -f1-3 /proc/loadavg) (the machine is shared)"
echo

if [[ $MATRIX -eq 1 ]]; then
    for STORE in $STORES; do
        for ALG in $ALGS; do
            for DPOP in $DPOPS; do
                DIR="$(mktemp -d -t segl-cell.XXXXXX)"
                TMP_DIRS+=("$DIR")
                PORT="$(free_port)"
                ISSUER="http://127.0.0.1:$PORT"
                DB_NAME=""
                if [[ "$STORE" == postgres ]]; then
                    DB_NAME="$(new_pg_db)"
                    DBURL="$PG_URL_BASE/$DB_NAME"
                else
                    DBURL="sqlite://segl.db"
                fi
                segl_config "$DIR" "$PORT" "$ALG" "$DPOP" "$DBURL"
                start_segl "$DIR"
                wait_ready "$PID" "$ISSUER/health/ready" "$DIR/server.log" 60 > /dev/null
                sleep 1
                IDLE="$(status_kb "$PID" VmRSS)"
                echo "segl $STORE $ALG DPoP $DPOP: idle RSS $IDLE kB" >&2
                for C in $CONCURRENCY; do
                    OUT_JSON="$(load "$ISSUER" "$PID" "$C" "$DPOP" --client-id bench \
                        --key "$DIR/bench.private.jwk.json" --scope bench:api/read)" || {
                        echo "matrix.sh: segl-load failed (segl $STORE $ALG $DPOP c=$C); server log tail:" >&2
                        tail -n 20 "$DIR/server.log" >&2
                        exit 1
                    }
                    record server=segl store="$STORE" alg="$ALG" dpop_mode="$DPOP" \
                        idle_rss_kb="$IDLE" <<< "$OUT_JSON"
                done
                HWM="$(status_kb "$PID" VmHWM)"
                echo "{\"summary\": \"cell\", \"server\": \"segl\", \"store\": \"$STORE\", \"alg\": \"$ALG\", \"dpop_mode\": \"$DPOP\", \"idle_rss_kb\": $IDLE, \"hwm_kb\": $HWM}" >> "$RESULTS"
                stop_server "$PID"
                if [[ -n "$DB_NAME" ]]; then drop_pg_db "$DB_NAME"; fi
                rm -rf -- "$DIR"
            done
        done
    done

    if [[ $PEER -eq 1 ]]; then
        if [[ ! -f "$PEER_CACHE/node_modules/oidc-provider/package.json" ]]; then
            echo "installing oidc-provider@9 and jose@6 into bench/.peer…" >&2
            mkdir -p "$PEER_CACHE"
            npm install --no-audit --no-fund --prefix "$PEER_CACHE" oidc-provider@9 jose@6 >&2
        fi
        PEER_VERSION="$(node -p "require('$PEER_CACHE/node_modules/oidc-provider/package.json').version")"
        for ALG in $ALGS; do
            for DPOP in $DPOPS; do
                DIR="$(mktemp -d -t segl-peer.XXXXXX)"
                TMP_DIRS+=("$DIR")
                PORT="$(free_port)"
                ISSUER="http://127.0.0.1:$PORT"
                NONCE=0
                [[ "$DPOP" == on ]] && NONCE=1
                (PEER_PORT="$PORT" PEER_HOST=127.0.0.1 PEER_AT_ALG="$ALG" PEER_DPOP_NONCE="$NONCE" \
                    PEER_DPOP_REQUIRED="$NONCE" PEER_KEYS_DIR="$DIR" \
                    PEER_MODULES="$PEER_CACHE/node_modules" \
                    exec taskset -c 0 node "$PEER_DIR/oidc-provider-server.mjs") > "$DIR/server.log" 2>&1 &
                PID=$!
                SERVER_PIDS+=("$PID")
                wait_ready "$PID" "$ISSUER/.well-known/openid-configuration" "$DIR/server.log" 60 > /dev/null
                sleep 1
                IDLE="$(status_kb "$PID" VmRSS)"
                echo "peer oidc-provider $PEER_VERSION $ALG DPoP $DPOP: idle RSS $IDLE kB" >&2
                for C in $CONCURRENCY; do
                    OUT_JSON="$(load "$ISSUER" "$PID" "$C" "$DPOP" --token-path /token \
                        --client-id peer-client --key "$PEER_DIR/keys/client-ec.private.jwk.json" \
                        --kid client-ec-1 --scope api:read --resource https://api.example/)" || {
                        echo "matrix.sh: segl-load failed (peer $ALG $DPOP c=$C); server log tail:" >&2
                        tail -n 20 "$DIR/server.log" >&2
                        exit 1
                    }
                    record server=peer store=memory alg="$ALG" dpop_mode="$DPOP" \
                        idle_rss_kb="$IDLE" peer_version="\"$PEER_VERSION\"" <<< "$OUT_JSON"
                done
                HWM="$(status_kb "$PID" VmHWM)"
                echo "{\"summary\": \"cell\", \"server\": \"peer\", \"store\": \"memory\", \"alg\": \"$ALG\", \"dpop_mode\": \"$DPOP\", \"idle_rss_kb\": $IDLE, \"hwm_kb\": $HWM}" >> "$RESULTS"
                stop_server "$PID"
                rm -rf -- "$DIR"
            done
        done
    fi
    python3 "$ROOT/bench/summarize.py" matrix "$RESULTS"
fi

if [[ $GROWTH -eq 1 ]]; then
    GROWTH_C=16
    echo
    echo "### Cost growth: registered clients (ES256 tokens, no DPoP, SQLite, concurrency $GROWTH_C)"
    echo
    for N in $GROWTH_SIZES; do
        DIR="$(mktemp -d -t segl-growth.XXXXXX)"
        TMP_DIRS+=("$DIR")
        PORT="$(free_port)"
        ISSUER="http://127.0.0.1:$PORT"
        segl_config "$DIR" "$PORT" ES256 off "sqlite://segl.db" "$N"
        CONFIG_MB="$(du -m "$DIR/segl.toml" | cut -f1)"
        start_segl "$DIR"
        # Watch the start: give up after 600 s or 16 GiB of RSS.
        STARTED="$(date +%s.%N)"
        READY=""
        MAXRSS=0
        while kill -0 "$PID" 2>/dev/null; do
            RSS="$(status_kb "$PID" VmRSS)"
            [[ -n "$RSS" && "$RSS" -gt "$MAXRSS" ]] && MAXRSS="$RSS"
            if curl -fsS -o /dev/null --max-time 1 "$ISSUER/health/ready" 2>/dev/null; then
                READY="$(python3 -c "print(round($(date +%s.%N) - $STARTED, 2))")"
                break
            fi
            if [[ "$MAXRSS" -gt 16777216 ]] || python3 -c "import sys; sys.exit(0 if $(date +%s.%N) - $STARTED > 600 else 1)"; then
                break
            fi
            sleep 0.1
        done
        if [[ -z "$READY" ]]; then
            ELAPSED="$(python3 -c "print(round($(date +%s.%N) - $STARTED, 1))")"
            HWM="$(status_kb "$PID" VmHWM)"
            echo "{\"summary\": \"growth\", \"clients\": $N, \"config_mb\": $CONFIG_MB, \"ready\": false, \"elapsed_s\": $ELAPSED, \"hwm_kb\": ${HWM:-$MAXRSS}}" >> "$RESULTS"
            echo "growth $N clients: not ready after $ELAPSED s (peak RSS ${HWM:-$MAXRSS} kB); log tail:" >&2
            tail -n 5 "$DIR/server.log" >&2
            stop_server "$PID"
            rm -rf -- "$DIR"
            continue
        fi
        sleep 1
        IDLE="$(status_kb "$PID" VmRSS)"
        START_HWM="$(status_kb "$PID" VmHWM)"
        OUT_JSON="$(load "$ISSUER" "$PID" "$GROWTH_C" off --client-id bench \
            --key "$DIR/bench.private.jwk.json" --scope bench:api/read)"
        HWM="$(status_kb "$PID" VmHWM)"
        record summary=growth clients="$N" config_mb="$CONFIG_MB" ready=true startup_s="$READY" \
            idle_rss_kb="$IDLE" start_hwm_kb="$START_HWM" hwm_kb="$HWM" <<< "$OUT_JSON"
        echo "growth $N clients: ready in $READY s, idle RSS $IDLE kB" >&2
        stop_server "$PID"
        rm -rf -- "$DIR"
    done
    python3 "$ROOT/bench/summarize.py" growth "$RESULTS"
fi

if [[ $JTI -eq 1 ]]; then
    JTI_C=16
    LIVE=1000000
    EXPIRED=1000000
    echo
    echo "### Cost growth: a large jti table (ES256 tokens, no DPoP, SQLite, concurrency $JTI_C)"
    echo
    for FILL in 0 1; do
        DIR="$(mktemp -d -t segl-jti.XXXXXX)"
        TMP_DIRS+=("$DIR")
        PORT="$(free_port)"
        ISSUER="http://127.0.0.1:$PORT"
        segl_config "$DIR" "$PORT" ES256 off "sqlite://segl.db"
        # Migrate (one start), then pre-fill: LIVE rows valid for an hour, EXPIRED rows that
        # expired a minute ago, as client-assertion jtis (kind 1).
        start_segl "$DIR"
        wait_ready "$PID" "$ISSUER/health/ready" "$DIR/server.log" 60 > /dev/null
        stop_server "$PID"
        if [[ $FILL -eq 1 ]]; then
            NOW="$(date +%s)"
            sqlite3 "$DIR/segl.db" <<SQL
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $LIVE)
INSERT INTO jti (kind, key, expires_at) SELECT 1, randomblob(32), $NOW + 3600 FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $EXPIRED)
INSERT INTO jti (kind, key, expires_at) SELECT 1, randomblob(32), $NOW - 60 FROM n;
COMMIT;
SQL
        fi
        ROWS_BEFORE="$(sqlite3 "$DIR/segl.db" 'SELECT count(*) FROM jti')"
        DB_MB="$(du -m "$DIR/segl.db" | cut -f1)"
        start_segl "$DIR"
        T0="$(date +%s)"
        wait_ready "$PID" "$ISSUER/health/ready" "$DIR/server.log" 60 > /dev/null
        OUT_JSON="$(load "$ISSUER" "$PID" "$JTI_C" off --client-id bench \
            --key "$DIR/bench.private.jwk.json" --scope bench:api/read)"
        # The purge runs about once a minute: wait (at most 90 s from the start) until the
        # expired rows are gone.
        EXPIRED_LEFT=-1
        PURGED_AFTER=-1
        if [[ $FILL -eq 1 ]]; then
            for _ in $(seq 90); do
                EXPIRED_LEFT="$(sqlite3 "$DIR/segl.db" "SELECT count(*) FROM jti WHERE expires_at < $(date +%s) - 30" 2>/dev/null || echo -1)"
                if [[ "$EXPIRED_LEFT" == 0 ]]; then PURGED_AFTER="$(( $(date +%s) - T0 ))"; break; fi
                if [[ "$(( $(date +%s) - T0 ))" -ge 90 ]]; then break; fi
                sleep 1
            done
        fi
        ROWS_AFTER="$(sqlite3 "$DIR/segl.db" 'SELECT count(*) FROM jti' 2>/dev/null || echo -1)"
        HWM="$(status_kb "$PID" VmHWM)"
        record summary=jti prefilled="$FILL" rows_before="$ROWS_BEFORE" db_mb="$DB_MB" \
            rows_after="$ROWS_AFTER" expired_left="$EXPIRED_LEFT" purged_after_s="$PURGED_AFTER" \
            hwm_kb="$HWM" <<< "$OUT_JSON"
        stop_server "$PID"
        rm -rf -- "$DIR"
    done
    python3 "$ROOT/bench/summarize.py" jti "$RESULTS"
fi
echo
echo "raw results: $RESULTS$([[ "$OUT" == "$WORK/out" ]] && echo ' (temporary; use --out DIR to keep them)')"
