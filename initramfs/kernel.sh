#!/usr/bin/env bash
# Puts a kernel and its modules under OUT: OUT/vmlinuz, OUT/modules/ (the
# lib/modules/VERSION tree) and OUT/version. Either the user's
# (KERNEL=path/to/bzImage MODULES=path/to/lib/modules/VERSION), or Debian's
# stock linux-image-amd64, fetched with apt-get download and unpacked here,
# never installed on the host.
set -euo pipefail
out=$1
rm -rf "$out.tmp"
mkdir -p "$out.tmp"
if [ -n "${KERNEL:-}" ]; then
  [ -f "$KERNEL" ] || { echo "kernel.sh: KERNEL=$KERNEL does not exist" >&2; exit 1; }
  [ -n "${MODULES:-}" ] && [ -d "$MODULES" ] || { echo "kernel.sh: with KERNEL=, give MODULES=/path/to/lib/modules/VERSION" >&2; exit 1; }
  cp "$KERNEL" "$out.tmp/vmlinuz"
  cp -a "$MODULES" "$out.tmp/modules"
  basename "$MODULES" > "$out.tmp/version"
else
  apt_opts=(-o APT::Sandbox::User=root -qq)
  # The metapackage names the current kernel package in its dependencies.
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  if [ -z "$pkg" ]; then
    apt-get update -qq
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  fi
  [ -n "$pkg" ] || { echo "kernel.sh: cannot find Debian's linux-image-amd64" >&2; exit 1; }
  (cd "$out.tmp" && apt-get download "${apt_opts[@]}" "$pkg")
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
