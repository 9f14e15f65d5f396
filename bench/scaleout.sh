#!/usr/bin/env bash
# Scale-out: token throughput of one and of three `segl serve` processes on one PostgreSQL.
#
#   bash bench/scaleout.sh [--quick] [--no-build] [--concurrency "8 32 64"] [--dpop "off on"]
#                          [--pinned | --no-pin] [--interleave] [--out DIR]
#   bash bench/scaleout.sh --table FILE      (the table of kept JSON lines, nothing is run)
#
# One fresh PostgreSQL database (127.0.0.1:5432, user postgres, created through the database
# `test`, dropped on exit) and one configuration shared by every process (ES256 tokens, DPoP
# nonces required; client `bench`, and `bench-dpop` with require_dpop): the processes differ
# only in `--listen`, as behind a load balancer, and all are asked as the one issuer. Per mode,
# one process is started and measured, then two more join it on the same database and the three
# are measured, segl-load going round-robin over them per request; each at every concurrency
# (total requests in flight), without and with DPoP. Modes: "pinned" (the servers together on
# CPU 0, segl-load on CPU 1: three processes in one process's CPU budget, which measures what
# running three costs, not scaling) and "unpinned" (no pinning: servers and segl-load share all
# CPUs). Both by default; --pinned or --no-pin runs one. --quick: 3 s runs instead of 10 s.
# --interleave: start the three at once and run each one-process measurement right before its
# three-process twin (the other two idle), so that a machine whose speed drifts over minutes
# does not bias the comparison. Every run must have 0 errors and, with three processes, each
# process about a third of the tokens; otherwise the script exits non-zero after the table.
# --out DIR keeps results.jsonl (one JSON object per run: segl-load --json plus mode,
# processes, dpop_mode). See bench/README.md.
set -euo pipefail

usage() {
    sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'
}

QUICK=0
BUILD=1
CONCURRENCY="8 32 64"
DPOPS="off on"
MODES="pinned unpinned"
OUT=""
TABLE=""
INTERLEAVE=false
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --no-build) BUILD=0 ;;
        --concurrency) CONCURRENCY="$2"; shift ;;
        --dpop) DPOPS="$2"; shift ;;
        --pinned) MODES="pinned" ;;
        --no-pin) MODES="unpinned" ;;
        --interleave) INTERLEAVE=true ;;
        --out) OUT="$2"; shift ;;
        --table) TABLE="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "scaleout.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# table FILE: the Markdown table of the runs in FILE.
