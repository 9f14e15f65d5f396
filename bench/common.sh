# Sourced by run.sh, matrix.sh and scaleout.sh (not run on its own): what a benchmark run
# starts is stopped and removed on exit, also on error or Ctrl-C — servers in SERVER_PIDS,
# directories in TMP_DIRS, PostgreSQL databases in PG_DBS — and the helpers the scripts share.
# Expects ROOT (the checkout) to be set.

BENCH="$(basename "$0")"
TMP_DIRS=()
SERVER_PIDS=()
PG_DBS=()

# stop_server PID: SIGTERM, up to 5 s to exit, then SIGKILL.
stop_server() {
    local pid="$1"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local pid dir db
    for pid in "${SERVER_PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then stop_server "$pid"; fi
    done
    for db in "${PG_DBS[@]}"; do
        psql -h 127.0.0.1 -U postgres -d test -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    done
    for dir in "${TMP_DIRS[@]}"; do rm -rf -- "$dir"; done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# bench_binaries BUILD: builds segl and segl-load in release mode when BUILD is 1; sets SEGL
# (SEGL_BIN if set, for comparing builds) and LOAD, and stops if either is missing.
bench_binaries() {
    if [[ "$1" -eq 1 ]]; then
        echo "building (release)…" >&2
        cargo build --release -j2 -p segl -p segl-bench >&2
    fi
    local target_dir="${CARGO_TARGET_DIR:-$ROOT/target}" bin
    SEGL="${SEGL_BIN:-$target_dir/release/segl}"
    LOAD="$target_dir/release/segl-load"
    for bin in "$SEGL" "$LOAD"; do
        [[ -x "$bin" ]] || { echo "$BENCH: $bin is missing (run without --no-build)" >&2; exit 1; }
    done
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_ready PID URL LOG SECONDS: waits for URL to answer; prints the seconds it took.
wait_ready() {
    local pid="$1" url="$2" log="$3" limit="$4" start now
    start="$(date +%s.%N)"
    while true; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$BENCH: the server exited before it was ready; its log:" >&2
            tail -n 30 "$log" >&2
            return 1
        fi
        if curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; then break; fi
        now="$(date +%s.%N)"
        if python3 -c "import sys; sys.exit(0 if $now - $start > $limit else 1)"; then
            echo "$BENCH: the server was not ready after $limit s" >&2
            return 1
        fi
        sleep 0.05
    done
    now="$(date +%s.%N)"
    python3 -c "print(round($now - $start, 3))"
}

# record KEY=VALUE... < JSON: appends the JSON object with the extra fields to $RESULTS.
record() {
    python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
for kv in sys.argv[1:]:
    k, v = kv.split("=", 1)
    try:
        v = json.loads(v)
    except ValueError:
        pass
    r[k] = v
print(json.dumps(r))
' "$@" >> "$RESULTS"
}
