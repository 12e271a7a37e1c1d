// The one VM a shim's containers run in. It boots on the first Create,
// with containerd's snapshotter directory shared into it over virtiofs at
// the same path, so a container's root is containerd's own overlay: the
// read-only lower snapshots (shared by every container that uses them) and
// the container's writable upper, written in place on the host.
//
// virtiofs, not 9p: overlayfs takes a remote upper layer only if it has
// RENAME_WHITEOUT, d_type and xattrs, and 9p lacks RENAME_WHITEOUT
// ("upper fs missing required features"). Debian's virtiofsd has all
// three; with CAP_SYS_ADMIN kept (modcaps=+sys_admin) the guest's overlay
// reads and writes trusted.overlay.* on the host, so opaque directories
// and whiteouts are the ones containerd's overlayfs snapshotter writes.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { AgentClient } from "../../client.js";
import { ensureKey } from "../../keygen.js";
import { loadSigner } from "../../keys.js";
import { bootVm, killVmNow, stopVm, vmEndpoint } from "../../vm/manager.js";
import { qemuAlive, readRecord, type VmRecord } from "../../vm/state.js";
import { publicKeyBlob } from "../../../proto/auth.js";
import { Code, TtrpcError } from "../ttrpc.js";
import type { GroupRecord } from "./group.js";
import type { ShimOptions } from "./options.js";

export class GuestVm {
  private booting?: Promise<void>;
  private client?: AgentClient;
  private virtiofsd?: ChildProcess;
  private watch?: ReturnType<typeof setInterval>;
  private shareRoot = "";
  private record?: VmRecord;
  /** Called once if the VM dies under us (not when we stop it). */
  onGone?: () => void;
  private stopping = false;

  constructor(
    private readonly group: Pick<GroupRecord, "vmName" | "stateDir">,
    private readonly opts: ShimOptions,
    private readonly log: (msg: string) => void,
    /** The key to authorise and sign with; default: one kept in the state directory. */
    private readonly keyFile?: string,
  ) {
    // The VM code reads its state root from the environment: this process serves one group only.
    process.env.FRACTAL_STATE = group.stateDir;
  }

  get pid(): number {
    return this.record?.pid ?? 0;
  }

  get booted(): boolean {
    return this.record !== undefined;
  }

  /** The agent, booting the VM first if needed; `shareRoot` is the snapshotter directory the container's root lives in. */
  async agent(shareRoot: string): Promise<AgentClient> {
    if (this.shareRoot && shareRoot !== this.shareRoot) {
      throw new TtrpcError(Code.FAILED_PRECONDITION, `this container's snapshots are in ${shareRoot}, but its VM ${this.group.vmName} shares ${this.shareRoot}`);
    }
    this.shareRoot = shareRoot;
    this.booting ??= this.boot().catch((err: Error) => {
      this.booting = undefined;
      this.shareRoot = "";
      throw err instanceof TtrpcError ? err : new TtrpcError(Code.UNAVAILABLE, `booting VM ${this.group.vmName}: ${err.message}`);
    });
    await this.booting;
    if (!this.client || this.client.session.closed) this.client = await this.connect();
    return this.client;
  }

  /** The agent of a VM that already booted (exec, kill, state of an existing task). */
  async running(): Promise<AgentClient> {
    if (!this.booting) throw new TtrpcError(Code.FAILED_PRECONDITION, `VM ${this.group.vmName} is not running`);
    return this.agent(this.shareRoot);
  }

  private key(): string {
    const file = this.keyFile ?? path.join(this.group.stateDir, "key");
    if (!fs.existsSync(file)) ensureKey(file, `containerd-shim-fractal@${this.group.vmName}`);
    return file;
  }

  private async connect(): Promise<AgentClient> {
    if (!this.record || !qemuAlive(this.record.pid)) throw new TtrpcError(Code.UNAVAILABLE, `VM ${this.group.vmName} is not running`);
    return AgentClient.connect(vmEndpoint(this.record), { keyFile: this.key(), handshakeTimeoutMs: 10_000 });
  }

