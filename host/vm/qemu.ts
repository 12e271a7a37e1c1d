// QEMU command lines for fractal guests. Pure: options in, argv out, so the
// choices (accelerator, devices, kernel command line) are testable without
// booting anything.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { AGENT_DISK_SERIAL, AGENT_PORT, HOST_ROOT, IMAGE_STORE, SERIAL_PORT_NAME } from "../../proto/guest.js";
import { PASST_MTU } from "./passt.js";
import { ninePSecurity, type HostOs } from "./platform.js";
import { consoleFor, cpuFor, hostArch, machineFor, qemuBinaryFor, type GuestArch } from "./arch.js";

export type Accel = "kvm" | "tcg" | "hvf";

export interface Share9p {
  hostDir: string;
  tag: string;
  readonly: boolean;
  /** Where the guest mounts it; default: the same path as on the host. */
  guestPath?: string;
}

/** The share `boot --host-root` adds: the host's / at /host in the guest. */
export function hostRootShare(readonly: boolean): Share9p {
  return { hostDir: "/", tag: "hostroot", readonly, guestPath: HOST_ROOT };
}

/** The share `boot --images` adds: the image store, where the agent looks for it. */
export function imageStoreShare(hostDir: string): Share9p {
  return { hostDir, tag: "images", readonly: true, guestPath: IMAGE_STORE };
}

/** The device id of the agent's virtio-serial port: QMP names it in VSERPORT_CHANGE. */
export const AGENT_PORT_ID = "agentport";

/** Where the guest mounts the VM's named volumes (the share every boot adds). */
export const GUEST_VOLUMES = "/run/fractal/volumes";

/** The share of the VM's named volumes, writable. */
export function volumeShare(hostDir: string): Share9p {
  return { hostDir, tag: "volumes", readonly: false, guestPath: GUEST_VOLUMES };
}

/** The guest's network card: virtio for VMs, or a wired NIC that real machines have (e1000, e1000e), to test the hardware path. */
export type NicModel = "virtio" | "e1000" | "e1000e";
export const NIC_MODELS: readonly NicModel[] = ["virtio", "e1000", "e1000e"];
const NIC_DEVICES: Record<NicModel, string> = { virtio: "virtio-net-pci", e1000: "e1000", e1000e: "e1000e" };

export interface VirtiofsShare {
  socket: string;
  tag: string;
  guestPath: string;
}

export interface QemuOptions {
  name: string;
  /** The guest's architecture; default the host's. */
  arch?: GuestArch;
  kernel: string;
  initrd: string;
  /** The agent's read-only erofs disk, for an initrd without the agent. */
  agentImage?: string;
  /** Its size: a multiple of PMEM_ALIGN puts it on virtio-pmem (x86 guests), any other size on a virtio disk. */
  agentImageBytes?: number;
  memMiB: number;
  cpus: number;
  accel: Accel;
  stateDir: string;
  /** Host TCP port forwarded to the agent's TCP listener; undefined: no NIC. */
  tcpPort?: number;
  /** passt's socket (host/vm/passt.ts), which carries the forwards; undefined: QEMU's slirp. */
  passtSocket?: string;
  /** The NIC's model; default virtio. */
  nic?: NicModel;
  /** More host ports forwarded to guest TCP ports (e.g. a peer's sshd, for benchmarks). */
  forwards?: { host: number; guest: number }[];
  /** Guest CID for vhost-vsock; undefined: no vsock device. */
  vsockCid?: number;
  shares: Share9p[];
  virtiofs: VirtiofsShare[];
  /** Extra kernel command line words. */
  append?: string[];
  /** Also serve the agent on a second UART (ttyS1), as on hardware without virtio. */
  uart?: boolean;
  /** A TPM (swtpm's control socket) and UEFI firmware that measures the boot into it. */
  tpm?: { socket: string; firmwareCode: string; firmwareVars: string };
  /** The host's OS; default this one's. */
  hostOs?: HostOs;
}

const MIB = 1024 * 1024;

/** What Linux needs of a pmem region to map its pages (for DAX): a memory subsection, 2 MiB. */
const PMEM_ALIGN = 2 * MIB;

/**
 * The bytes of the agent's image to put on virtio-pmem, or undefined for a
 * virtio disk: x86 guests under KVM or TCG (HVF's memory hotplug, which
 * the device needs, is untried), and an image of whole 2 MiB subsections.
 */
function agentPmemBytes(o: QemuOptions): number | undefined {
  const n = o.agentImageBytes;
  return o.agentImage !== undefined && (o.arch ?? hostArch()) === "x86_64" && o.accel !== "hvf" && n !== undefined && n > 0 && n % PMEM_ALIGN === 0 ? n : undefined;
}

/**
 * The agent's image, read-only: every VM shares the one file, and the
 * host's page cache with it. On virtio-pmem the file is mapped into the
 * guest's physical memory and the guest mounts it with DAX: the agent's
 * code runs from the host's pages, with no emulated disk read per fault
 * (under TCG the agent's exec to Bun's clock took 0.64-0.77 s from the
 * disk, 0.24-0.32 s from pmem) and no copy in the guest's page cache.
 * Otherwise a virtio disk, which the guest's supervisor finds by its serial.
 */