table() {
    python3 - "$1" <<'PY'
import json, sys

runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
runs = [r for r in runs if "processes" in r]
modes = list(dict.fromkeys(r["mode"] for r in runs))
order = {id(r): i for i, r in enumerate(runs)}
runs.sort(key=lambda r: (modes.index(r["mode"]), r["processes"], order[id(r)]))
one = {(r["mode"], r["dpop_mode"], r["concurrency"]): r["tokens_per_s"]
       for r in runs if r["processes"] == 1}

def fmt(v, f):
    return "-" if v is None else format(v, f)

print("| mode | processes | DPoP | concurrency | tokens/s | ÷ 1 process | tokens per process | p50 ms | p99 ms "
      "| server CPU µs/token (sum) | server CPU % (sum) | PostgreSQL CPU µs/token | PostgreSQL transactions per request "
      "| machine CPUs busy (stolen) | client CPU % | errors |")
print("|---|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in runs:
    base = one.get((r["mode"], r["dpop_mode"], r["concurrency"]))
    ratio = "-" if r["processes"] == 1 or not base else "%.2f" % (r["tokens_per_s"] / base)
    per = " / ".join(str(t["tokens"]) for t in r.get("targets", []))
    util = r.get("server_cpu_util")
    cutil = r.get("client_cpu_util")
    busy = r.get("machine_cpu_busy")
    xacts = r.get("pg_write_xacts")
    sent = r.get("pg_requests")
    per_request = "-" if xacts is None or not sent else "%.2f" % (xacts / sent)
    print("| %s | %d | %s | %d | %.0f | %s | %s | %.2f | %.2f | %s | %s | %s | %s | %s | %s | %d |" % (
        r["mode"], r["processes"], r["dpop_mode"], r["concurrency"], r["tokens_per_s"], ratio, per,
        r["p50_ms"], r["p99_ms"], fmt(r.get("server_cpu_us_per_token"), ".0f"),
        fmt(None if util is None else 100 * util, ".0f"),
        fmt(r.get("db_cpu_us_per_token"), ".0f"), per_request,
        "-" if busy is None else "%.2f of %d (%.2f)" % (busy, r.get("machine_cpus", 0), r.get("machine_cpu_steal") or 0),
        fmt(None if cutil is None else 100 * cutil, ".0f"), r["errors"]))
PY
}

if [[ -n "$TABLE" ]]; then
    table "$TABLE"
    exit 0
fi

if [[ $QUICK -eq 1 ]]; then
    DURATION=3; REQUESTS=30000; WARMUP=400
else
    DURATION=10; REQUESTS=100000; WARMUP=1000
fi
PG_URL_BASE="postgres://postgres@127.0.0.1:5432"
source "$ROOT/bench/common.sh"
bench_binaries "$BUILD"

NCPU="$(nproc)"
if [[ " $MODES " == *" pinned "* && $NCPU -lt 2 ]]; then
    echo "scaleout.sh: the pinned mode needs at least 2 CPUs (servers on CPU 0, load on CPU 1); use --no-pin" >&2
    exit 1
fi

WORK="$(mktemp -d -t segl-scaleout.XXXXXX)"
TMP_DIRS+=("$WORK")
if [[ -z "$OUT" ]]; then OUT="$WORK/out"; fi
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"

# check PROCESSES < JSON: prints what is wrong with a run (nothing if it is fine): errors, a
# target without a third of the tokens (± 2 points), a process that used no CPU.
check() {
    python3 -c '
import json, sys
n = int(sys.argv[1])
r = json.loads(sys.stdin.read())
problems = []
if r["errors"] != 0:
    problems.append("%d errors %s" % (r["errors"], r["errors_by_kind"]))
targets = r.get("targets", [])
if len(targets) != n:
    problems.append("%d targets, expected %d" % (len(targets), n))
total = sum(t["tokens"] for t in targets)
for t in targets:
    share = t["tokens"] / total if total else 0
    if abs(share - 1 / n) > 0.02:
        problems.append("%s served %d of %d tokens (%.1f %%)" % (t["url"], t["tokens"], total, 100 * share))
for s in r.get("servers", []):
    if not s["cpu_s"] > 0:
        problems.append("process %d used no CPU time" % s["pid"])
print("; ".join(problems))
' "$1"
}

DIR="$WORK/segl"
mkdir -p "$DIR"
PORTS=("$(free_port)" "$(free_port)" "$(free_port)")
# The issuer all processes are asked as (the first process's address; the others answer for
# it, as behind a load balancer).
ISSUER="http://127.0.0.1:${PORTS[0]}"
DB_NAME="segl_scaleout_$$_$RANDOM$RANDOM"
psql -h 127.0.0.1 -U postgres -d test -qc "CREATE DATABASE $DB_NAME" >/dev/null
PG_DBS+=("$DB_NAME")
openssl rand -base64 32 > "$DIR/kek.b64"
"$SEGL" keys generate --alg ES256 --out "$DIR/bench" > /dev/null
cat > "$DIR/segl.toml" <<TOML
issuer = "$ISSUER"
listen = "127.0.0.1:${PORTS[0]}"
database = "$PG_URL_BASE/$DB_NAME"
key_encryption_key_file = "kek.b64"

[tokens]
signing_alg = "ES256"

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
require_dpop = false

[[client]]
client_id = "bench-dpop"
name = "Bench client (DPoP)"
organization = "999977774"
grant_types = ["client_credentials"]
scopes = ["bench:api/read"]
jwks_file = "bench.public.jwks.json"
require_dpop = true
TOML

# start_segl MODE INDEX: starts process INDEX (0, 1, 2) on PORTS[INDEX]; appends to PIDS.
start_segl() {
    local mode="$1" i="$2" port log pin=()
    port="${PORTS[$i]}"
    log="$DIR/server-$mode-$i.log"
    [[ "$mode" == pinned ]] && pin=(taskset -c 0)
    (cd "$DIR" && SEGL_RATE_LIMIT_ADDRESS_RATE=0 SEGL_RATE_LIMIT_CLIENT_RATE=0 \
        exec "${pin[@]}" "$SEGL" serve --config "$DIR/segl.toml" --listen "127.0.0.1:$port") > "$log" 2>&1 &
    local pid=$!
    SERVER_PIDS+=("$pid")
    PIDS+=("$pid")
    wait_ready "$pid" "http://127.0.0.1:$port/health/ready" "$log" 60 > /dev/null
}

CPU_MODEL="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git status --porcelain 2>/dev/null | head -1)" ]]; then COMMIT="$COMMIT (+ uncommitted changes)"; fi
PG_VERSION="$(psql -h 127.0.0.1 -U postgres -d test -Atc 'SHOW server_version' 2>/dev/null || echo unknown)"
PG_SYNC="$(psql -h 127.0.0.1 -U postgres -d test -Atc 'SHOW synchronous_commit' 2>/dev/null || echo unknown)"
# PostgreSQL's main process: segl-load reports its CPU time and its backends' (--db-pid), if it
# runs on this machine and its process can be read.
PG_PID="$(psql -h 127.0.0.1 -U postgres -d test -Atc "SELECT split_part(pg_read_file('postmaster.pid'), E'\n', 1)" 2>/dev/null || true)"
DB_PID_ARG=()
if [[ "$PG_PID" =~ ^[0-9]+$ && -r "/proc/$PG_PID/stat" ]]; then DB_PID_ARG=(--db-pid "$PG_PID"); fi

