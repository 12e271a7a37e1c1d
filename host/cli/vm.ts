// `fractal-host boot`, `ls` and `stop`: VM lifecycle commands.
import fs from "node:fs";
import path from "node:path";
import { FractalError, exitStatusFor } from "../../proto/errors.js";
import { attestVm } from "../attest/vm.js";
import { HOST_ROOT } from "../../proto/guest.js";
import { bootVm, listVms, qmpSocket, stopVm, type BootOptions } from "../vm/manager.js";
import { NET_BACKENDS, type NetBackend } from "../vm/passt.js";
import { qemuExited } from "../vm/qmp.js";
import { hostRootShare, imageStoreShare, NIC_MODELS, type NicModel } from "../vm/qemu.js";
import { removeState } from "../vm/state.js";
import { preferAgentImage, preferUnpacked, type GuestImage } from "../vm/kernel.js";
import { hostOs, implicitShare, type HostOs } from "../vm/platform.js";
import { buildSubdir, GUEST_ARCHES, hostArch, parseArch, type GuestArch } from "../vm/arch.js";
import { vmJson } from "../api/shapes.js";
import { flag, parseFlags, parseSize, usageError, value, values } from "./args.js";
import { table } from "./table.js";
import type { AgentClient } from "../client.js";
import { DEFAULT_NAMESPACE, parseExec, runExec } from "./exec.js";
import { parseAuthMode } from "../../proto/authorized-keys.js";
import { guestKeyArgs } from "./keys.js";

export const bootHelp = `usage: fractal-host boot [OPTIONS]

Boots a fractal guest under QEMU (KVM when /dev/kvm is usable, HVF on macOS,
TCG otherwise) and waits until its agent answers.

  --name N                  VM name (default: fractal)
  --mem SIZE                memory, e.g. 1G or 512M; a bare number is bytes,
                            as in docker (default: 1G)
  --cpus N                  virtual CPUs (default: 2)
  --share HOSTDIR:TAG[:ro]  share a host directory over 9p; it appears at the
                            same path in the guest (repeatable)
  --host-root               share the host's / (read-only) at /host in the guest,
                            for exec --namespace (like u-root's cpu), over 9p;
                            for virtiofs run virtiofsd on / and pass
                            --virtiofs SOCKET:hostroot:/host instead
  --host-root-rw            the same, writable
  --virtiofs SOCK:TAG:PATH  attach a running virtiofsd's socket, mounted at PATH
  --images DIR              the image store for run (OCI layouts, docker
                            archives), shared read-only over 9p
  --tcp HOSTPORT            forward 127.0.0.1:HOSTPORT to the agent's TCP
                            listener (default: any free port)
  --forward HOST:GUEST      also forward 127.0.0.1:HOST to the guest's TCP port
                            GUEST (repeatable)
  --no-net                  no network card at all
  --arch ARCH               the guest's architecture: x86_64 (amd64) or aarch64
                            (arm64; built by make build ARCH=arm64); default
                            the host's. Another architecture than the host's
                            runs under TCG.
  --nic MODEL               the network card: virtio (default), or e1000 or
                            e1000e as on hardware
  --net BACKEND             the user-mode network behind it: passt (the
                            default when installed: its own process, 64 KiB
                            frames) or user (QEMU's built-in slirp)
  --uart                    also serve the agent on a second UART (ttyS1), a
                            unix socket on the host, as on hardware
  --kernel K                kernel image, a bzImage or an ELF with a PVH entry
                            (default: build/kernel/vmlinux; with --tpm the
                            bzImage build/kernel/vmlinuz)
  --initrd I                a self-contained initramfs (default: the build's
                            without the agent, build/initramfs-lite.cpio,
                            with the agent on a read-only disk,
                            build/agent.erofs; with --tpm build/initramfs.cpio)
  --append ARGS             extra kernel command line
  --authorize FILE          also let these keys in (authorized_keys lines,
                            "[allow=TYPES] ssh-ed25519 BASE64 [comment]");
                            your own key (--key, $FRACTAL_KEY or
                            ~/.config/fractal/key, made if missing) always is
  --auth MODE               which agent connections need a key: network
                            (TCP and vsock; the default), all, or none
  --tpm                     attach a TPM 2.0 (swtpm; its state, with an EK
                            certified by this host's local CA, is made at the
                            VM's first boot and kept) and boot through UEFI
                            firmware (OVMF), which measures the kernel,
                            initramfs and command line into it
  --attest                  --tpm, and report the VM ready only once
                            attestation passes (see attest --help); a VM that
                            fails is left running, marked failed
  --expect FILE             with --attest: expected measurements (default:
                            build/expected-measurements.json)
  --timeout SECONDS         give up waiting for the agent (default: 180 on TCG, 60 otherwise)
  -d, --detach              return once the agent answers (default: stay and
                            show the console; Ctrl-C stops the VM)
  -h, --help                this text
`;

