#!/usr/bin/env bash
# check_units.sh BUILT_SLYCED_PATH — checks slyced.service and slyced.socket
# without a running systemd: `systemd-analyze verify` on copies whose
# ExecStart points at the built binary, `systemd-analyze security
# --offline=yes` against an exposure ceiling, and the settings DESIGN.md
# requires of the units. Prints one line per check, then "N passed, N failed".
# Run by `make check-units`.
# The bash -c '...' bodies expand "$1" in the child on purpose, and the
# functions run through check():
# shellcheck disable=SC2016,SC2317
set -uo pipefail

# Measured 0.9 with systemd 252 (Debian 12). Anything that loosens the
# sandbox by more than half a point is a regression someone must look at.
EXPOSURE_MAX=${EXPOSURE_MAX:-1.4}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
service_src=$root/slyced.service
socket_src=$root/slyced.socket

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "PASS $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; }
check() { # check NAME COMMAND...: counts COMMAND's success as a pass
  local name=$1; shift
  if "$@"; then pass "$name"; else fail "$name"; fi
}
summary() { echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit $?; }

if [ $# -ne 1 ]; then
  echo "usage: $0 BUILT_SLYCED_PATH" >&2
  exit 2
fi
slyced_bin=$1
case $slyced_bin in /*) ;; *) slyced_bin=$PWD/$slyced_bin ;; esac

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "systemd-analyze not found: 'make deps' installs it (Debian package systemd)" >&2
  fail "systemd-analyze present"
  summary
fi

# Stable, uncoloured, unpaged output whatever the caller's terminal is.
export SYSTEMD_COLORS=0 SYSTEMD_PAGER=cat SYSTEMD_LOG_COLOR=0 LC_ALL=C.UTF-8

tmp=$(mktemp -d "${TMPDIR:-/tmp}/slyced-units.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

# --- Static checks on the unit text (as shipped) ----------------------------

# unit_value FILE KEY: the last assignment of KEY (systemd's rule for
# single-valued keys), comments and indentation ignored.
unit_value() {
  sed -n "s/^[[:space:]]*$2[[:space:]]*=[[:space:]]*//p" "$1" | tail -n 1 | sed 's/[[:space:]]*$//'
}
unit_values() { sed -n "s/^[[:space:]]*$2[[:space:]]*=[[:space:]]*//p" "$1"; }

check "service file exists" test -f "$service_src"
check "socket file exists" test -f "$socket_src"
if [ ! -f "$service_src" ] || [ ! -f "$socket_src" ]; then summary; fi

check "Type=notify" test "$(unit_value "$service_src" Type)" = notify
check "NotifyAccess=main" test "$(unit_value "$service_src" NotifyAccess)" = main
watchdog=$(unit_value "$service_src" WatchdogSec)
check "WatchdogSec set and non-zero ($watchdog)" \
  bash -c '[[ $1 =~ ^[1-9][0-9]*(s|min)?$ ]]' _ "$watchdog"
check "Restart=on-failure" test "$(unit_value "$service_src" Restart)" = on-failure
check "ExecStart is /usr/local/bin/slyced (make install rewrites it)" \
  bash -c '[[ $1 == /usr/local/bin/slyced\ * ]]' _ "$(unit_value "$service_src" ExecStart)"
check "ExecReload sends SIGHUP" \
  bash -c '[[ $1 == *kill\ -HUP\ \$MAINPID ]]' _ "$(unit_value "$service_src" ExecReload)"
check "DevicePolicy=closed" test "$(unit_value "$service_src" DevicePolicy)" = closed
for group in char-nvidia-frontend char-nvidia char-nvidia-uvm; do
  check "DeviceAllow=$group rw" \
    bash -c 'printf "%s\n" "$1" | grep -qx "$2 rwm\?"' _ "$(unit_values "$service_src" DeviceAllow)" "$group"
done
check "PrivateDevices absent (it would hide /dev/nvidia*)" \
  bash -c '! grep -q "^[[:space:]]*PrivateDevices[[:space:]]*=" "$1"' _ "$service_src"
check "MemoryDenyWriteExecute absent (CUDA JIT needs W+X)" \
  bash -c '! grep -q "^[[:space:]]*MemoryDenyWriteExecute[[:space:]]*=[[:space:]]*\(yes\|true\|1\|on\)" "$1"' _ "$service_src"
