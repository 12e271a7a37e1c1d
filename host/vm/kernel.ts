// Which of the build's forms of one kernel, and of its initramfs, a VM boots.
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

/** A guest's initramfs, and the disk the agent is on when the initramfs lacks it. */
export interface GuestImage {
  initrd: string;
  agentImage?: string;
}

/**
 * The build's initramfs without the agent (initramfs-lite.cpio) and the
 * agent's read-only erofs disk (agent.erofs) beside a self-contained
 * initramfs, when the build has them: the kernel then unpacks 30 MB instead
 * of 143 at every boot, guest RAM holds no tmpfs copy of the agent, and
 * every VM shares the one file. Measured boots (--tpm) keep the
 * self-contained archive: the firmware measures the initrd, and the agent
 * must be in what it measures.
 */
export function preferAgentImage(initrd: string): GuestImage {
  const dir = path.dirname(initrd);
  const lite = path.join(dir, "initramfs-lite.cpio");
  const agentImage = path.join(dir, "agent.erofs");
  return fs.existsSync(lite) && fs.existsSync(agentImage) ? { initrd: lite, agentImage } : { initrd };
}