export const lsHelp = `usage: fractal-host ls [--json]

Lists VMs with their state, accelerator and agent endpoints. A VM whose QEMU
died is shown as stale and its state is removed. --json prints the REST
API's VmList.
`;

export const stopHelp = `usage: fractal-host vm stop NAME...

Powers each VM off through its agent, and kills QEMU if that does not finish
within 20 seconds. (\`fractal-host stop\` stops containers, as docker's does.)
`;

const bootSpecs = [
  { long: "name", value: true },
  { long: "mem", value: true },
  { long: "cpus", value: true },
  { long: "share", value: true, repeat: true },
  { long: "virtiofs", value: true, repeat: true },
  { long: "host-root" },
  { long: "host-root-rw" },
  { long: "images", value: true },
  { long: "tcp", value: true },
  { long: "no-net" },
  { long: "forward", value: true, repeat: true },
  { long: "uart" },
  { long: "kernel", value: true },
  { long: "initrd", value: true },
  { long: "append", value: true, repeat: true },
  { long: "authorize", value: true, repeat: true },
  { long: "auth", value: true },
  { long: "timeout", value: true },
  { long: "nic", value: true },
  { long: "net", value: true },
  { long: "arch", value: true },
  { long: "tpm" },
  { long: "attest" },
  { long: "expect", value: true },
  { long: "detach", short: "d" },
  { long: "help", short: "h" },
];

/**
 * Where build outputs sit relative to the fractal-host binary (build/), or,
 * run from source, in the build/ of the tree the script is in (found from
 * the script's path, not import.meta: a compiled binary would keep the
 * checkout's absolute path, and builds must not depend on where they ran).
 */
export function defaultArtifact(rel: string, env: string): string {
  if (process.env[env]) return process.env[env]!; // checked just before
  const besideBinary = path.join(path.dirname(process.execPath), rel);
  if (fs.existsSync(besideBinary)) return besideBinary;
  const start = path.dirname(path.resolve(process.argv[1] ?? "."));
  for (let d = start; d !== path.dirname(d); d = path.dirname(d)) {
    if (fs.existsSync(path.join(d, "build", rel))) return path.join(d, "build", rel);
  }
  return path.resolve("build", rel);
}

/**
 * The build's kernel: unpacked unless UEFI is to measure it; $FRACTAL_KERNEL
 * wins over both. Another architecture's is in its own build directory
 * (build/arm64), where no unpacked copy is made: QEMU boots arm64's Image as is.
 */
export function defaultKernel(measured: boolean, arch: GuestArch = hostArch()): string {
  const bzImage = defaultArtifact(path.join(buildSubdir(arch), "kernel/vmlinuz"), "FRACTAL_KERNEL");
  return measured || process.env.FRACTAL_KERNEL ? bzImage : preferUnpacked(bzImage);
}

/**
 * The build's initramfs, as absolute paths: without the agent, plus the
 * agent's disk, where the build has both and the boot is not measured;
 * $FRACTAL_INITRD (self-contained) wins.
 */
export function defaultGuest(measured: boolean, arch: GuestArch = hostArch()): GuestImage {
  const initrd = path.resolve(defaultArtifact(path.join(buildSubdir(arch), "initramfs.cpio"), "FRACTAL_INITRD"));
  return measured || process.env.FRACTAL_INITRD ? { initrd } : preferAgentImage(initrd);
}

/** --mem in MiB; a size as docker reads one (a bare number is bytes). */
export function parseMem(s: string): number {
  return Math.floor(parseSize(s, "--mem", "boot", 128 << 20, "128M (the guest needs it)") / (1 << 20));
}

