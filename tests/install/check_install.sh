#!/usr/bin/env bash
# check_install.sh — `make install` into a scratch DESTDIR, then checks what a
# packager and a user of libslyce rely on: every file in place, the unit's
# ExecStart rewritten to PREFIX, slyce.pc usable, and a program built against
# the installed header and library (shared and static) that runs.
# Usage: tests/install/check_install.sh BUILD_DIR
set -u
build=${1:?usage: check_install.sh BUILD_DIR}
root=$(mktemp -d /tmp/slyce-install.XXXXXX)
trap 'rm -rf "$root"' EXIT
prefix=/opt/slyce
pass=0 fail=0
check() { # NAME COMMAND...
  local name=$1; shift
  if "$@" >"$root/out" 2>&1; then pass=$((pass + 1)); echo "ok   $name"
  else fail=$((fail + 1)); echo "FAIL $name"; sed 's/^/     /' "$root/out" | tail -20; fi
}

check "make install" make --no-print-directory -s install BUILD="$build" DESTDIR="$root/dest" PREFIX=$prefix
d=$root/dest$prefix
for f in bin/slyced bin/slyctl include/slyce.h lib/libslyce.a lib/libslyce.so.0 lib/libslyce.so \
         lib/pkgconfig/slyce.pc lib/systemd/system/slyced.service lib/systemd/system/slyced.socket \
         lib/sysusers.d/slyced.conf share/slyced/slyced.json share/slyced/production.json \
         share/slyced/README.md; do
  check "installed $f" test -e "$d/$f"
done
check "ExecStart points at PREFIX" grep -q "^ExecStart=$prefix/bin/slyced " "$d/lib/systemd/system/slyced.service"
check "libslyce.so exports only sly_ symbols" \
  bash -c "! nm -D --defined-only '$d/lib/libslyce.so.0' | awk '{print \$3}' | grep -v '^sly_[a-z]'"

cat >"$root/prog.c" <<'C'
#include <slyce.h>
#include <stdio.h>
#include <string.h>
int main(void) {
  sly_conn *c = NULL;
  sly_error err;
  /* No daemon at this path: the error must come back as a value. */
  int r = sly_connect("/nonexistent/slyced.sock", &c, &err);
  printf("%s %s\n", sly_code_name(r), sly_code_name(SLY_E_BUSY));
  return r == SLY_E_IO && c == NULL && strcmp(sly_code_name(SLY_E_BUSY), "BUSY") == 0 ? 0 : 1;
}
C
pc="pkg-config --define-variable=prefix=$d"
export PKG_CONFIG_PATH=$d/lib/pkgconfig
check "pkg-config knows slyce" $pc --exists slyce
check "build against the shared library" \
  bash -c "cc -Wall -Werror \$($pc --cflags slyce) '$root/prog.c' -o '$root/prog' \$($pc --libs slyce) -Wl,-rpath,$d/lib"
check "run it" "$root/prog"
check "build against the static library" \
  bash -c "cc -Wall -Werror \$($pc --cflags slyce) '$root/prog.c' -o '$root/prog_static' '$d/lib/libslyce.a' \$(pkg-config --libs libcjson)"
check "run it (static)" "$root/prog_static"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