# The next transaction id to be assigned (read without taking one): the difference over a run is
# the number of transactions that wrote, in the whole cluster.
next_xid() {
    psql -h 127.0.0.1 -U postgres -d test -Atc 'SELECT pg_snapshot_xmax(pg_current_snapshot())' 2>/dev/null || echo ""
}
echo
echo "## Segl scale-out: one and three processes on one PostgreSQL"
echo
echo "- machine: $NCPU CPUs, ${CPU_MODEL:-unknown CPU}, Linux $(uname -r); $(date -u +%Y-%m-%d)"
echo "- commit: $COMMIT; $(rustc --version 2>/dev/null || echo 'rustc unknown'); PostgreSQL $PG_VERSION (synchronous_commit $PG_SYNC, on the same machine, not pinned)"
echo "- ES256 tokens and client assertions; DPoP: a proof with the server nonce on every request (client bench-dpop)"
echo "- pinned: servers together on CPU 0 (taskset), segl-load on CPU 1; unpinned: no pinning"
if [[ "$INTERLEAVE" == true ]]; then
    echo "- order: the three processes run throughout; each one-process run (the other two idle) right before its three-process twin"
else
    echo "- order: per mode, every one-process run, then two more processes start and every three-process run"
fi
echo "- timed phase ≤ ${DURATION} s or ≤ ${REQUESTS} requests after ${WARMUP} warm-up requests$([[ $QUICK -eq 1 ]] && echo ' (--quick)'); concurrency = requests in flight over all processes"
echo "- PostgreSQL CPU: its main process and backends (segl-load --db-pid); transactions per request: write transactions in the cluster (transaction ids taken) over the requests of the run, warm-up included"
echo "- load average at the start: $(cut -d" " -f1-3 /proc/loadavg)"
echo

