#!/usr/bin/env bash
# Puts a kernel and its modules under OUT: OUT/vmlinuz, OUT/modules/ (the
# lib/modules/VERSION tree) and OUT/version. Either the user's
# (KERNEL=path/to/bzImage MODULES=path/to/lib/modules/VERSION), or Debian's
# stock linux-image-$ARCH (amd64 unless ARCH=arm64), fetched with apt-get
# download and unpacked here, never installed on the host. A foreign ARCH
# uses package lists of its own (apt-arch.sh).
set -euo pipefail
out=$(realpath -m "$1")
rm -rf "$out.tmp"
mkdir -p "$out.tmp"
if [ -n "${KERNEL:-}" ]; then
  [ -f "$KERNEL" ] || { echo "kernel.sh: KERNEL=$KERNEL does not exist" >&2; exit 1; }
  [ -n "${MODULES:-}" ] && [ -d "$MODULES" ] || { echo "kernel.sh: with KERNEL=, give MODULES=/path/to/lib/modules/VERSION" >&2; exit 1; }
  cp "$KERNEL" "$out.tmp/vmlinuz"
  cp -a "$MODULES" "$out.tmp/modules"
  basename "$MODULES" > "$out.tmp/version"
else
  arch=${ARCH:-amd64}
  here=$(cd "$(dirname "$0")" && pwd)
  if [ "$arch" = "$(dpkg --print-architecture)" ]; then
    apt_get() { apt-get -o APT::Sandbox::User=root -qq "$@"; }
    apt_cache() { apt-cache "$@"; }
  else
    apt_get() { "$here/apt-arch.sh" "$arch" "${APT_STATE:-$out.apt}" apt-get "$@"; }
    apt_cache() { "$here/apt-arch.sh" "$arch" "${APT_STATE:-$out.apt}" apt-cache "$@"; }
  fi
  # The metapackage names the current kernel package in its dependencies.
  pkg=$(apt_cache depends "linux-image-$arch" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  if [ -z "$pkg" ]; then
    apt_get update
    pkg=$(apt_cache depends "linux-image-$arch" | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  fi
  [ -n "$pkg" ] || { echo "kernel.sh: cannot find Debian's linux-image-$arch" >&2; exit 1; }
  (cd "$out.tmp" && apt_get download "$pkg")
  dpkg-deb -x "$out.tmp"/"$pkg"_*.deb "$out.tmp/root"
  version=$(ls "$out.tmp/root/lib/modules")
  cp "$out.tmp/root/boot/vmlinuz-$version" "$out.tmp/vmlinuz"
  mv "$out.tmp/root/lib/modules/$version" "$out.tmp/modules"
  echo "$version" > "$out.tmp/version"
  rm -rf "$out.tmp/root" "$out.tmp"/*.deb
fi
rm -rf "$out"
mv "$out.tmp" "$out"
echo "kernel: $(cat "$out/version")"
