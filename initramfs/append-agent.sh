#!/usr/bin/env bash
# The self-contained initramfs (hardware, network boot, measured boot):
# the archive built without the agent (build.sh with AGENT_OUTSIDE=1) with a
# second newc archive holding /bin/fractal-agent after it. The kernel
# unpacks concatenated archives in turn, so one u-root build serves both.
# Fixed owner and timestamp, so two builds are byte-identical.
#
# usage: append-agent.sh BASE.cpio AGENT OUT.cpio
set -euo pipefail
base=$(realpath "$1")
agent=$(realpath "$2")
out=$(realpath -m "$3")
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir "$root/bin"
cp "$agent" "$root/bin/fractal-agent"
chmod 755 "$root/bin/fractal-agent"
touch -d @0 "$root/bin/fractal-agent"
cp "$base" "$out.tmp"
(cd "$root" && printf 'bin/fractal-agent\n' | cpio --quiet -o -H newc --reproducible -R 0:0 >> "$out.tmp")
mv "$out.tmp" "$out"
