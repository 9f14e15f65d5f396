#!/usr/bin/env bash
# Fuzzes every cargo-fuzz target in fuzz/ for a bounded time: scripts/fuzz.sh [SECONDS]
# (default 60 seconds per target; FUZZ_TARGETS="jws dpop" for a subset).
#
# cargo-fuzz needs nightly compiler flags (-Z sanitizer, -C passes=sancov); a stable toolchain
# accepts them with RUSTC_BOOTSTRAP=1, which this script sets for its own cargo calls only.
# Each target starts from its seeds in fuzz/corpus/<target>/ (and fuzz/regressions/<target>/);
# what it finds on the way goes to fuzz/work/<target>/ (not checked in), its log to
# fuzz/work/<target>.log. A crash stops that target, the script goes on with the others and
# exits non-zero at the end, naming the crashing input under fuzz/artifacts/<target>/.
# Replay one with: RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <artifact>
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
case "$seconds" in '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;; esac

export RUSTC_BOOTSTRAP=1
# cargo fuzz finds its binaries under fuzz/target; a global target directory would hide them.
unset CARGO_TARGET_DIR
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "Installing cargo-fuzz…"
  cargo install cargo-fuzz --locked
fi

targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
echo "Building the fuzz targets…"
cargo fuzz build

failed=()
printf '%-18s %12s %10s %8s %6s %s\n' target executions exec/s cov ft result
for t in $targets; do
  mkdir -p "fuzz/work/$t" "fuzz/artifacts/$t"
  seeds=("fuzz/corpus/$t")
  [ -d "fuzz/regressions/$t" ] && seeds+=("fuzz/regressions/$t")
  log="fuzz/work/$t.log"
  result=ok
  if ! cargo fuzz run "$t" "fuzz/work/$t" "${seeds[@]}" -- \
      -max_total_time="$seconds" -max_len=8192 -dict=fuzz/jose.dict -print_final_stats=1 \
      >"$log" 2>&1; then
    result=CRASH
    failed+=("$t")
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(printf '%s' "$last" | sed -nE 's/.* cov: ([0-9]+).*/\1/p')
  ft=$(printf '%s' "$last" | sed -nE 's/.* ft: ([0-9]+).*/\1/p')
  printf '%-18s %12s %10s %8s %6s %s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$result"
  if [ "$result" = CRASH ]; then
    grep -E 'panicked at|Test unit written to|^SUMMARY' "$log" | sed 's/^/    /' || true
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "Crashes in: ${failed[*]} (inputs under fuzz/artifacts/, logs under fuzz/work/)." >&2
  echo "Add each input to fuzz/regressions/<target>/ once fixed: cargo test replays them." >&2
  exit 1
fi
echo "No crashes in $seconds s per target."