export function parseBoot(args: string[], platform: HostOs = hostOs()): { opts: BootOptions; detach: boolean; authorize: string[]; attestExpect?: string } | "help" {
  const p = parseFlags(args, bootSpecs, "boot");
  if (flag(p, "help")) return "help";
  if (p.rest.length > 0) throw usageError("boot", `unexpected argument "${p.rest[0]}"`);
  const cpus = Number(value(p, "cpus") ?? 2);
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > 64) throw usageError("boot", `bad --cpus "${value(p, "cpus")}"`);
  const shares = values(p, "share").map((s) => {
    const parts = s.split(":");
    const [hostDir, tag] = parts;
    const ro = parts[2] === "ro";
    if (!hostDir || !tag || parts.length > 3 || (parts.length === 3 && !ro)) throw usageError("boot", `bad --share "${s}": expected HOSTDIR:TAG[:ro]`);
    if (!/^[\w.-]{1,31}$/.test(tag)) throw usageError("boot", `bad --share "${s}": tag must be 1-31 letters, digits, '.', '_' or '-'`);
    return { hostDir: path.resolve(hostDir), tag, readonly: ro };
  });
  const images = value(p, "images");
  if (images !== undefined) {
    if (!fs.existsSync(images) || !fs.statSync(images).isDirectory()) throw usageError("boot", `--images ${images}: not a directory`);
    shares.push(imageStoreShare(path.resolve(images)));
  }
  // A virtiofs share at /host is the host root already: no 9p one on top.
  const virtiofsRoot = values(p, "virtiofs").some((v) => v.split(":")[2] === HOST_ROOT);
  if ((flag(p, "host-root") || flag(p, "host-root-rw")) && !virtiofsRoot) shares.push(hostRootShare(!flag(p, "host-root-rw")));
  const implicit = implicitShare(platform);
  if (implicit && !shares.some((s) => s.hostDir === implicit.hostDir || s.tag === implicit.tag)) shares.push(implicit);
  const virtiofs = values(p, "virtiofs").map((s) => {
    const [socket, tag, guestPath] = s.split(":");
    if (!socket || !tag || !guestPath?.startsWith("/")) throw usageError("boot", `bad --virtiofs "${s}": expected SOCKET:TAG:/guest/path`);
    return { socket: path.resolve(socket), tag, guestPath };
  });
  let tcp: number | "none" = 0;
  if (flag(p, "no-net")) tcp = "none";
  else if (value(p, "tcp") !== undefined) {
    tcp = Number(value(p, "tcp"));
    if (!Number.isInteger(tcp) || tcp < 1 || tcp > 65535) throw usageError("boot", `bad --tcp "${value(p, "tcp")}": expected a port number`);
  }
  const forwards = values(p, "forward").map((f) => {
    const m = /^(\d+):(\d+)$/.exec(f);
    const ok = (x: number) => x >= 1 && x <= 65535;
    if (!m || !ok(Number(m[1])) || !ok(Number(m[2]))) throw usageError("boot", `bad --forward "${f}": expected HOSTPORT:GUESTPORT`);
    return { host: Number(m[1]), guest: Number(m[2]) };
  });
  if (forwards.length > 0 && tcp === "none") throw usageError("boot", "--forward needs a network card: drop --no-net");
  const archText = value(p, "arch");
  const arch = archText === undefined ? hostArch() : parseArch(archText);
  if (arch === undefined) throw usageError("boot", `bad --arch "${archText}": expected ${GUEST_ARCHES.join(" or ")} (or amd64, arm64)`);
  const nic = value(p, "nic");
  if (nic !== undefined && !(NIC_MODELS as readonly string[]).includes(nic)) throw usageError("boot", `bad --nic "${nic}": expected ${NIC_MODELS.join(", ")}`);
  if (nic !== undefined && tcp === "none") throw usageError("boot", "--nic with --no-net: choose one");
  const net = value(p, "net");
  if (net !== undefined && !(NET_BACKENDS as readonly string[]).includes(net)) throw usageError("boot", `bad --net "${net}": expected ${NET_BACKENDS.join(" or ")}`);
  if (net !== undefined && tcp === "none") throw usageError("boot", "--net with --no-net: choose one");
  if (value(p, "expect") !== undefined && !flag(p, "attest")) throw usageError("boot", "--expect goes with --attest");
  const timeout = value(p, "timeout");
  if (timeout !== undefined && !(Number(timeout) > 0)) throw usageError("boot", `bad --timeout "${timeout}"`);
  return {
    detach: flag(p, "detach"),
    authorize: values(p, "authorize"),
    opts: {
      name: value(p, "name") ?? "fractal",
      memMiB: parseMem(value(p, "mem") ?? "1G"),
      cpus,
      shares,
      virtiofs,
      tcp,
      arch,
      kernel: path.resolve(value(p, "kernel") ?? defaultKernel(flag(p, "tpm") || flag(p, "attest"), arch)),
      ...(value(p, "initrd") !== undefined ? { initrd: path.resolve(value(p, "initrd")!) } : defaultGuest(flag(p, "tpm") || flag(p, "attest"), arch)),
      append: [
        ...authArg(value(p, "auth")),
        ...values(p, "append").flatMap((a) => a.split(/\s+/).filter((x) => x !== "")),
      ],
      timeoutMs: timeout !== undefined ? Number(timeout) * 1000 : undefined,
      uart: flag(p, "uart"),
      forwards,
      nic: nic as NicModel | undefined,
      net: net as NetBackend | undefined,
      tpm: flag(p, "tpm") || flag(p, "attest"),
    },
    attestExpect: flag(p, "attest") ? path.resolve(value(p, "expect") ?? defaultArtifact("expected-measurements.json", "FRACTAL_EXPECT")) : undefined,
  };
}

