// VM lifecycle on the host: boot (QEMU daemonized, then wait for the agent),
// list (with stale detection), stop (graceful through the agent, then kill),
// and the endpoint `exec --vm` should use.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import { AgentClient } from "../client.js";
import { AGENT_PORT } from "../../proto/guest.js";
import { hostArch, type GuestArch } from "./arch.js";
import { AGENT_PORT_ID, agentForwards, kernelCmdline, ovmfFiles, qemuArgs, qemuBinary, usableAccel, vhostVsockAvailable, volumeShare, type NicModel, type QemuOptions, type Share9p, type VirtiofsShare } from "./qemu.js";
import { passtAvailable, passtPaths, startPasst, stopPasst, type NetBackend } from "./passt.js";
import { Qmp, guestSnapshot, qemuExited, watchPortOpen } from "./qmp.js";
import { listNames, qemuAlive, readRecord, removeState, stateRoot, tpmCaDir, tpmDir, vmDir, volumesDir, writeRecord, TPM, VOLUMES, type VmRecord } from "./state.js";
import { ensureTpmState, startSwtpm, stopSwtpm } from "./tpm.js";

export interface BootOptions {
  name: string;
  /** The guest's architecture; default the host's. */
  arch?: GuestArch;
  kernel: string;
  initrd: string;
  /** The agent's read-only disk, for an initrd without the agent (preferAgentImage). */
  agentImage?: string;
  memMiB: number;
  cpus: number;
  /** Host port for the agent's TCP listener: a number, 0 for any free port, or "none". */
  tcp: number | "none";
  shares: Share9p[];
  virtiofs: VirtiofsShare[];
  timeoutMs?: number;
  append?: string[];
  uart?: boolean;
  /** Host ports forwarded to guest TCP ports, besides the agent's. */
  forwards?: { host: number; guest: number }[];
  /** The network card's model (a wired NIC stands in for hardware); default virtio. */
  nic?: NicModel;
  /** Progress reports while waiting (elapsed ms). */
  progress?: (elapsedMs: number, accel: string) => void;
  /** The key the readiness check signs with (the one the command line authorises); default: the user's. */
  keyFile?: string;
  /** Attach a TPM (swtpm) and boot through UEFI firmware that measures the kernel, initrd and command line. */
  tpm?: boolean;
  /** The user-mode network behind the NIC; default passt when installed, else QEMU's slirp. */
  net?: NetBackend;
}

export type VmState = "running" | "stale";

export interface VmStatus {
  record: VmRecord;
  state: VmState;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One ping with a deadline: a session that shook hands but lost its peer must not stall boot. */
async function pingWithin(c: AgentClient, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      c.ping(),
      new Promise((_, reject) => (timer = setTimeout(() => reject(new FractalError(ErrorCode.UNAVAILABLE, "ping timed out")), ms))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Last lines of the console log, for error messages. */
export function consoleTail(file: string, lines = 25): string {
  try {
    const text = fs.readFileSync(file, "utf8").replace(/\r/g, "");
    return text.split("\n").slice(-lines).join("\n").trimEnd();
  } catch {
    return "(no console output)";
  }
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port; // TCP server: AddressInfo
      s.close(() => resolve(port));
    });
  });
}

/** A guest CID no other fractal VM uses (3 is the first a guest may have). */
function freeCid(): number {
  const used = new Set(listNames().map((n) => Number(readRecord(n)?.endpoints.vsock?.match(/^vsock:\/\/(\d+):/)?.[1])));
  let cid = 3;
  while (used.has(cid)) cid++;
  return cid;
}

