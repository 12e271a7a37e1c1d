#!/usr/bin/env bash
# foreign-root.sh ARCH APT_STATE OUT PKG...: Debian's packages for ARCH
# (crun, busybox-static, libc6 ...) with everything they depend on, unpacked
# under OUT: where a cross build finds the guest's binaries and, since ldd
# cannot run foreign binaries, their libraries (needed-libs.sh). Nothing is
# installed on the host.
set -euo pipefail
arch=$1 state=$(realpath -m "$2") out=$(realpath -m "$3")
shift 3
here=$(cd "$(dirname "$0")" && pwd)
apt() { "$here/apt-arch.sh" "$arch" "$state" "$@"; }
# Depends and Pre-Depends, recursively; virtual packages (<...>) are
# provided by a real one that is in the list too.
pkgs=$(apt apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances "$@" |
  awk '/^[a-z0-9]/ {print $1} /(Pre)?Depends: [a-z0-9]/ {print $2}' | sed 's/:.*//' | sort -u |
  grep -v -x -e libelogind0 -e libelogind-compat)  # elogind's libsystemd.so.0 would replace systemd's own
rm -rf "$out.tmp" && mkdir -p "$out.tmp/debs"
(cd "$out.tmp/debs" && apt apt-get download $(for p in $pkgs; do echo "$p:$arch"; done) >&2)
for deb in "$out.tmp"/debs/*.deb; do dpkg-deb -x "$deb" "$out.tmp/root"; done
rm -rf "$out" && mv "$out.tmp/root" "$out" && rm -rf "$out.tmp"
echo "foreign root ($arch): $(echo $pkgs | wc -w) packages in $out"