function authArg(mode: string | undefined): string[] {
  return mode === undefined ? [] : [`fractal.auth=${parseAuthMode(mode, "boot --auth")}`];
}

/** `keyFile`: the user's key (--key or $FRACTAL_KEY), authorised in the guest; default ~/.config/fractal/key, made if missing. */
export async function runBoot(opts: BootOptions, detach: boolean, authorize: string[] = [], keyFile?: string, attestExpect?: string): Promise<number> {
  const tty = process.stderr.isTTY;
  const rec = await bootVm({
    ...opts,
    append: [...(await guestKeyArgs(authorize, keyFile)), ...(opts.append ?? [])],
    progress: tty ? (ms, accel) => process.stderr.write(`\rbooting ${opts.name} (${accel}) ${(ms / 1000).toFixed(0)}s `) : undefined,
  });
  if (tty) process.stderr.write("\r\x1b[K");
  if (attestExpect) {
    try {
      await attestVm(rec.name, attestExpect, keyFile);
    } catch (err) {
      if (!(err instanceof FractalError)) throw err;
      throw new FractalError(err.code, `${rec.name}: booted, but not ready: attestation failed: ${err.message}\nThe VM is left running for inspection, marked failed (run --attested refuses it); fractal-host vm stop ${rec.name} ends it.`);
    }
    process.stdout.write(`${rec.name}: attestation passed (kernel, initramfs and command line as expected)\n`);
  }
  process.stdout.write(`${rec.name}: ready (${[rec.accel, rec.net].filter(Boolean).join(", ")}, pid ${rec.pid}); agent at ${[rec.endpoints.vsock, rec.endpoints.tcp, rec.endpoints.serial, rec.endpoints.uart].filter(Boolean).join(", ")}\n`);
  if (detach) return 0;
  return followConsole(rec.name, rec.console);
}

/** Foreground mode: stream the console until the VM goes; Ctrl-C stops it. */
async function followConsole(name: string, file: string): Promise<number> {
  process.stdout.write(`${name}: console follows; Ctrl-C stops the VM\n`);
  let stopping = false;
  process.on("SIGINT", () => {
    if (stopping) return;
    stopping = true;
    void stopVm(name).then((how) => {
      process.stdout.write(`\n${name}: stopped (${how})\n`);
      process.exit(0);
    });
  });
  // What QEMU appends, from where we left off, whenever the file changes.
  let offset = 0;
  const buf = Buffer.alloc(64 << 10);
  const copy = () => {
    let fd: number;
    try {
      fd = fs.openSync(file, "r");
    } catch {
      return; // state removed by a concurrent stop
    }
    try {
      // A copy: stdout may still hold the bytes when the buffer is read into again.
      for (let n; (n = fs.readSync(fd, buf, 0, buf.length, offset)) > 0; offset += n) process.stdout.write(Buffer.from(buf.subarray(0, n)));
    } finally {
      fs.closeSync(fd);
    }
  };
  const watcher = fs.watch(file, copy);
  copy();
  // QEMU's QMP socket closes when it exits: no polling of its pid.
  await qemuExited(qmpSocket(name), Infinity);
  watcher.close();
  copy();
  process.stdout.write(`\n${name}: QEMU exited\n`);
  return 0;
}

