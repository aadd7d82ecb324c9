#!/usr/bin/env bash
# tests/gpu/run.sh — the CUDA check, run on the GPU machine (no network, no
# package manager; see tests/gpu/RESULTS.md for how and what it found).
#
#   tests/gpu/run.sh              on the GPU machine: unpack .gpu-debs/ into a
#                                 private sysroot, build against PyTorch's own
#                                 libtorch with CUDA, run the integration tests,
#                                 the GPU tests and benchmark (make check-gpu /
#                                 make bench, when those targets exist) and a
#                                 CUDA smoke test through slyced and slyctl
#   tests/gpu/run.sh --rehearse   the same on a CPU machine (CUDA=no, device
#                                 cpu), to check the recipe before GPU time
#   tests/gpu/run.sh --fetch-debs on a machine that reaches Debian's mirror:
#                                 download the packages into .gpu-debs/
#
# Installs nothing: packages are unpacked with dpkg-deb -x into $SYSROOT and
# found through pkg-config's sysroot support and LD_LIBRARY_PATH. Full
# results go to ${GPU_RESULTS_DIR:-tests/gpu/results}; a table comes last.
# Knobs: GPU_RESULTS_DIR, SYSROOT (/tmp/sysroot), BUILD (build-gpu), PYTHON
# (python3), JOBS (nproc), STEP_TIMEOUT (seconds per step, 420), CUDA_HOME,
# RUN_BUDGET (seconds for the whole run, 0 = none: a step that would start
# with under 20 s left is skipped, and the others are cut to what is left, so
# that the table is written before an outer limit kills the run),
# SKIP_CPU_INTEGRATION=1 (leave the CPU integration tests to CI).
#
# Order: the build, then the GPU benchmark (what issue 5 asks for), then the
# GPU tests, the smoke test, make bench and, last, the integration tests on
# the CPU, which CI runs anyway.
# shellcheck disable=SC2317  # smoke() runs through run_step
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root" || exit 1

# What the GPU machine lacks. Criterion's runtime tree comes along so that
# the integration tests link; it is about 3 MB of .debs in all.
DEBS_BUILD=(libuv1 libuv1-dev libcjson1 libcjson-dev libsystemd0 libsystemd-dev)
DEBS_CRITERION=(libcriterion3 libcriterion-dev libgit2-1.5 libnanomsg5 libhttp-parser2.9
  libmbedcrypto7 libmbedtls14 libmbedx509-1 libssh2-1
  libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1)
# Libraries the build links directly: always taken from the sysroot, so the
# link does not depend on what the host happens to have.
DIRECT_SONAMES=(libuv.so.1 libcjson.so.1 libsystemd.so.0 libcriterion.so.3)
DEB_DIR=$root/.gpu-debs

mode=gpu
case ${1:-} in
  --fetch-debs) mode=fetch ;;
  --rehearse) mode=rehearse ;;
  "") ;;
  -h|--help) sed -n '2,/^set /p' "$0" | grep '^# ' | grep -v shellcheck; exit 0 ;;
  *) echo "usage: $0 [--fetch-debs | --rehearse]" >&2; exit 2 ;;
esac

