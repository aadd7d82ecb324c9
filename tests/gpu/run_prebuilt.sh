#!/usr/bin/env bash
# run_prebuilt.sh — the GPU check with binaries built on a dev machine, for
# when compiling on the GPU machine is not possible or too slow. On the dev
# machine:  make BUILD=build-lead all, then copy slyced, slyctl and the test
# binaries (strip-debug) into build-gpucarry/ (see tests/gpu/RESULTS.md for
# the exact commands) and carry build-gpucarry and .gpu-debs. The binaries
# have /work/main/build-lead and /work/main/tests/fixtures compiled in, so
# this links those paths to the copy. Results go to $GPU_RESULTS_DIR.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root" || exit 1
out=${GPU_RESULTS_DIR:-tests/gpu/results}
mkdir -p "$out"
[ "$root" = /work/main ] || { mkdir -p /work && ln -sfn "$root" /work/main; }
ln -sfn "$root/build-gpucarry" "$root/build-lead"
rm -rf /tmp/sysroot && mkdir -p /tmp/sysroot
for f in .gpu-debs/*.deb; do dpkg -x "$f" /tmp/sysroot; done
T=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')
export LD_LIBRARY_PATH=/tmp/sysroot/usr/lib/x86_64-linux-gnu:/tmp/sysroot/lib/x86_64-linux-gnu:$T/lib:/usr/local/cuda/lib64
export OMP_NUM_THREADS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt" 2>&1
rc=0
for t in build-lead/tests/unit/test_*; do [ "${t%.d}" = "$t" ] || continue
  echo "== $t"; timeout 300 "$t" --jobs 4 --verbose 2>&1 | tail -n 40 || rc=1
done > "$out/unit.log" 2>&1
for t in build-lead/tests/integration/test_*; do [ "${t%.d}" = "$t" ] || continue
  echo "== $t (SLY_TEST_DEVICE=cuda:0)"
  SLY_TEST_DEVICE=cuda:0 timeout 300 "$t" --jobs 4 2>&1 | tail -n 40 || rc=1
done > "$out/gpu-forward.log" 2>&1
python3 tests/gpu/bench_gpu.py --slyced "$root/build-lead/slyced" --slyctl "$root/build-lead/slyctl" \
  --out "$out/bench-gpu" > "$out/bench-gpu.log" 2>&1 || rc=1
grep -h -E '^== |Synthesis|FAIL|skip' "$out/unit.log" "$out/gpu-forward.log"
tail -n 15 "$out/bench-gpu.log"
exit $rc