export async function bootVm(o: BootOptions): Promise<VmRecord> {
  for (const [what, file] of [
    ["kernel", o.kernel],
    ["initrd", o.initrd],
    ["agent image", o.agentImage],
  ] as const) {
    if (file !== undefined && !fs.existsSync(file)) throw new FractalError(ErrorCode.NOT_FOUND, `${what} ${file} does not exist (run make build, or pass --${what})`);
  }
  for (const s of o.shares) {
    if (!fs.existsSync(s.hostDir) || !fs.statSync(s.hostDir).isDirectory()) {
      throw new FractalError(ErrorCode.INVALID_ARGUMENT, `--share ${s.hostDir}: not a directory`);
    }
  }
  const dir = vmDir(o.name);
  const existing = readRecord(o.name);
  if (existing && qemuAlive(existing.pid)) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `VM ${o.name} is already running (pid ${existing.pid}); stop it first`);
  removeState(o.name);
  // Private to the owner: the agent's serial socket in it needs no key, so
  // whoever can reach it can run anything in the guest.
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.chmodSync(dir, 0o700);
  fs.mkdirSync(volumesDir(o.name), { recursive: true, mode: 0o700 });
  const shares = [...o.shares, volumeShare(volumesDir(o.name))];

  const arch = o.arch ?? hostArch();
  if (arch === "aarch64" && (o.tpm || o.uart)) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `${o.tpm ? "--tpm" : "--uart"} is for x86 guests only (the arm64 virt board has one UART, and measured boot here is OVMF's)`);
  const accel = usableAccel(path.dirname(stateRoot()), arch);
  const tcpPort = o.tcp === "none" ? undefined : o.tcp === 0 ? await freePort() : o.tcp;
  const vsockCid = vhostVsockAvailable() ? freeCid() : undefined;
  const tpm = o.tpm ? prepareTpm(o.name, dir) : undefined;
  const net = tcpPort === undefined ? undefined : (o.net ?? (passtAvailable() ? "passt" : "user"));
  const passt = passtPaths(dir);
  // Helpers of a QEMU that never ran (or never connected) end here.
  const stopHelpers = () => {
    stopSwtpm(path.join(dir, "swtpm.pid"));
    stopPasst(passt.pid);
  };
  if (net === "passt") {
    try {
      await startPasst(passt, agentForwards({ tcpPort, forwards: o.forwards }));
    } catch (err) {
      stopHelpers();
      removeState(o.name);
      throw err;
    }
  }
  const agentImageBytes = o.agentImage !== undefined ? fs.statSync(o.agentImage).size : undefined;
  const qemu: QemuOptions = { ...o, arch, shares, accel, stateDir: dir, tcpPort, vsockCid, tpm, agentImageBytes, passtSocket: net === "passt" ? passt.socket : undefined };
  const start = () => {
    const args = qemuArgs(qemu);
    const qemuBin = qemuBinary(arch);
    fs.writeFileSync(path.join(dir, "qemu.args"), JSON.stringify([qemuBin, ...args]) + "\n");
    const r = spawnSync(qemuBin, args, { encoding: "utf8" });
    if (r.error) throw new FractalError(ErrorCode.NOT_FOUND, `cannot run ${qemuBin}: ${r.error.message} (install ${arch === "aarch64" ? "qemu-system-arm" : "qemu-system-x86"})`);
    return r;
  };
  let r: ReturnType<typeof start>;
  try {
    r = start();
  } catch (err) {
    stopHelpers();
    throw err;
  }
  if (r.status !== 0) {
    stopHelpers();
    removeState(o.name);
    throw new FractalError(ErrorCode.INTERNAL, `QEMU failed to start (exit ${r.status}): ${(r.stderr || r.stdout).trim()}`);
  }
  // QEMU made its sockets and console log after daemonizing, under its own
  // umask 027: the owner's alone they should be (the directory already is).
  for (const f of fs.readdirSync(dir)) if (f !== VOLUMES && f !== TPM) fs.chmodSync(path.join(dir, f), 0o600);
  const pid = Number(fs.readFileSync(path.join(dir, "qemu.pid"), "utf8").trim());
  const rec: VmRecord = {
    name: o.name,
    pid,
    accel,
    net,
    memMiB: o.memMiB,
    cpus: o.cpus,
    created: new Date().toISOString(),
    endpoints: {
      serial: `serial://${dir}/agent.sock`,
      tcp: tcpPort !== undefined ? `tcp://127.0.0.1:${tcpPort}` : undefined,
      vsock: vsockCid !== undefined ? `vsock://${vsockCid}:${AGENT_PORT}` : undefined,
      uart: o.uart ? `serial://${dir}/uart.sock` : undefined,
    },
    console: path.join(dir, "console.log"),
    shares: [...o.shares.map((s) => `${s.hostDir}:${s.tag}${s.readonly ? ":ro" : ""}`), ...o.virtiofs.map((v) => `${v.socket}:${v.tag}:virtiofs`)],
    mounts: shares.map((s) => ({ hostDir: s.hostDir, guestPath: s.guestPath ?? s.hostDir, readonly: s.readonly })),
    boot: { kernel: o.kernel, initrd: o.initrd, agentImage: o.agentImage, cmdline: kernelCmdline(qemu), tpm: tpm !== undefined, arch },
  };
  writeRecord(rec);
  await waitForAgent(rec, o.timeoutMs ?? (accel === "tcg" ? 180_000 : 60_000), o.progress, o.keyFile);
  return rec;
}

