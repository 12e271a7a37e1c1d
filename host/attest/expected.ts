// Expected measurements: what the firmware and the kernel's EFI stub must
// have extended for the artifacts the host built. `make build` records the
// artifacts' digests (build/expected-measurements.json, no paths or times in
// it, so two builds of one commit give the same file); at attestation the
// digests a particular boot must show are derived from them.
//
// Under QEMU's direct kernel boot (-kernel) the measured kernel is not the
// file: QEMU fills in boot-protocol fields of the setup header (loader type,
// command line and initrd addresses, heap end) before OVMF loads it, and
// OVMF measures the image it got. Those values depend only on the guest's
// RAM below 4 GiB and the initrd's size, so the host computes them as QEMU
// does (hw/i386/x86.c, x86_load_linux) and hashes the result.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import { authenticodeDigest } from "./authenticode.js";
import { AttestationError } from "./verify.js";

export interface Artifact {
  /** Relative to the expectations file. */
  file: string;
  size: number;
  sha256: string;
}

export interface ExpectedMeasurements {
  version: 1;
  kernel: Artifact & { authenticode_sha256: string };
  initramfs: Artifact;
}

/** The digests one boot must show, each a hex SHA-256. */
export interface BootExpectation {
  kernel: string;
  initramfs: string;
  cmdline: string;
  /** The command line in words, for messages. */
  cmdlineText: string;
}

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

export function measureArtifacts(kernelPath: string, initrdPath: string, relativeTo: string): ExpectedMeasurements {
  const kernel = fs.readFileSync(kernelPath);
  const initrd = fs.readFileSync(initrdPath);
  const rel = (p: string) => path.relative(relativeTo, p).split(path.sep).join("/");
  return {
    version: 1,
    kernel: { file: rel(kernelPath), size: kernel.length, sha256: sha256(kernel), authenticode_sha256: authenticodeDigest(kernel).toString("hex") },
    initramfs: { file: rel(initrdPath), size: initrd.length, sha256: sha256(initrd) },
  };
}

export function readExpected(file: string): ExpectedMeasurements {
  let doc: unknown;
  try {
    doc = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (err) {
    throw new FractalError(ErrorCode.NOT_FOUND, `expected measurements ${file}: ${(err as Error).message} (make build writes build/expected-measurements.json)`);
  }
  const d = doc as Partial<ExpectedMeasurements>;
  const hex = (v: unknown) => typeof v === "string" && /^[0-9a-f]{64}$/.test(v);
  if (d.version !== 1 || !d.kernel || !d.initramfs || !hex(d.kernel.sha256) || !hex(d.kernel.authenticode_sha256) || !hex(d.initramfs.sha256) || typeof d.initramfs.size !== "number") {
    throw new FractalError(ErrorCode.INVALID_ARGUMENT, `expected measurements ${file}: not a version 1 file with kernel and initramfs digests`);
  }
  return d as ExpectedMeasurements;
}

/** RAM below 4 GiB on QEMU's q35 machine: guests of 2.75 GiB or more get 2 GiB there, the rest above. */
function q35Below4g(memMiB: number): number {
  const ram = memMiB * 1024 * 1024;
  return ram >= 0xb0000000 ? 0x80000000 : ram;
}

// pc.c's acpi_data_size for current machine types: where QEMU stops the initrd below the top of low RAM.
const ACPI_DATA_SIZE = 0x20000 + 0x8000;
const REAL_ADDR = 0x10000;
const CMDLINE_ADDR = 0x20000;

/** The kernel image as QEMU hands it to OVMF for -kernel, with -m memMiB and an initrd of initrdSize bytes. */
export function qemuLoadedKernel(kernel: Buffer, memMiB: number, initrdSize: number, cmdline: string): Buffer {
  const h = Buffer.from(kernel);
  if (h.length < 0x260 || h.readUInt32LE(0x202) !== 0x53726448) throw new FractalError(ErrorCode.INVALID_ARGUMENT, "the kernel is not a bzImage (no HdrS header)");
  const protocol = h.readUInt16LE(0x206);
  if (protocol < 0x202 || !(h[0x211]! & 0x01)) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `kernel boot protocol ${protocol.toString(16)}: only loaded-high bzImages of protocol 2.02 or later are modelled`);
  const initrdMax = q35Below4g(memMiB) - ACPI_DATA_SIZE - 1;
  h.writeUInt32LE(CMDLINE_ADDR, 0x228);
  const vga = /(?:^|\s)vga=(\S+)/.exec(cmdline)?.[1];
  if (vga !== undefined) {
    const mode = vga === "normal" ? 0xffff : vga === "ext" ? 0xfffe : vga === "ask" ? 0xfffd : Number(vga);
    if (Number.isFinite(mode)) h.writeUInt16LE(mode & 0xffff, 0x1fa);
  }
  h[0x210] = 0xb0; // type_of_loader: QEMU
  h[0x211] = h[0x211]! | 0x80; // CAN_USE_HEAP
  h.writeUInt16LE(CMDLINE_ADDR - REAL_ADDR - 0x200, 0x224);
  h.writeUInt32LE(Math.floor((initrdMax - initrdSize) / 4096) * 4096, 0x218);
  h.writeUInt32LE(initrdSize, 0x21c);
  return h;
}

/** The bytes OVMF's loader hands the EFI stub as LoadOptions (and the stub measures): UCS-2, " initrd=initrd" added, NUL-terminated. */
export function loadOptionsDigest(cmdline: string): string {
  return sha256(Buffer.from(`${cmdline} initrd=initrd\0`, "utf16le"));
}

/** What a machine booted from these artifacts by a loader that does not change them (iPXE, GRUB) must have measured; `loadOptions` as the loader passed them. */
export function plainBootExpectation(expected: ExpectedMeasurements, loadOptions: string): BootExpectation {
  return {
    kernel: expected.kernel.authenticode_sha256,
    initramfs: expected.initramfs.sha256,
    cmdline: sha256(Buffer.from(`${loadOptions}\0`, "utf16le")),
    cmdlineText: loadOptions,
  };
}

/** What a QEMU guest booted from these artifacts with this command line and RAM must have measured. */
export function qemuBootExpectation(expected: ExpectedMeasurements, kernelFile: string, memMiB: number, cmdline: string): BootExpectation {
  const kernel = fs.readFileSync(kernelFile);
  if (authenticodeDigest(kernel).toString("hex") !== expected.kernel.authenticode_sha256) {
    throw new AttestationError(["kernel"], `kernel differs: the kernel file ${kernelFile} the VM booted is not the one the expected measurements name`);
  }
  return {
    kernel: authenticodeDigest(qemuLoadedKernel(kernel, memMiB, expected.initramfs.size, cmdline)).toString("hex"),
    initramfs: expected.initramfs.sha256,
    cmdline: loadOptionsDigest(cmdline),
    cmdlineText: cmdline,
  };
}
