// What differs between the guest architectures fractal boots: QEMU's
// binary, machine and console device, and where the build keeps each
// architecture's kernel and initramfs. Pure, so the choices for every
// host (an arm64 Mac, an x86 Linux box) are unit-testable anywhere.

/** The guest's architecture, in QEMU's names. */
export type GuestArch = "x86_64" | "aarch64";
export const GUEST_ARCHES: readonly GuestArch[] = ["x86_64", "aarch64"];

/** The host's own architecture; guests of another one run under TCG. */
export function hostArch(nodeArch: string = process.arch): GuestArch {
  return nodeArch === "arm64" ? "aarch64" : "x86_64";
}

/** `--arch` accepts QEMU's names and Debian's/Go's (amd64, arm64). */
export function parseArch(s: string): GuestArch | undefined {
  if (s === "x86_64" || s === "amd64") return "x86_64";
  if (s === "aarch64" || s === "arm64") return "aarch64";
  return undefined;
}

export function qemuBinaryFor(arch: GuestArch): string {
  return arch === "aarch64" ? "qemu-system-aarch64" : "qemu-system-x86_64";
}

/**
 * The machine type: q35 on x86; on arm64 the virt board with a GICv3 (more
 * than 8 CPUs), which KVM takes from the host and TCG and HVF emulate.
 */
export function machineFor(arch: GuestArch, accel: string): string {
  if (arch === "x86_64") return `q35,accel=${accel}`;
  return `virt,gic-version=${accel === "kvm" ? "host" : "3"},accel=${accel}`;
}

/**
 * TCG emulates "max": every feature the guest might want, less one per
 * architecture that costs TCG dearly. On x86, ERMS makes the kernel and
 * glibc copy and clear memory with `rep movsb`/`rep stosb`, which TCG runs
 * one byte per loop turn: every pipe, socket and page-cache copy went at
 * ~90 MB/s (dd from /dev/zero); without it they take word-sized loops, twice
 * as fast, and an exec's stdout 1.8x. On arm64 "max" includes pointer
 * authentication with the architected QARMA algorithm, paid on every call
 * and return; the implementation-defined algorithm is as good to the guest
 * and several times cheaper.
 */
export function cpuFor(arch: GuestArch, accel: string): string {
  if (accel !== "tcg") return "host";
  return arch === "aarch64" ? "max,pauth-impdef=on" : "max,erms=off";
}

/** The kernel's name for the first UART: the 16550 on x86, the PL011 on the virt board. */
export function consoleFor(arch: GuestArch): string {
  return arch === "aarch64" ? "ttyAMA0" : "ttyS0";
}

/** Where `make build ARCH=…` puts a guest's kernel and initramfs, relative to the host's build/. */
export function buildSubdir(arch: GuestArch, host: GuestArch = hostArch()): string {
  if (arch === host) return "";
  return arch === "aarch64" ? "arm64" : "amd64";
}