/** The VM's TPM, made at its first boot, started for this one; a fresh copy of the firmware's variables. */
function prepareTpm(name: string, dir: string): NonNullable<QemuOptions["tpm"]> {
  const { code, vars } = ovmfFiles();
  for (const f of [code, vars]) {
    if (!fs.existsSync(f)) throw new FractalError(ErrorCode.NOT_FOUND, `--tpm needs UEFI firmware: ${f} does not exist (install Debian's ovmf, or set FRACTAL_OVMF_CODE and FRACTAL_OVMF_VARS)`);
  }
  ensureTpmState(tpmDir(name), tpmCaDir());
  const firmwareVars = path.join(dir, "ovmf-vars.fd");
  fs.copyFileSync(vars, firmwareVars);
  const socket = path.join(dir, "swtpm.sock");
  startSwtpm({ state: tpmDir(name), socket, pid: path.join(dir, "swtpm.pid"), log: path.join(dir, "swtpm.log") });
  return { socket, firmwareCode: code, firmwareVars };
}

const FIRST_ATTEMPT_MS = 1000;
const ATTEMPT_GROWTH_MS = 500;

/** The longest the first attempt waits for QEMU's word that the guest opened the agent's port. */
const PORT_WORD_MS = 20_000;

/**
 * Pings the agent at `url` until it answers or `deadline` passes; `alive`
 * stops the wait early (QEMU gone). Within an attempt, on a serial link, the
 * Hello is repeated every 300 ms. With `portOpened` (true once the guest
 * opened the agent's serial port, false when that cannot be known), the
 * first attempt waits for it. Resolves with the connection that answered
 * (the caller closes it), or undefined.
 */
async function untilAnswers(url: string, deadline: number, maxAttemptMs: number, alive: () => boolean, tick?: () => void, keyFile?: string, portOpened?: Promise<boolean>): Promise<AgentClient | undefined> {
  // A virtio-serial connection made before the guest opened its port can
  // stay deaf after the agent listens (its answers never arrive; a new
  // connection is heard at once), and when it is closed, the agent takes
  // its hang-up for a host leaving and the next host's first Hello may go
  // unheard until it is repeated. So the first connection waits for QEMU
  // to say the port opened. Without that word (no QMP, or none in
  // PORT_WORD_MS), attempts start short and grow: short, so a deaf one
  // costs little; growing, so an agent slower than the short attempts
  // still gets through.
  if (portOpened) {
    const until = Math.min(deadline, Date.now() + PORT_WORD_MS);
    // A tick a second: boot's progress line goes on counting meanwhile.
    while (Date.now() < until && alive()) {
      tick?.();
      if (await within(portOpened, Math.min(1000, until - Date.now()))) break;
    }
  }
  for (let attemptMs = FIRST_ATTEMPT_MS; Date.now() < deadline && alive(); attemptMs = Math.min(maxAttemptMs, attemptMs + ATTEMPT_GROWTH_MS)) {
    tick?.();
    let c: AgentClient | undefined;
    try {
      c = await AgentClient.connect(url, { handshakeTimeoutMs: attemptMs, keyFile });
      await pingWithin(c, attemptMs);
      return c;
    } catch {
      c?.close();
      await sleep(100);
    }
  }
  return undefined;
}

