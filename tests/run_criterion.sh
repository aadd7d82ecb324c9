#!/usr/bin/env bash
# Runs Criterion test binaries one after the other, each with FLAGS, and
# stops at the first that fails.
#
#   tests/run_criterion.sh "FLAGS" BINARY...
#
# A binary that has not ended after SLY_TEST_BINARY_TIMEOUT seconds (600) is
# killed and run once more. Criterion's own per-test timeouts end a test
# that hangs, so what this catches is its runner hanging before a test
# starts: it forks its sandboxes while a thread of its own (nanomsg's) may
# hold an allocator lock, and under AddressSanitizer (GCC 12's, which takes
# no such lock around fork) the child then spins on it forever
# (google/sanitizers#774). Seen once in some 260 sanitized binary runs. A
# second timeout fails.
set -u
flags=$1
shift
limit=${SLY_TEST_BINARY_TIMEOUT:-600}

for t in "$@"; do
  for try in 1 2; do
    echo "== $t"
    # shellcheck disable=SC2086 # FLAGS is a list of options
    timeout -k 10 "$limit" "$t" $flags
    rc=$?
    if [ "$rc" -ne 124 ] && [ "$rc" -ne 137 ]; then
      break
    fi
    echo "== $t: still running after ${limit} s, killed" >&2
    if [ "$try" -eq 2 ]; then
      exit 1
    fi
    echo "== $t: once more (a Criterion runner hang, see tests/run_criterion.sh)" >&2
  done
  [ "$rc" -eq 0 ] || exit "$rc"
done