function agentImageArgs(image: string | undefined, pmemBytes: number | undefined): string[] {
  if (image === undefined) return [];
  const file = image.replace(/,/g, ",,");
  if (pmemBytes !== undefined) {
    return ["-object", `memory-backend-file,id=agentmem,mem-path=${file},size=${pmemBytes},readonly=on,share=off,align=${PMEM_ALIGN}`, "-device", "virtio-pmem-pci,memdev=agentmem,id=agentpmem"];
  }
  return ["-drive", `file=${file},if=none,id=agent,format=raw,readonly=on`, "-device", `virtio-blk-pci,drive=agent,serial=${AGENT_DISK_SERIAL}`];
}

/** Debian's OVMF: UEFI firmware built with TPM 2.0 measured boot. */
export function ovmfFiles(): { code: string; vars: string } {
  return {
    code: process.env.FRACTAL_OVMF_CODE ?? "/usr/share/OVMF/OVMF_CODE_4M.fd",
    vars: process.env.FRACTAL_OVMF_VARS ?? "/usr/share/OVMF/OVMF_VARS_4M.fd",
  };
}


/** KVM when /dev/kvm is usable, HVF on macOS, TCG otherwise. */
export function detectAccel(): Accel {
  const forced = process.env.FRACTAL_ACCEL;
  if (forced === "kvm" || forced === "tcg" || forced === "hvf") return forced;
  if (process.platform === "darwin") return "hvf";
  try {
    fs.accessSync("/dev/kvm", fs.constants.R_OK | fs.constants.W_OK);
    return "kvm";
  } catch {
    return "tcg";
  }
}

/**
 * The accelerator QEMU can really use. /dev/kvm can be present yet unusable
 * (nested virtualisation without the MSRs QEMU sets), which is "no KVM": a
 * paused QEMU is started once to find out, and the answer is cached for this
 * host boot (keyed by the kernel's boot_id).
 */
export function usableAccel(cacheDir: string, arch: GuestArch = hostArch()): Accel {
  // KVM and HVF run guests of the host's own architecture only.
  if (arch !== hostArch()) return "tcg";
  const accel = detectAccel();
  if (accel !== "kvm" || process.env.FRACTAL_ACCEL) return accel;
  let bootId = "";
  try {
    bootId = fs.readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    // no boot id: probe every time
  }
  const cache = path.join(cacheDir, "kvm-probe");
  try {
    const [id, verdict] = fs.readFileSync(cache, "utf8").trim().split(" ");
    if (bootId && id === bootId) return verdict === "kvm" ? "kvm" : "tcg";
  } catch {
    // not probed yet
  }
  const r = spawnSync(qemuBinary(), ["-machine", machineFor(hostArch(), "kvm"), "-cpu", "host", "-nodefaults", "-no-user-config", "-display", "none", "-S"], {
    timeout: 1500,
    encoding: "utf8",
  });
  // Still running when the timeout killed it: KVM works. Exited by itself: it does not.
  const verdict: Accel = r.signal === "SIGTERM" ? "kvm" : "tcg";
  try {
    fs.mkdirSync(cacheDir, { recursive: true });
    fs.writeFileSync(cache, `${bootId} ${verdict}\n`);
  } catch {
    // read-only state: probe again next time
  }
  return verdict;
}