export function runLs(asJson = false): number {
  const vms = listVms();
  if (asJson) process.stdout.write(`${JSON.stringify({ vms: vms.map(vmJson) }, null, 2)}\n`);
  const rows = [["NAME", "STATE", "ACCEL", "PID", "MEM", "CPUS", "AGENT"]];
  for (const { record: r, state } of vms) {
    rows.push([r.name, state, r.accel, String(r.pid), `${r.memMiB}M`, String(r.cpus), [r.endpoints.vsock, r.endpoints.tcp, r.endpoints.serial, r.endpoints.uart].filter(Boolean).join(" ")]);
  }
  if (!asJson) process.stdout.write(table(rows, 2));
  for (const { record, state } of vms) {
    if (state === "stale") {
      // The listing above told the user; now clean it, as promised.
      removeState(record.name);
      process.stderr.write(`${record.name}: QEMU (pid ${record.pid}) is gone; removed its stale state\n`);
    }
  }
  return 0;
}

export async function runStop(names: string[]): Promise<number> {
  if (names.length === 0) throw usageError("vm stop", "name the VM to stop");
  let status = 0;
  for (const name of names) {
    try {
      const how = await stopVm(name);
      process.stdout.write(`${name}: ${how === "shutdown" ? "powered off" : how === "killed" ? "killed (the agent did not power it off in time)" : "was not running; removed its stale state"}\n`);
    } catch (err) {
      process.stderr.write(`fractal-host: vm stop ${name}: ${(err as Error).message}\n`);
      status = exitStatusFor(err);
    }
  }
  return status;
}


export const shellHelp = `usage: fractal-host shell [--name N] [--namespace=SPEC] [boot options]

The fractal-linux experience in one command: boots a VM with the host's root
backmounted (unless one named N, default fractal-shell, is running) and opens
an interactive shell in it, in a namespace of host directories (default
${DEFAULT_NAMESPACE}), with your environment and current directory.
`;

/** Splits shell's own flags from the boot flags it passes through. */
export function parseShell(args: string[]): { name: string; namespace: string | undefined; boot: string[] } | "help" {
  if (args.includes("--help") || args.includes("-h")) return "help";
  let name = "fractal-shell";
  let namespace: string | undefined;
  const boot: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--name") name = args[++i] ?? usageErr("--name needs a value");
    else if (a.startsWith("--name=")) name = a.slice(7);
    else if (a.startsWith("--namespace=")) namespace = a.slice(12);
    else boot.push(a);
  }
  return { name, namespace, boot };
}

/** `fractal-host shell`: boot a host-root VM unless it runs, then an interactive $SHELL in the namespace. */
export async function runShell(args: string[], connect: (vm: string) => Promise<AgentClient>, keyFile?: string): Promise<number> {
  const sh = parseShell(args);
  if (sh === "help") return void process.stdout.write(shellHelp), 0;
  if (!listVms().some((v) => v.record.name === sh.name && v.state === "running")) {
    const b = parseBoot(["--name", sh.name, "--host-root", "--detach", ...sh.boot]);
    if (b === "help") return void process.stdout.write(bootHelp), 0;
    await runBoot(b.opts, true, b.authorize, keyFile);
  }
  const nsArg = sh.namespace === undefined ? "--namespace" : `--namespace=${sh.namespace}`;
  const cmd = parseExec(["-i", "-t", nsArg, "--", process.env.SHELL || "/bin/sh"], process.env);
  if (cmd === "help") return 0;
  return runExec(await connect(sh.name), cmd);
}

function usageErr(why: string): never {
  throw usageError("shell", why);
}