if [ "$mode" = fetch ]; then
  # apt-get download writes into the current folder and needs no root.
  mkdir -p "$DEB_DIR" && cd "$DEB_DIR" || exit 1
  rm -f ./*.deb
  apt-get download "${DEBS_BUILD[@]}" "${DEBS_CRITERION[@]}" || {
    echo "fetch-debs: apt-get download failed (stale lists? run apt-get update)" >&2; exit 1; }
  echo "fetch-debs: $(find . -name '*.deb' | wc -l) packages, $(du -sh . | cut -f1) in $DEB_DIR"
  echo "fetch-debs: .gpu-debs/ is git-ignored; carry it to the GPU machine with the tree"
  exit 0
fi

SYSROOT=${SYSROOT:-/tmp/sysroot}
BUILD=${BUILD:-build-gpu}
PYTHON=${PYTHON:-python3}
JOBS=${JOBS:-$(nproc)}
STEP_TIMEOUT=${STEP_TIMEOUT:-420}
RUN_BUDGET=${RUN_BUDGET:-0}
run_t0=$(date +%s)
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
results=${GPU_RESULTS_DIR:-tests/gpu/results}
mkdir -p "$results" && results=$(cd "$results" && pwd) || exit 1
rm -f "$results"/*.log "$results"/*.txt "$results"/summary.md

# --- step bookkeeping -------------------------------------------------------
steps=() verdicts=() seconds=() notes=()
record() { steps+=("$1"); verdicts+=("$2"); seconds+=("$3"); notes+=("$4"); }
# step_limit: the seconds a step may run, STEP_TIMEOUT or what is left of
# RUN_BUDGET, whichever is less.
step_limit() {
  local left
  if [ "$RUN_BUDGET" -gt 0 ]; then
    left=$(( RUN_BUDGET - ($(date +%s) - run_t0) ))
    if [ "$left" -lt "$STEP_TIMEOUT" ]; then echo "$left"; return; fi
  fi
  echo "$STEP_TIMEOUT"
}
# out_of_time STEP: true (and STEP recorded as skipped) when RUN_BUDGET
# leaves under 20 s.
out_of_time() {
  [ "$(step_limit)" -ge 20 ] && return 1
  record "$1" SKIP 0 "RUN_BUDGET of ${RUN_BUDGET}s spent"
}
# run_step NAME LOG COMMAND...: runs COMMAND, output to LOG; a program runs
# under step_limit, a shell function bounds its own waits (with step_limit).
run_step() {
  local name=$1 log=$2 t0 rc limit; shift 2
  echo "== $name (log: $log)"
  t0=$(date +%s)
  limit=$(step_limit)
  if declare -F "$1" >/dev/null; then
    ("$@") >"$results/$log" 2>&1
  else
    timeout --kill-after=10 "$limit" "$@" >"$results/$log" 2>&1
  fi
  rc=$?
  step_rc=$rc step_s=$(( $(date +%s) - t0 ))
  [ $rc -eq 124 ] && echo "timed out after ${limit}s" >>"$results/$log"
  tail -n 5 "$results/$log" | sed 's/^/   /'
  return "$rc"
}
# criterion_totals LOG: sums Criterion's synthesis lines into one note.
criterion_totals() {
  sed -n 's/.*Synthesis: Tested: *\([0-9]*\) *| *Passing: *\([0-9]*\) *| *Failing: *\([0-9]*\) *| *Crashing: *\([0-9]*\).*/\1 \2 \3 \4/p' "$1" |
    awk '{t+=$1; p+=$2; f+=$3; c+=$4; n++}
         END { if (n) printf "%d binaries: tested %d, passing %d, failing %d, crashing %d", n, t, p, f, c;
               else printf "no Criterion synthesis line" }'
}
finish() {
  {
    echo "slyced GPU check ($mode), $(date -u '+%Y-%m-%d %H:%M UTC'), ${gpu_name:-no GPU}"
    echo
    echo "| step | result | seconds | note |"
    echo "| --- | --- | --- | --- |"
    local i
    for i in "${!steps[@]}"; do
      echo "| ${steps[$i]} | ${verdicts[$i]} | ${seconds[$i]} | ${notes[$i]} |"
    done
  } >"$results/summary.md"
  echo
  cat "$results/summary.md"
  local v
  for v in "${verdicts[@]}"; do [ "$v" = FAIL ] && exit 1; done
  exit 0
}