/** Waits for `p`, but no longer than `ms`; true when `p` settled in time. */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const settled = await Promise.race([p.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms)))]);
  clearTimeout(timer);
  return settled;
}

/** The longest boot waits for the guest's links once the agent answers: DHCP takes about a second under TCG. */
const NETWORK_WAIT_MS = 30_000;

/**
 * Asks the agent, on the connection that just answered over the serial link
 * (a serial reconnect is slow under TCG, and the fragile path), until the
 * guest's links are configured, so that the first TCP connection finds the
 * guest's address: one made before is lost in the user-mode network (passt
 * then spins on it until its handshake times out). Gives up quietly: the
 * TCP wait after it reports. An agent too old to say answers false until
 * the wait ends.
 */
async function untilNetworkReady(c: AgentClient, deadline: number, alive: () => boolean): Promise<void> {
  const end = Math.min(deadline, Date.now() + NETWORK_WAIT_MS);
  try {
    while (Date.now() < end && alive() && !(await c.version()).networkReady) await sleep(100);
  } catch {
    // the serial link went away after answering: the TCP wait reports
  }
}

/**
 * Waits for the agent on the serial channel, then on TCP when there is one:
 * the agent answers on virtio-serial before DHCP has given the guest an
 * address, and `exec --vm` prefers TCP, so the first exec must not race DHCP.
 */
async function waitForAgent(rec: VmRecord, timeoutMs: number, progress?: (ms: number, accel: string) => void, keyFile?: string): Promise<void> {
  const t0 = Date.now();
  const deadline = t0 + timeoutMs;
  const alive = () => qemuAlive(rec.pid);
  const tick = () => progress?.(Date.now() - t0, rec.accel);
  const port = watchPortOpen(qmpSocket(rec.name), AGENT_PORT_ID);
  const serial = await untilAnswers(rec.endpoints.serial, deadline, 5000, alive, tick, keyFile, port.opened).finally(port.close);
  if (serial && rec.endpoints.tcp) await untilNetworkReady(serial, deadline, alive);
  serial?.close();
  const tcp = serial && rec.endpoints.tcp ? await untilAnswers(rec.endpoints.tcp, deadline, 3000, alive, tick, keyFile) : undefined;
  tcp?.close();
  if (serial && (!rec.endpoints.tcp || tcp)) return;
  const tail = consoleTail(rec.console);
  if (!alive()) {
    stopSwtpm(path.join(vmDir(rec.name), "swtpm.pid"));
    removeState(rec.name);
    throw new FractalError(ErrorCode.UNAVAILABLE, `VM ${rec.name}: QEMU exited during boot. Console:\n${tail}`);
  }
  // Asked before the kill: where the guest is stuck is the first question.
  const seen = serial ? "" : await guestSnapshot(qmpSocket(rec.name));
  await killVm(rec);
  removeState(rec.name);
  const what = serial
    ? `the agent answers on virtio-serial but not over TCP (${rec.endpoints.tcp}) within ${Math.round(timeoutMs / 1000)} s (is DHCP failing?)`
    : `the agent did not answer within ${Math.round(timeoutMs / 1000)} s (accel ${rec.accel})${seen ? `. ${seen}` : ""}`;
  const lines = tail === "" ? "The guest printed nothing on its console: its kernel never reached init (the kernel is quiet until it fails)" : `Last console lines:\n${tail}`;
  throw new FractalError(ErrorCode.UNAVAILABLE, `VM ${rec.name}: ${what}; the VM was stopped. ${lines}`);
}

export function listVms(): VmStatus[] {
  return listNames().flatMap((name) => {
    const record = readRecord(name);
    if (!record) return [];
    return [{ record, state: qemuAlive(record.pid) ? ("running" as const) : ("stale" as const) }];
  });
}