check "RestrictAddressFamilies=AF_UNIX" test "$(unit_value "$service_src" RestrictAddressFamilies)" = AF_UNIX
check "NoNewPrivileges=yes" test "$(unit_value "$service_src" NoNewPrivileges)" = yes
check "ProtectSystem=strict" test "$(unit_value "$service_src" ProtectSystem)" = strict
check "RuntimeDirectory=slyced (holds the socket)" test "$(unit_value "$service_src" RuntimeDirectory)" = slyced
check "ListenStream=/run/slyced/slyced.sock" \
  test "$(unit_value "$socket_src" ListenStream)" = /run/slyced/slyced.sock
check "SocketMode=0660" test "$(unit_value "$socket_src" SocketMode)" = 0660
check "SocketGroup=slyce" test "$(unit_value "$socket_src" SocketGroup)" = slyce
check "socket activates slyced.service" test "$(unit_value "$socket_src" Service)" = slyced.service

# expand_filter SPEC...: the syscalls that a list of names and @groups means.
expand_filter() {
  local item
  for item in "$@"; do
    case $item in
      @*) systemd-analyze syscall-filter "$item" 2>/dev/null |
            sed -n '2,$ s/^[[:space:]]*\([-@a-z0-9_]\+\)[[:space:]]*$/\1/p' |
            while read -r sub; do expand_filter "$sub"; done ;;
      *) echo "$item" ;;
    esac
  done
}
# memfd_create must survive every SystemCallFilter= line: allow-lists (the
# first one decides the mode) and ~deny-lists alike.
# (grep without -q: an early exit would SIGPIPE expand_filter, and pipefail
# would count that as a failure.)
memfd_allowed() {
  local line allow=0 listed
  while read -r line; do
    if [[ $line == ~* ]]; then
      # shellcheck disable=SC2086  # the line is a space-separated list
      expand_filter ${line#\~} | grep -x memfd_create >/dev/null && return 1
    else
      allow=1
      # shellcheck disable=SC2086
      expand_filter $line | grep -x memfd_create >/dev/null && listed=1
    fi
  done < <(unit_values "$service_src" SystemCallFilter)
  [ "$allow" -eq 0 ] || [ "${listed:-0}" -eq 1 ]
}
check "SystemCallFilter allows memfd_create" memfd_allowed

# --- systemd-analyze verify on copies ---------------------------------------

check "built slyced is executable ($slyced_bin)" test -x "$slyced_bin"
[ -x "$slyced_bin" ] || summary

# Copies under their own names (verify derives the unit name from the file
# name), pointing at the built binary. User=/Group= stay: verify does not
# resolve users, so a host without the slyced user still checks cleanly.
sed -e "s|/usr/local/bin/slyced|$slyced_bin|g" "$service_src" >"$tmp/slyced.service"
cp "$socket_src" "$tmp/slyced.socket"
if [ ! -x /bin/kill ] && kill_bin=$(type -P kill); then
  sed -i "s|^ExecReload=/bin/kill |ExecReload=$kill_bin |" "$tmp/slyced.service"
fi

# verify exits 0 on many mistakes (unknown keys, unparsable values are
# "ignoring" warnings), so any line naming one of our units is a failure;
# --recursive-errors=no keeps faults of the host's units out of our result.
# It needs no running systemd and no /run/systemd.
verify_out=$tmp/verify.out
(cd "$tmp" && systemd-analyze verify --man=no --generators=no --recursive-errors=no \
   ./slyced.service ./slyced.socket) >"$verify_out" 2>&1
verify_rc=$?
sed 's/^/  verify: /' "$verify_out"
check "systemd-analyze verify exits 0" test "$verify_rc" -eq 0
check "systemd-analyze verify reports nothing about our units" \
  bash -c '! grep -q "slyced\.\(service\|socket\)" "$1"' _ "$verify_out"

# --- systemd-analyze security --offline ------------------------------------

security_out=$tmp/security.out
(cd "$tmp" && systemd-analyze security --no-pager --offline=yes ./slyced.service) >"$security_out" 2>&1
security_rc=$?
exposure_line=$(grep 'Overall exposure level' "$security_out" | tail -n 1)
exposure=$(printf '%s\n' "$exposure_line" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9][0-9.]*\).*/\1/p')
if [ "$security_rc" -ne 0 ] || [ -z "$exposure" ]; then
  sed 's/^/  security: /' "$security_out"
fi
echo "  security: ${exposure_line:-no exposure line}"
check "systemd-analyze security --offline=yes exits 0" test "$security_rc" -eq 0
check "exposure ${exposure:-?} <= $EXPOSURE_MAX" \
  awk -v e="${exposure:-99}" -v m="$EXPOSURE_MAX" 'BEGIN { exit !(e + 0 <= m + 0) }'

summary
