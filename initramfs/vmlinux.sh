#!/usr/bin/env bash
# vmlinux.sh BZIMAGE OUT: the kernel inside a bzImage, unpacked to its ELF
# file. QEMU enters an ELF kernel at its PVH entry point directly; a bzImage
# goes through SeaBIOS's loader and the kernel's own decompressor, which under
# TCG cost ~4.5 s per boot (bench-boot). The compressed payload is found by
# its format's magic bytes, as the kernel's scripts/extract-vmlinux does.
set -euo pipefail
in=$1 out=$2
[ -f "$in" ] || { echo "vmlinux.sh: $in does not exist" >&2; exit 1; }

is_elf() { [ "$(head -c 4 "$1" | od -An -tx1 | tr -d ' \n')" = "7f454c46" ]; }

# magic (grep -P bytes) and the tool that unpacks from it
formats=(
  '\xfd\x37\x7a\x58\x5a\x00|xz -dc'
  '\x28\xb5\x2f\xfd|zstd -dcq'
  '\x1f\x8b\x08|gzip -dc'
)
rm -f "$out.tmp"
for f in "${formats[@]}"; do
  magic=${f%%|*} tool=${f#*|}
  command -v "${tool%% *}" >/dev/null || continue
  for off in $(LC_ALL=C grep -obUaP "$magic" "$in" | cut -d: -f1); do
    # The payload is followed by the rest of the bzImage: the tool complains
    # about trailing bytes after writing the whole kernel, so its status is
    # not the test; the ELF header is.
    tail -c +$((off + 1)) "$in" | $tool > "$out.tmp" 2>/dev/null || true
    if is_elf "$out.tmp"; then
      # Without a PVH entry QEMU refuses the ELF ("no PVH ELF note"): say so
      # now, naming the kernel option, rather than at every boot.
      if command -v readelf >/dev/null && ! readelf -n "$out.tmp" | grep -q 'Xen.*0x00000012'; then
        rm -f "$out.tmp"
        echo "vmlinux.sh: $in has no PVH entry point (CONFIG_PVH): boot its bzImage with --kernel" >&2
        exit 1
      fi
      mv "$out.tmp" "$out"
      echo "vmlinux: $(( $(stat -c %s "$out") / 1000000 )) MB unpacked from $in (${tool%% *})"
      exit 0
    fi
  done
done
rm -f "$out.tmp"
echo "vmlinux.sh: no xz, zstd or gzip payload with an ELF kernel in $in" >&2
exit 1