/** The state of a running VM, or a clear error; stale state is cleaned on the way. */
export function requireVm(name: string): VmRecord {
  const rec = readRecord(name);
  if (!rec) throw new FractalError(ErrorCode.VM_NOT_FOUND, `no VM named ${name} (see fractal-host ls)`);
  if (!qemuAlive(rec.pid)) {
    removeState(name);
    throw new FractalError(ErrorCode.UNAVAILABLE, `VM ${name} is not running (its QEMU, pid ${rec.pid}, is gone); its stale state was removed`);
  }
  return rec;
}

/** The endpoint `exec --vm` uses: vsock, then TCP (both allow many connections), then the serial port. */
export function vmEndpoint(rec: VmRecord): string {
  return rec.endpoints.vsock ?? rec.endpoints.tcp ?? rec.endpoints.serial;
}

/** QEMU's machine-protocol socket in the VM's state directory. */
export function qmpSocket(name: string): string {
  return path.join(vmDir(name), "qmp.sock");
}

/** True once QEMU is gone: its QMP socket closing says so, with the pid as the last word. */
async function waitExit(rec: VmRecord, ms: number): Promise<boolean> {
  return (await qemuExited(qmpSocket(rec.name), ms)) || !qemuAlive(rec.pid);
}

/** Ends QEMU: a QMP quit (it exits at once, flushing nothing the guest owns), then signals if that fails. */
async function killVm(rec: VmRecord): Promise<void> {
  try {
    const qmp = await Qmp.connect(qmpSocket(rec.name), 2000);
    await qmp.execute("quit").catch(() => {}); // QEMU may close before it answers
    qmp.close();
    if (await waitExit(rec, 5000)) return;
  } catch {
    // no QMP (an older VM, or QEMU stuck): signals
  }
  await signalVm(rec, ["SIGTERM", "SIGKILL"]);
}

/** Sends QEMU each signal in turn until it exits, then ends a swtpm it left behind. */
async function signalVm(rec: VmRecord, signals: readonly NodeJS.Signals[]): Promise<void> {
  for (const sig of signals) {
    try {
      process.kill(rec.pid, sig);
    } catch {
      break; // gone already
    }
    if (await waitExit(rec, 5000)) break;
  }
  // swtpm ends when QEMU closes its socket; one left behind is ended here.
  stopSwtpm(path.join(vmDir(rec.name), "swtpm.pid"));
}

/**
 * Ends a VM at once, with SIGKILL, for owners that cannot wait for a
 * power-off or even a QMP quit: the shim's delete command, which containerd
 * gives 5 s, its own start included, while a quit waits on a QEMU the host
 * may be starving.
 */
export async function killVmNow(name: string): Promise<void> {
  const rec = readRecord(name);
  if (!rec) return;
  if (qemuAlive(rec.pid)) await signalVm(rec, ["SIGKILL"]);
  removeState(name);
}

/** Graceful power-off through the agent; kills QEMU if that does not finish in time. Returns how it ended. */
export async function stopVm(name: string, graceMs = 20_000, keyFile?: string): Promise<"shutdown" | "killed" | "stale"> {
  const rec = readRecord(name);
  if (!rec) throw new FractalError(ErrorCode.VM_NOT_FOUND, `no VM named ${name} (see fractal-host ls)`);
  if (!qemuAlive(rec.pid)) {
    removeState(name);
    return "stale";
  }
  let how: "shutdown" | "killed" = "killed";
  // The network endpoint first; then the VM's own serial socket, which needs
  // no key: a VM booted with another key than the one at hand (a test's, a
  // colleague's) still powers off cleanly instead of being killed.
  for (const endpoint of [...new Set([vmEndpoint(rec), rec.endpoints.serial])]) {
    try {
      const c = await AgentClient.connect(endpoint, { handshakeTimeoutMs: 5000, keyFile });
      await c.call({ shutdown: { reboot: false } }, "ok");
      c.close();
      if (await waitExit(rec, graceMs)) how = "shutdown";
      break;
    } catch {
      // unreachable there: the next endpoint, else kill QEMU
    }
  }
  if (how === "killed") await killVm(rec);
  removeState(name);
  return how;
}
