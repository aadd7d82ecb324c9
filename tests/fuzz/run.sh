#!/usr/bin/env bash
# run.sh FUZZ_DIR MODE LIMIT [TARGET...] — runs the libFuzzer targets built in
# FUZZ_DIR ($(BUILD)/fuzz), one job each, one after the other, each on a
# fresh copy of its seed corpus (tests/fuzz/corpus/TARGET, never written to)
# with its dictionary (tests/fuzz/TARGET.dict).
#
#   MODE smoke: LIMIT inputs per target, 10 s at most (make check-fuzz);
#   MODE time:  LIMIT seconds per target (make fuzz).
#
# Either way every file of the corpus runs first, so an input that once
# crashed a target (kept there as crash-*) is tried again each time.
#
# A crash, a sanitizer report, a broken invariant, a leak or a timeout fails
# the run: the input lands in FUZZ_DIR/artifacts/TARGET-*, the whole log in
# FUZZ_DIR/logs/TARGET.log, and its last lines are printed. New inputs found
# stay in FUZZ_DIR/work/TARGET (see README.md to merge them into the tree).
set -euo pipefail

if [ $# -lt 3 ]; then
  echo "usage: $0 FUZZ_DIR smoke|time LIMIT [TARGET...]" >&2
  exit 2
fi
dir=$1 mode=$2 limit=$3
shift 3
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(request tensor config npy safetensors)

case $mode in
  smoke) limits=(-runs="$limit" -max_total_time=10) ;;
  time) limits=(-max_total_time="$limit") ;;
  *) echo "run.sh: MODE is smoke or time, not '$mode'" >&2; exit 2 ;;
esac

# Leaks fail the run; UBSan is built non-recoverable, so it aborts anyway.
export ASAN_OPTIONS=detect_leaks=1
export LSAN_OPTIONS=suppressions=$root/tests/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

mkdir -p "$dir/artifacts" "$dir/logs"
for t in "${targets[@]}"; do
  bin=$dir/fuzz_$t
  [ -x "$bin" ] || { echo "run.sh: $bin is not built" >&2; exit 1; }
  work=$dir/work/$t
  rm -rf "$work"
  mkdir -p "$work"
  cp "$root/tests/fuzz/corpus/$t/"* "$work/"
  log=$dir/logs/$t.log
  start=$(date +%s)
  if ! "$bin" "$work" -dict="$root/tests/fuzz/$t.dict" -timeout=10 \
      -artifact_prefix="$dir/artifacts/$t-" -print_final_stats=1 \
      "${limits[@]}" >"$log" 2>&1; then
    echo "FAIL fuzz_$t (log: $log)" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  # "#N DONE cov: C ft: F corp: ..." and the final stats.
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
  eps=$(sed -n 's/^stat::average_exec_per_sec:[[:space:]]*//p' "$log")
  secs=$(($(date +%s) - start))
  echo "ok   fuzz_$t: $secs s, ${eps:-?} execs/s, ${done_line:-no DONE line}"
done