# measure MODE N DPOP C: one segl-load run against the first N processes; records it and
# notes what check finds wrong.
measure() {
    local mode="$1" n="$2" dpop="$3" c="$4" i client=bench dp=() targets=() pid_args=()
    local load_pin=() xid_before xid_after xacts=null sent out problems
    [[ "$mode" == pinned ]] && load_pin=(--pin-cpu 1)
    if [[ "$dpop" == on ]]; then client=bench-dpop; dp=(--dpop); fi
    for i in $(seq 0 $((n - 1))); do
        targets+=(--target "http://127.0.0.1:${PORTS[$i]}")
        pid_args+=(--server-pid "${PIDS[$i]}")
    done
    echo "$mode, $n process(es), DPoP $dpop, concurrency $c…" >&2
    xid_before="$(next_xid)"
    out="$("$LOAD" --issuer "$ISSUER" "${targets[@]}" --client-id "$client" \
        --key "$DIR/bench.private.jwk.json" --scope bench:api/read \
        --concurrency "$c" --requests "$REQUESTS" --duration "$DURATION" \
        --warmup "$WARMUP" "${pid_args[@]}" "${DB_PID_ARG[@]}" "${load_pin[@]}" "${dp[@]}" --json)" || {
        echo "scaleout.sh: segl-load failed ($mode, $n processes, DPoP $dpop, c=$c); server log tails:" >&2
        for i in $(seq 0 $((n - 1))); do tail -n 10 "$DIR/server-$mode-$i.log" >&2; done
        exit 1
    }
    xid_after="$(next_xid)"
    if [[ "$xid_before" =~ ^[0-9]+$ && "$xid_after" =~ ^[0-9]+$ ]]; then
        xacts=$((xid_after - xid_before))
    fi
    # Requests sent in the whole run (probes, warm-up, timed phase, nonce retries), which the
    # write transactions are divided by.
    sent="$(python3 -c 'import json, sys; r = json.loads(sys.stdin.read()); print(len(r["targets"]) + r["warmup"] + r["requests"] + r["use_dpop_nonce_retries"])' <<< "$out")"
    record mode="$mode" processes="$n" dpop_mode="$dpop" pg_write_xacts="$xacts" \
        pg_requests="$sent" interleaved="$INTERLEAVE" <<< "$out"
    problems="$(check "$n" <<< "$out")"
    if [[ -n "$problems" ]]; then
        echo "scaleout.sh: $mode, $n processes, DPoP $dpop, c=$c: $problems" >&2
        FAILURES+=("$mode, $n processes, DPoP $dpop, c=$c: $problems")
    fi
}

FAILURES=()
for MODE in $MODES; do
    PIDS=()
    if [[ "$INTERLEAVE" == true ]]; then
        # All three up front; each one-process run is followed at once by its three-process run.
        while [[ ${#PIDS[@]} -lt 3 ]]; do start_segl "$MODE" "${#PIDS[@]}"; done
        for DPOP in $DPOPS; do
            for C in $CONCURRENCY; do
                measure "$MODE" 1 "$DPOP" "$C"
                measure "$MODE" 3 "$DPOP" "$C"
            done
        done
    else
        for N in 1 3; do
            while [[ ${#PIDS[@]} -lt $N ]]; do start_segl "$MODE" "${#PIDS[@]}"; done
            for DPOP in $DPOPS; do
                for C in $CONCURRENCY; do measure "$MODE" "$N" "$DPOP" "$C"; done
            done
        done
    fi
    for pid in "${PIDS[@]}"; do stop_server "$pid"; done
done

table "$RESULTS"
echo
echo "raw results: $RESULTS$([[ "$OUT" == "$WORK/out" ]] && echo ' (temporary; use --out DIR to keep them)')"
if [[ ${#FAILURES[@]} -gt 0 ]]; then
    echo >&2
    echo "scaleout.sh: FAILED checks:" >&2
    printf '  %s\n' "${FAILURES[@]}" >&2
    exit 1
fi
