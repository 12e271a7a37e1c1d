#!/usr/bin/env bash
# Builds the minimal initramfs: one static init that prints a marker.
# usage: marker.sh OUT.cpio
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(realpath -m "$1")
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
(cd "$here" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -buildvcs=false -ldflags=-buildid= -o "$root/init" ./marker)
mkdir -p "$root/dev"
# The kernel opens /dev/console for init's stdio before anything is mounted.
mknod -m 600 "$root/dev/console" c 5 1
chmod 755 "$root"
touch -h -d @0 "$root/init" "$root/dev/console" "$root/dev" "$root"
(cd "$root" && printf '.\ndev\ndev/console\ninit\n' | cpio --quiet -o -H newc --reproducible -R 0:0 > "$out.tmp")
mv "$out.tmp" "$out"
