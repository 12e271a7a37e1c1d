#!/usr/bin/env bash
# needed-libs.sh ROOT BINARY...: the shared libraries BINARY needs (its ELF
# interpreter and DT_NEEDED, transitively), found under ROOT, as u-root
# -files pairs REALFILE:PATH-IN-IMAGE. What ldd does for native binaries,
# for foreign ones, by reading the ELF headers instead of running them.
set -euo pipefail
root=$(realpath "$1")
shift
dirs=(lib/aarch64-linux-gnu usr/lib/aarch64-linux-gnu lib/x86_64-linux-gnu usr/lib/x86_64-linux-gnu lib64 lib usr/lib)
declare -A seen
queue=()
emit() { # PATH-IN-IMAGE
  [ -n "${seen[$1]:-}" ] && return
  seen[$1]=1
  local file="$root/$1"
  [ -e "$file" ] || { echo "needed-libs.sh: $1 is not under $root" >&2; exit 1; }
  echo "$(realpath "$file"):$1"
  queue+=("$file")
}
find_lib() { # SONAME
  for d in "${dirs[@]}"; do
    if [ -e "$root/$d/$1" ]; then echo "$d/$1"; return; fi
  done
  echo "needed-libs.sh: no $1 under $root (${dirs[*]})" >&2
  exit 1
}
for bin in "$@"; do queue+=("$bin"); done
while [ ${#queue[@]} -gt 0 ]; do
  f=${queue[0]}
  queue=("${queue[@]:1}")
  interp=$(readelf -lW "$f" | sed -n 's/.*Requesting program interpreter: \/\(.*\)]/\1/p')
  [ -n "$interp" ] && emit "$interp"
  for so in $(readelf -dW "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    emit "$(find_lib "$so")"
  done
done
