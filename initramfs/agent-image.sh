#!/usr/bin/env bash
# Puts the agent on a read-only erofs image, for VMs: QEMU attaches it as
# virtio-pmem (x86 guests) or a virtio disk (serial "fractal-agent") and the
# guest's supervisor mounts it, so the kernel need not unpack the agent (most
# of the archive) into RAM at every boot, and pages of it the guest never
# runs are never read.
# Uncompressed: under emulation, decompressing costs more than reading.
# Fixed timestamp and UUID, so two builds are byte-identical.
#
# usage: agent-image.sh AGENT OUT.erofs
set -euo pipefail
agent=$(realpath "$1")
out=$(realpath -m "$2")
command -v mkfs.erofs >/dev/null || { echo "agent-image.sh: mkfs.erofs not found (apt-get install erofs-utils)" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
cp "$agent" "$root/fractal-agent"
chmod 755 "$root/fractal-agent" "$root"
# A new file, renamed into place: a running VM keeps reading the image it booted.
# The UUID is also how the guest tells the image on a pmem device (no serial there).
mkfs.erofs --quiet --all-root -T0 -U 66726163-7461-6c00-0000-000000000001 "$out.tmp" "$root" >/dev/null
# A whole number of 2 MiB: QEMU's virtio-pmem maps the file as guest memory,
# and Linux maps a pmem region's pages (DAX) in 2 MiB subsections.
truncate -s %2M "$out.tmp"
mv "$out.tmp" "$out"
