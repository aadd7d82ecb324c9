#!/usr/bin/env bash
# deps.sh — installs what slyced needs and is missing: Debian's packages with
# apt-get (printing the commands instead when not root) and PyTorch's wheel,
# pinned, in a virtual environment outside the tree that every clone reuses.
# Called by `make deps`; safe to run again (it does nothing when all is there).
set -euo pipefail

VENV=${VENV:-$HOME/.cache/slyced/venv}
TORCH_VERSION=${TORCH_VERSION:-2.11.0}
TORCH_DIR=${TORCH_DIR:-}
VENV_MIN_FREE_GB=${VENV_MIN_FREE_GB:-12}

# clang and its runtime (libclang-rt-dev: libFuzzer, the sanitizers) build
# the fuzz targets of tests/fuzz/.
pkgs=(gcc g++ make pkg-config libuv1-dev libcjson-dev libsystemd-dev
      libcriterion-dev systemd clang libclang-rt-dev)
# python3 may come from elsewhere (pyenv): then only its venv module matters.
if ! { command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null; }; then
  pkgs+=(python3 python3-venv)
fi

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  cmds=()
  # An unknown package (no candidate) means the lists are stale or absent.
  for p in "${missing[@]}"; do
    if ! apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
      cmds+=("apt-get update"); break
    fi
  done
  cmds+=("apt-get install -y --no-install-recommends ${missing[*]}")
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing Debian packages: ${missing[*]}; as root run:" >&2
    printf '  %s\n' "${cmds[@]}" >&2
    exit 1
  fi
  for c in "${cmds[@]}"; do
    echo "deps: $c"
    DEBIAN_FRONTEND=noninteractive $c
  done
fi

if [ -n "$TORCH_DIR" ]; then
  [ -f "$TORCH_DIR/include/torch/script.h" ] || {
    echo "deps: TORCH_DIR=$TORCH_DIR holds no libtorch (include/torch/script.h)" >&2; exit 1; }
  echo "deps: using libtorch in $TORCH_DIR"
  exit 0
fi

check_torch='import torch,sys; sys.exit(torch.__version__.split("+")[0] != "'"$TORCH_VERSION"'")'
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "$check_torch" 2>/dev/null; then
  echo "deps: torch $TORCH_VERSION already in $VENV"
  exit 0
fi

parent=$(dirname "$VENV")
mkdir -p "$parent"
free_gb=$(df -Pk "$parent" | awk 'NR==2 {print int($4 / 1048576)}')
if [ "$free_gb" -lt "$VENV_MIN_FREE_GB" ]; then
  echo "deps: $parent has ${free_gb} GiB free; torch $TORCH_VERSION needs about $VENV_MIN_FREE_GB GiB" \
       "(set VENV= to another disk, or TORCH_DIR= to an existing libtorch)" >&2
  exit 1
fi
echo "deps: installing torch $TORCH_VERSION into $VENV (a few GB, once for every clone)"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet "torch==$TORCH_VERSION" numpy
"$VENV/bin/python" -c "$check_torch"
