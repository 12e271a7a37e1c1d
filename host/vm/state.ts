// Per-VM state on the host: one directory per VM holding its description
// (vm.json), QEMU's pid file, the console log and the agent's serial socket.
// The directory is the VM's identity; a VM whose QEMU is gone is stale.
import fs from "node:fs";
import path from "node:path";
import { stateBase } from "./platform.js";
import type { GuestArch } from "./arch.js";
import type { NetBackend } from "./passt.js";
import { ErrorCode, FractalError } from "../../proto/errors.js";

export interface VmRecord {
  name: string;
  /** QEMU's pid (from its pid file). */
  pid: number;
  accel: "kvm" | "tcg" | "hvf";
  /** The user-mode network behind its NIC; undefined: no NIC (or a record from before passt). */
  net?: NetBackend;
  memMiB: number;
  cpus: number;
  created: string;
  /** Agent endpoints, best first: what `exec --vm` tries. */
  endpoints: { serial: string; tcp?: string; vsock?: string; uart?: string };
  console: string;
  shares: string[];
  /** The 9p shares as the guest mounts them: where run -v finds a host path. */
  mounts?: { hostDir: string; guestPath: string; readonly: boolean }[];
  /** What QEMU was given at this boot: what attestation checks a --tpm boot's measurements against. */
  boot?: { kernel: string; initrd: string; agentImage?: string; cmdline: string; tpm: boolean; arch?: GuestArch };
  /** The last attestation since this boot (a new boot writes a new record). */
  attestation?: AttestationRecord;
}

export interface AttestationRecord {
  at: string;
  passed: boolean;
  /** The checks that failed (kernel, initramfs, kernel command line, nonce, ...). */
  failed: string[];
  message: string;
}

/** The VM's TPM state (swtpm's, with the EK certificate made at first boot): kept across boots, as volumes are. */
export const TPM = "tpm";

export function tpmDir(name: string): string {
  return path.join(vmDir(name), TPM);
}

/** The tickets agents gave this user's keys (host/tickets.ts), beside the VMs' directory. */
export function ticketsDir(): string {
  return path.join(path.dirname(stateRoot()), "tickets");
}

/** The local CA that certifies every VM TPM's EK on this host. */
export function tpmCaDir(): string {
  return path.join(path.dirname(stateRoot()), "tpm-ca");
}

/** Named volumes (run -v NAME:PATH) live here, in the VM's directory: they outlive its reboots, and only volume rm removes them. */
export const VOLUMES = "volumes";

export function volumesDir(name: string): string {
  return path.join(vmDir(name), VOLUMES);
}

export function stateRoot(): string {
  if (process.env.FRACTAL_STATE) return process.env.FRACTAL_STATE;
  return path.join(stateBase(), "vms");
}

export function vmDir(name: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(name)) {
    throw new FractalError(ErrorCode.INVALID_ARGUMENT, `bad VM name "${name}": use letters, digits, '.', '_' or '-' (at most 63)`);
  }
  return path.join(stateRoot(), name);
}

export function writeRecord(rec: VmRecord): void {
  const dir = vmDir(rec.name);
  const tmp = path.join(dir, "vm.json.tmp");
  fs.writeFileSync(tmp, JSON.stringify(rec, null, 2) + "\n");
  fs.renameSync(tmp, path.join(dir, "vm.json"));
}

export function readRecord(name: string): VmRecord | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(vmDir(name), "vm.json"), "utf8")) as VmRecord; // written by writeRecord
  } catch {
    return undefined;
  }
}

export function listNames(): string[] {
  try {
    return fs
      .readdirSync(stateRoot(), { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => e.name)
      .sort();
  } catch {
    return [];
  }
}

/** True when pid is a live QEMU (not a recycled pid of something else). */
export function qemuAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8");
    if (fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(" ")[2] === "Z") return false;
    return cmd.includes("qemu-system");
  } catch {
    return process.platform !== "linux"; // no /proc: trust kill(0)
  }
}

/** Removes a VM's state, but not its named volumes (the directory goes too once it has none). */
export function removeState(name: string): void {
  const dir = vmDir(name);
  let entries: string[];
  try {
    entries = fs.readdirSync(dir);
  } catch {
    return;
  }
  const kept = [VOLUMES, TPM];
  for (const e of entries) if (!kept.includes(e)) fs.rmSync(path.join(dir, e), { recursive: true, force: true });
  const keep = (e: string) => fs.existsSync(path.join(dir, e)) && (e === TPM || fs.readdirSync(path.join(dir, e)).length > 0);
  if (!kept.some(keep)) fs.rmSync(dir, { recursive: true, force: true });
}
