// Which of the build's two forms of one kernel a VM boots.
import fs from "node:fs";
import path from "node:path";

/**
 * The unpacked kernel beside a bzImage (kernel/vmlinux, written by
 * initramfs/vmlinux.sh) when the build has it: QEMU enters that ELF at its
 * PVH entry point, which under TCG boots ~4.5 s sooner than the bzImage
 * through SeaBIOS's loader and the kernel's decompressor. UEFI boots (--tpm)
 * keep the bzImage: the firmware starts and measures its EFI stub.
 */
export function preferUnpacked(bzImage: string): string {
  const elf = path.join(path.dirname(bzImage), "vmlinux");
  return fs.existsSync(elf) ? elf : bzImage;
}