  /** Boots the VM (or takes the running one of its name); agent() connects. */
  private async boot(): Promise<void> {
    fs.mkdirSync(this.group.stateDir, { recursive: true, mode: 0o700 });
    // A VM of this name that runs already (another `run --containerd`'s) is taken as it is.
    const existing = readRecord(this.group.vmName);
    if (existing && qemuAlive(existing.pid)) {
      this.record = existing;
      return;
    }
    for (const [what, file] of [
      ["kernel", this.opts.kernel],
      ["initramfs", this.opts.initrd],
      ["virtiofsd", this.opts.virtiofsd],
    ] as const) {
      if (!fs.existsSync(file)) throw new TtrpcError(Code.FAILED_PRECONDITION, `fractal shim: ${what} ${file} does not exist (set "${what === "initramfs" ? "initrd" : what}" in the shim's config)`);
    }
    const key = this.key();
    const signer = (await loadSigner(key))!; // just made, or there
    const sock = path.join(this.group.stateDir, `${this.group.vmName}.virtiofs.sock`);
    await this.startVirtiofsd(sock);
    this.log(`booting VM ${this.group.vmName} (${this.opts.memMiB} MiB, ${this.opts.cpus} CPUs) sharing ${this.shareRoot}`);
    const t0 = Date.now();
    this.record = await bootVm({
      name: this.group.vmName,
      kernel: this.opts.kernel,
      initrd: this.opts.initrd,
      agentImage: this.opts.agentImage,
      memMiB: this.opts.memMiB,
      cpus: this.opts.cpus,
      tcp: 0,
      shares: [],
      virtiofs: [{ socket: sock, tag: "snapshots", guestPath: this.shareRoot }],
      timeoutMs: this.opts.bootTimeoutS * 1000,
      append: [`fractal.key=${publicKeyBlob(signer.publicKey)}`],
      keyFile: key,
    });
    this.log(`VM ${this.group.vmName} ready in ${Date.now() - t0} ms (pid ${this.record.pid}, ${this.record.accel})`);
    // A VM killed from outside ends its tasks: checked once a second (a QMP
    // connection held open would keep `vm stop` and `delete` from using QMP).
    this.watch = setInterval(() => {
      if (this.record && !qemuAlive(this.record.pid) && !this.stopping) {
        clearInterval(this.watch);
        this.log(`VM ${this.group.vmName} (pid ${this.record.pid}) is gone`);
        this.onGone?.();
      }
    }, 1000);
  }

  private async startVirtiofsd(sock: string): Promise<void> {
    fs.rmSync(sock, { force: true });
    const logPath = path.join(this.group.stateDir, `${this.group.vmName}.virtiofsd.log`);
    const logFile = fs.openSync(logPath, "a");
    const args = [`--socket-path=${sock}`, "-o", `source=${this.shareRoot}`, "-o", "xattr", "-o", "modcaps=+sys_admin", "-o", "cache=auto"];
    // It exits when QEMU disconnects, so it needs no stopping of its own.
    this.virtiofsd = spawn(this.opts.virtiofsd, args, { detached: true, stdio: ["ignore", logFile, logFile] });
    fs.closeSync(logFile);
    this.virtiofsd.unref();
    const deadline = Date.now() + 10_000;
    while (!fs.existsSync(sock)) {
      if (this.virtiofsd.exitCode !== null || Date.now() > deadline) {
        throw new TtrpcError(Code.UNAVAILABLE, `virtiofsd did not start (see ${logPath})`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Powers the VM off (killing it if it does not go in time); virtiofsd follows QEMU. */
  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.watch);
    this.client?.close();
    if (readRecord(this.group.vmName)) await stopVm(this.group.vmName, 10_000, this.key()).catch((err: Error) => this.log(`stopping VM: ${err.message}`));
    if (this.virtiofsd && this.virtiofsd.exitCode === null) this.virtiofsd.kill("SIGKILL");
  }
}

/**
 * Ends a group's VM from another process: the delete command, after the
 * shim died. With SIGKILL, not a power-off or a QMP quit: its tasks are
 * being reported killed, and containerd gives delete only 5 s.
 */
export async function killGroupVm(group: GroupRecord): Promise<void> {
  process.env.FRACTAL_STATE = group.stateDir;
  await killVmNow(group.vmName).catch(() => {});
}