export function vhostVsockAvailable(): boolean {
  try {
    fs.accessSync("/dev/vhost-vsock", fs.constants.R_OK | fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

export function qemuBinary(arch: GuestArch = hostArch()): string {
  return process.env.FRACTAL_QEMU ?? qemuBinaryFor(arch);
}

/** The kernel command line a guest gets: what a TPM boot measures, and attestation expects. */
export function kernelCmdline(o: QemuOptions): string {
  const listen = [`virtio-serial://${SERIAL_PORT_NAME}`];
  if (o.tcpPort !== undefined) listen.push(`tcp://0.0.0.0:${AGENT_PORT}`);
  if (o.vsockCid !== undefined) listen.push(`vsock://:${AGENT_PORT}`);
  if (o.uart) listen.push("serial:///dev/ttyS1");
  const cmdline = [
    `console=${consoleFor(o.arch ?? hostArch())}`,
    "quiet",
    "panic=-1",
    `fractal.hostname=${o.name}`,
    `fractal.listen=${listen.join(",")}`,
    // The pmem device sits in the memory-hotplug range above 4 GiB, so
    // Linux would keep 64 MiB of bounce buffers for devices that cannot
    // reach it; guest RAM stays below and every device here is 64-bit, so
    // a token pool (2 MiB) gives that memory back.
    ...(agentPmemBytes(o) !== undefined ? ["swiotlb=1024"] : []),
    // passt's frames can be 64 KiB; a wired NIC keeps its own limit.
    ...(o.passtSocket && o.tcpPort !== undefined && (o.nic ?? "virtio") === "virtio" ? [`fractal.mtu=${PASST_MTU}`] : []),
    // Shares appear at the same path in the guest as on the host.
    ...o.shares.map((s) => `fractal.share=${s.tag}:${s.guestPath ?? s.hostDir}${s.readonly ? ":ro" : ""}`),
    ...o.virtiofs.map((v) => `fractal.share=${v.tag}:${v.guestPath}:virtiofs`),
    ...(o.append ?? []),
  ];
  return cmdline.join(" ");
}

/** The host ports forwarded into the guest: the agent's, then the caller's. */
export function agentForwards(o: Pick<QemuOptions, "tcpPort" | "forwards">): { host: number; guest: number }[] {
  return o.tcpPort === undefined ? [] : [{ host: o.tcpPort, guest: AGENT_PORT }, ...(o.forwards ?? [])];
}

export function qemuArgs(o: QemuOptions): string[] {
  const arch = o.arch ?? hostArch();
  const pmem = agentPmemBytes(o);
  const a = [
    "-name", `fractal-${o.name}`,
    "-machine", machineFor(arch, o.accel),
    "-cpu", cpuFor(arch, o.accel),
    "-m", pmem !== undefined ? `${o.memMiB}M,slots=1,maxmem=${o.memMiB + Math.ceil(pmem / MIB)}M` : String(o.memMiB),
    "-smp", String(o.cpus),
    "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
    "-kernel", o.kernel,
    "-initrd", o.initrd,
    "-append", kernelCmdline(o),
    // The console goes to a file the host can read and `boot` can quote.
    "-chardev", `file,id=console,path=${o.stateDir}/console.log`,
    "-serial", "chardev:console",
    // The agent's channel: a virtio-serial port, a unix socket on our side.
    "-device", "virtio-serial-pci,id=vser0",
    "-chardev", `socket,id=agent,path=${o.stateDir}/agent.sock,server=on,wait=off`,
    "-device", `virtserialport,bus=vser0.0,chardev=agent,name=${SERIAL_PORT_NAME},id=${AGENT_PORT_ID}`,
    // The second UART (ttyS1) must follow the console's -serial to get its name.
    ...(o.uart ? ["-chardev", `socket,id=uart,path=${o.stateDir}/uart.sock,server=on,wait=off`, "-serial", "chardev:uart"] : []),
    "-device", "virtio-rng-pci",
    ...agentImageArgs(o.agentImage, pmem),
    // QEMU's machine protocol: how the host sees it exit and quits it.
    "-qmp", `unix:${o.stateDir}/qmp.sock,server=on,wait=off`,
    "-pidfile", `${o.stateDir}/qemu.pid`,
    "-daemonize",
  ];
  if (o.tcpPort !== undefined) {
    const fwd = agentForwards(o).map((f) => `hostfwd=tcp:127.0.0.1:${f.host}-:${f.guest}`);
    const netdev = o.passtSocket ? `stream,id=net0,server=off,addr.type=unix,addr.path=${o.passtSocket}` : `user,id=net0,${fwd.join(",")}`;
    a.push("-netdev", netdev, "-device", `${NIC_DEVICES[o.nic ?? "virtio"]},netdev=net0`);
  }
  if (o.vsockCid !== undefined) a.push("-device", `vhost-vsock-pci,guest-cid=${o.vsockCid}`);
  if (o.tpm) {
    // UEFI instead of SeaBIOS: OVMF measures the kernel it starts, and the
    // kernel's EFI stub measures the initrd and the command line.
    a.push("-drive", `if=pflash,format=raw,unit=0,readonly=on,file=${o.tpm.firmwareCode}`);
    a.push("-drive", `if=pflash,format=raw,unit=1,file=${o.tpm.firmwareVars}`);
    a.push("-chardev", `socket,id=tpmchr,path=${o.tpm.socket}`, "-tpmdev", "emulator,id=tpm0,chardev=tpmchr", "-device", "tpm-crb,tpmdev=tpm0");
  }
  o.shares.forEach((s, i) => {
    // passthrough: the guest sees host owners and modes, which is what a
    // backmount of the host's root needs (we run as root).
    // multidevs=remap: a share spanning several host filesystems (the host's
    // root does) would otherwise show colliding inode numbers.
    a.push("-fsdev", `local,id=fs${i},path=${s.hostDir},security_model=${ninePSecurity(o.hostOs)},multidevs=remap${s.readonly ? ",readonly=on" : ""}`);
    a.push("-device", `virtio-9p-pci,fsdev=fs${i},mount_tag=${s.tag}`);
  });
  if (o.virtiofs.length > 0) {
    // vhost-user-fs needs guest memory shared with virtiofsd.
    a.push("-object", `memory-backend-memfd,id=mem,size=${o.memMiB}M,share=on`, "-numa", "node,memdev=mem");
    o.virtiofs.forEach((v, i) => {
      a.push("-chardev", `socket,id=vfs${i},path=${v.socket}`);
      a.push("-device", `vhost-user-fs-pci,chardev=vfs${i},tag=${v.tag}`);
    });
  }
  return a;
}