# --- machine ------------------------------------------------------------------
{
  echo "host: $(uname -srm), $(nproc) cores"
  head -n 1 /etc/os-release 2>/dev/null
  gcc --version 2>&1 | head -n 1
  "$CUDA_HOME/bin/nvcc" --version 2>&1 | tail -n 1
  "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
"available", torch.cuda.is_available())' 2>&1
  # The 2026-11-28 build there failed with C files finding C++'s <stdlib.h>:
  # what decides where headers come from, in case it happens again.
  echo "CC=${CC-} CXX=${CXX-} CPATH=${CPATH-} C_INCLUDE_PATH=${C_INCLUDE_PATH-} CPLUS_INCLUDE_PATH=${CPLUS_INCLUDE_PATH-}"
  echo "cc searches, for C:"
  cc -E -v -x c /dev/null -o /dev/null 2>&1 | sed -n '/search starts here/,/End of search/p'
} >"$results/env.txt"
# The Makefile names every include folder it needs; folders from these
# variables would come before the compiler's own and can shadow C's headers.
unset CPATH C_INCLUDE_PATH CPLUS_INCLUDE_PATH
if [ "$mode" = gpu ]; then
  if nvidia-smi >"$results/nvidia-smi.txt" 2>&1; then
    gpu_name=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -n 1)
    record machine PASS 0 "${gpu_name:-?}"
  else
    record machine FAIL 0 "nvidia-smi failed (see nvidia-smi.txt)"; finish
  fi
  [ -f "$CUDA_HOME/include/cuda_runtime.h" ] || {
    record machine FAIL 0 "no $CUDA_HOME/include/cuda_runtime.h (set CUDA_HOME=)"; finish; }
  cuda=yes device=cuda:0 strategy=limit_gpu
else
  record machine SKIP 0 "rehearsal: CUDA=no, device cpu"
  cuda=no device=cpu strategy=none
fi

# --- sysroot: unpack the carried packages ------------------------------------
unpack_deb() { # dpkg-deb when there is one, else ar + tar (binutils)
  if command -v dpkg-deb >/dev/null; then dpkg-deb -x "$1" "$SYSROOT"; return; fi
  local member; member=$(ar t "$1" | grep '^data\.tar') || return 1
  case $member in
    *.xz) ar p "$1" "$member" | tar -xJ -C "$SYSROOT" ;;
    *.zst) ar p "$1" "$member" | tar --zstd -x -C "$SYSROOT" ;;
    *.gz) ar p "$1" "$member" | tar -xz -C "$SYSROOT" ;;
    *) ar p "$1" "$member" | tar -x -C "$SYSROOT" ;;
  esac
}
make_sysroot() {
  local p f missing=() name host_has
  for p in "${DEBS_BUILD[@]}" "${DEBS_CRITERION[@]}"; do
    compgen -G "$DEB_DIR/${p}_*.deb" >/dev/null || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "missing from $DEB_DIR: ${missing[*]}; on a dev machine run: tests/gpu/run.sh --fetch-debs"
    return 1
  fi
  rm -rf "$SYSROOT" && mkdir -p "$SYSROOT/shadowed" || return 1
  for f in "$DEB_DIR"/*.deb; do echo "unpack $(basename "$f")"; unpack_deb "$f" || return 1; done
  # Transitive libraries the host already has stay the host's: Debian's copy
  # of e.g. libkrb5 would otherwise replace it for every program the tests
  # start. Only the sonames the build links directly always come from here.
  local ldcache; ldcache=$({ command -v ldconfig || echo /sbin/ldconfig; } | head -n 1)
  for f in "$SYSROOT"/lib/x86_64-linux-gnu/lib*.so.* "$SYSROOT"/usr/lib/x86_64-linux-gnu/lib*.so.*; do
    [ -e "$f" ] || continue
    name=$(basename "$f")
    printf '%s\n' "${DIRECT_SONAMES[@]}" | grep -qx "$name" && continue
    host_has=$("$ldcache" -p 2>/dev/null | awk -v n="$name" '$1 == n { print "yes"; exit }')
    if [ "$host_has" = yes ]; then echo "host has $name: using the host's"; mv "$f" "$SYSROOT/shadowed/"; fi
  done
}
t0=$(date +%s)
if make_sysroot >"$results/sysroot.log" 2>&1; then
  record sysroot PASS $(( $(date +%s) - t0 )) "$(find "$DEB_DIR" -name '*.deb' | wc -l) debs in $SYSROOT"
else
  tail -n 3 "$results/sysroot.log"
  record sysroot FAIL $(( $(date +%s) - t0 )) "see sysroot.log"; finish
fi
sysroot_libs=$SYSROOT/usr/lib/x86_64-linux-gnu:$SYSROOT/lib/x86_64-linux-gnu
export PKG_CONFIG_PATH=$SYSROOT/usr/lib/x86_64-linux-gnu/pkgconfig
export PKG_CONFIG_LIBDIR=$PKG_CONFIG_PATH # the host's own .pc files must not answer
export PKG_CONFIG_SYSROOT_DIR=$SYSROOT
pkg_config=pkg-config
if ! command -v pkg-config >/dev/null || [ "${GPU_PKG_CONFIG_SHIM:-0}" = 1 ]; then
  # No pkg-config there: answer the Makefile's three queries from the layout
  # the Debian packages unpack to.
  pkg_config=$SYSROOT/pkg-config-shim
  cat >"$pkg_config" <<EOF
#!/bin/sh
out=
for a in "\$@"; do
  case \$a in
    --cflags) c=1 ;; --libs) l=1 ;;
    libuv) [ -n "\${c:-}" ] && out="\$out -I$SYSROOT/usr/include"; [ -n "\${l:-}" ] && out="\$out -luv" ;;
    libcjson) [ -n "\${c:-}" ] && out="\$out -I$SYSROOT/usr/include/cjson"; [ -n "\${l:-}" ] && out="\$out -lcjson" ;;
    libsystemd) [ -n "\${c:-}" ] && out="\$out -I$SYSROOT/usr/include"; [ -n "\${l:-}" ] && out="\$out -lsystemd" ;;
    *) exit 1 ;;
  esac
done
[ -n "\${l:-}" ] && out="-L$SYSROOT/usr/lib/x86_64-linux-gnu \$out"
echo "\$out"
EOF
  chmod +x "$pkg_config"
fi

# --- build ------------------------------------------------------------------
torch_dir=$("$PYTHON" -c 'import torch,os;print(os.path.dirname(torch.__file__))' 2>/dev/null)
integ_bins=()
for f in tests/integration/test_*.c; do
  [ -e "$f" ] && integ_bins+=("$BUILD/tests/integration/$(basename "$f" .c)")
done
# Criterion's headers are not in pkg-config's answers; its library is found
# with -L at link time and LD_LIBRARY_PATH at run time (ld also reads it to
# resolve libcriterion's own dependencies).
make_args=(BUILD="$BUILD" TORCH_DIR="$torch_dir" CUDA="$cuda" CUDA_HOME="$CUDA_HOME"
  PKG_CONFIG="$pkg_config" CFLAGS="-isystem $SYSROOT/usr/include" CXXFLAGS="-isystem $SYSROOT/usr/include"
  LDFLAGS="-L$SYSROOT/usr/lib/x86_64-linux-gnu")
# A program prefix (not a function) so that timeout can run it.
with_sysroot=(env "LD_LIBRARY_PATH=$sysroot_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
if [ -z "$torch_dir" ] || [ ! -f "$torch_dir/include/torch/script.h" ]; then
  record build FAIL 0 "no libtorch: '$PYTHON -c \"import torch\"' failed (set PYTHON=)"; finish
fi
echo "libtorch: $torch_dir" >>"$results/env.txt"
if run_step build build.log "${with_sysroot[@]}" make -j"$JOBS" "${make_args[@]}" \
     "$BUILD/slyced" "$BUILD/slyctl" "${integ_bins[@]}"; then
  record build PASS "$step_s" "slyced, slyctl, ${#integ_bins[@]} integration tests (CUDA=$cuda)"
else
  record build FAIL "$step_s" "rc $step_rc, see build.log"; finish
fi

# --- the GPU benchmark (issue 5): slyced streaming 16 bfloat16 transformer
# layers against the copy and disk floors, PyTorch all resident and
# accelerate's offload (tests/gpu/bench_gpu.py); without a GPU a tiny
# rehearsal on the sim device.
gpu_bench() {
  local small=()
  [ "$mode" = gpu ] || small=(--small)
  # Unbuffered: a run cut short still shows how far each phase got.
  PYTHONUNBUFFERED=1 timeout --kill-after=10 "$(step_limit)" "${with_sysroot[@]}" \
    "$PYTHON" tests/gpu/bench_gpu.py "${small[@]}" \
    --slyced "$root/$BUILD/slyced" --slyctl "$root/$BUILD/slyctl" --out "$results/bench-gpu"
}
if out_of_time gpu-bench; then :
elif run_step gpu-bench gpu-bench.log gpu_bench; then
  record gpu-bench PASS "$step_s" "see bench-gpu/bench.md"
else
  record gpu-bench FAIL "$step_s" "rc $step_rc, see gpu-bench.log"
fi

# --- forward, tier and fault tests on the GPU --------------------------------
# The same tests, with every daemon they start on $device (harness.c:
# SLY_TEST_DEVICE; the tier tests then use it for their GPU tier instead of
# sim, tierkit.c), compared with PyTorch's CPU references.
gpu_forward() {
  local b rc=0 limit
  export LD_LIBRARY_PATH=$sysroot_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  for b in "$BUILD"/tests/integration/test_forward_* "$BUILD"/tests/integration/test_tiers_* \
           "$BUILD"/tests/integration/test_faults; do
    case $b in *.d) continue ;; esac
    [ -x "$b" ] || continue
    echo "== $b (SLY_TEST_DEVICE=$device)"
    limit=$(step_limit)
    [ "$limit" -gt 300 ] && limit=300
    [ "$limit" -lt 20 ] && { echo "RUN_BUDGET spent: stopping before $b"; return 1; }
    SLY_TEST_DEVICE=$device OMP_NUM_THREADS=1 timeout --kill-after=10 "$limit" "$b" --jobs 2 || rc=1
  done
  return "$rc"
}
if [ "$mode" != gpu ]; then
  record gpu-forward SKIP 0 "rehearsal: no GPU"
elif out_of_time gpu-forward; then :
elif run_step gpu-forward gpu-forward.log gpu_forward; then
  record gpu-forward PASS "$step_s" "$(criterion_totals "$results/gpu-forward.log")"
else
  record gpu-forward FAIL "$step_s" "rc $step_rc; $(criterion_totals "$results/gpu-forward.log")"
fi

# --- GPU unit tests and make bench: Makefile targets, when they exist --------
# A target that would run `make deps` is refused: nothing may install here.
make_target_step() { # make_target_step STEP TARGET LOG
  local step=$1 target=$2 log=$3
  out_of_time "$step" && return
  if ! grep -q "^$target:" Makefile; then
    record "$step" SKIP 0 "no '$target' target in the Makefile yet"; return
  fi
  if make -n "${make_args[@]}" "$target" 2>/dev/null | grep -q 'deps\.sh'; then
    record "$step" FAIL 0 "'make $target' would run make deps (network)"; return
  fi
  if run_step "$step" "$log" "${with_sysroot[@]}" make "${make_args[@]}" SLY_BENCH_DEVICE="$device" "$target"; then
    record "$step" PASS "$step_s" "$(criterion_totals "$results/$log"); see $log"
  else
    record "$step" FAIL "$step_s" "rc $step_rc, see $log"
  fi
}
make_target_step gpu-tests check-gpu gpu-tests.log

# --- smoke: one TorchScript slice served on the device, compared with PyTorch
smoke() {
  local sock i rc=0 slyctl=$root/$BUILD/slyctl
  # tmp and pid are global for the EXIT trap: run_step runs this function in
  # a subshell, whose exit reaps a daemon left running and the scratch files.
  tmp=$(mktemp -d /tmp/slyced-gpu.XXXXXX) || return 1
  pid=
  trap '[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
  sock=$tmp/slyced.sock
  # float32 on both sides; TF32 is off by default in libtorch for matmul.
  "$PYTHON" - "$tmp" <<'EOF' || return 1
import sys, torch, numpy as np
d = sys.argv[1]
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.GELU(), torch.nn.Linear(512, 128)).eval()
torch.jit.save(torch.jit.script(m), f"{d}/mlp.pt")
x = torch.randn(4, 256)
np.save(f"{d}/x.npy", x.numpy())
with torch.inference_mode():
    np.save(f"{d}/ref.npy", m(x).numpy())
print("fixture: mlp.pt, x.npy (4x256), ref.npy (4x128) from PyTorch on the CPU")
EOF
  cat >"$tmp/slyced.json" <<EOF
{ "socket": "$sock", "log": {"file": "$tmp/slyced.log", "level": "info", "console": true},
  "device": "$device", "gpu_strategy": "$strategy",
  $( [ "$device" = cpu ] || echo '"max_gpu_mem_mb": 4096, "gpu_reserve_mb": 512,' )
  "max_cpu_mem_mb": 4096, "disk_cache_path": "$tmp/cache",
  "slices": [{"name": "mlp", "constructor": "torchscript", "config": {"path": "$tmp/mlp.pt"}}] }
EOF
  cat "$tmp/slyced.json"
  "${with_sysroot[@]}" "$root/$BUILD/slyced" -c "$tmp/slyced.json" --foreground >"$results/slyced-smoke.txt" 2>&1 &
  pid=$!
  for i in $(seq 1 120); do
    [ -S "$sock" ] && timeout 10 "${with_sysroot[@]}" "$slyctl" -s "$sock" status >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { echo "slyced exited early (see slyced-smoke.txt)"; return 1; }
    sleep 0.5
  done
  # Every call is bounded: a hung daemon fails the step instead of the run.
  sly() { echo "\$ slyctl $*"; timeout 120 "${with_sysroot[@]}" "$slyctl" -s "$sock" "$@"; }
  sly status || rc=1
  sly activate mlp || rc=1
  sly forward mlp --in "$tmp/x.npy" --out "$tmp/y.npy" || rc=1
  "$PYTHON" - "$tmp" <<'EOF' || rc=1
import sys, numpy as np
d = sys.argv[1]
y, ref = np.load(f"{d}/y.npy"), np.load(f"{d}/ref.npy")
err = float(np.max(np.abs(y.astype(np.float64) - ref))) if y.shape == ref.shape else float("inf")
scale = max(1.0, float(np.max(np.abs(ref))))
print(f"forward: shape {y.shape} vs {ref.shape}, max abs error {err:.3g} (limit {1e-5 * scale:.3g})")
sys.exit(0 if err <= 1e-5 * scale else 1)
EOF
  sly --json list || rc=1
  sly --json stats || rc=1
  sly shutdown || rc=1
  for i in $(seq 1 90); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "slyced still running 45 s after shutdown: SIGKILL"; kill -KILL "$pid"; rc=1
  fi
  wait "$pid"; i=$?
  echo "slyced exit status $i"; [ "$i" -eq 0 ] || rc=1
  return "$rc"
}
if [ ! -x "$BUILD/slyced" ] || [ ! -x "$BUILD/slyctl" ]; then
  record smoke SKIP 0 "slyced or slyctl not built"
elif out_of_time smoke; then :
elif run_step smoke smoke.log smoke; then
  record smoke PASS "$step_s" "$(grep -m1 '^forward:' "$results/smoke.log" | cut -c10-)"
else
  record smoke FAIL "$step_s" "see smoke.log and slyced-smoke.txt"
fi

make_target_step bench bench bench.log

# --- integration tests --------------------------------------------------------
if [ ${#integ_bins[@]} -eq 0 ]; then
  record integration SKIP 0 "no tests/integration/test_*.c"
elif [ "${SKIP_CPU_INTEGRATION:-0}" = 1 ]; then
  record integration SKIP 0 "SKIP_CPU_INTEGRATION=1 (CI runs them on the CPU)"
elif out_of_time integration; then :
elif run_step integration integration.log "${with_sysroot[@]}" make "${make_args[@]}" check-integration; then
  record integration PASS "$step_s" "$(criterion_totals "$results/integration.log")"
else
  record integration FAIL "$step_s" "rc $step_rc; $(criterion_totals "$results/integration.log")"
fi

finish
