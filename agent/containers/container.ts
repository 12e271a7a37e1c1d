// One container: its bundle directory, its overlay root, the OCI runtime
// process that runs it, and its output log. The runtime (crun) is started
// through the namespace helper's -pivotable mode, so it can pivot_root even
// though the guest's root is the initramfs; `crun run` stays in the
// foreground as our child, which gives us the exit status without a shim.
import fs from "node:fs";
import path from "node:path";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import { log } from "../log.js";
import { startChild, type Child, type ExitResult } from "../process/child.js";
import { MNT_DETACH, umount2 } from "../sys/linux.js";
import { OutputLog, type OutputSink } from "./output.js";
import { resizeByPidFile } from "./winsize.js";

export const RUNTIME = "/bin/crun";
export const NS_HELPER = "/bin/fractal-ns";
/** Every container's cgroup lives under this one; crun's own is a child of ours. */
export const CGROUP_ROOT = "/sys/fs/cgroup/fractal";

export interface ContainerExit {
  status: ExitResult;
  oomKilled: boolean;
}

export interface ContainerInit {
  id: string;
  name: string;
  image: string;
  args: string[];
  env: string[];
  cwd: string;
  bundle: string;
  tty?: { cols: number; rows: number };
  interactive: boolean;
}

export class Container {
  readonly createdMs = Date.now();
  finishedMs = 0;
  exit?: ContainerExit;
  readonly output: OutputLog;
  private child?: Child;
  private stdinOpen: boolean;
  readonly done: Promise<ContainerExit>;
  private resolveDone!: (e: ContainerExit) => void;

  constructor(readonly init: ContainerInit) {
    this.output = new OutputLog(path.join(init.bundle, "output"));
    this.stdinOpen = init.interactive;
    this.done = new Promise((r) => (this.resolveDone = r));
  }

  get id(): string {
    return this.init.id;
  }
  get name(): string {
    return this.init.name;
  }
  get running(): boolean {
    return this.child !== undefined && this.exit === undefined;
  }
  get pid(): number {
    return this.child?.pid ?? 0;
  }
  get rootfs(): string {
    return path.join(this.init.bundle, "rootfs");
  }
  get pidFile(): string {
    return path.join(this.init.bundle, "pid");
  }
  get cgroup(): string {
    return path.join(CGROUP_ROOT, this.id);
  }

  /** Starts `crun run`; output flows to the log and to sinks attached before this call. */
  start(): void {
    const { bundle, tty } = this.init;
    this.child = startChild(
      { argv: [NS_HELPER, "-pivotable", "--", RUNTIME, "run", "--bundle", bundle, "--pid-file", this.pidFile, this.id], env: process.env as Record<string, string>, cwd: bundle, tty },
      { stdout: (c) => this.output.write(1, c), stderr: (c) => this.output.write(2, c) },
    );
    if (!this.init.interactive && !tty) this.child.closeStdin();
    void this.child.done.then((status) => this.finish(status));
  }

  /**
   * Resolves once the runtime reports the container's process (its pid
   * file), or it already exited: then exec, kill and state work.
   */
  async started(): Promise<void> {
    while (this.exit === undefined && !fs.existsSync(this.pidFile)) {
      await Promise.race([this.done, new Promise((r) => setTimeout(r, 20))]);
    }
  }

  private finish(status: ExitResult): void {
    const exit = { status, oomKilled: oomKills(this.cgroup) > 0 };
    this.exit = exit;
    this.finishedMs = Date.now();
    this.output.close();
    log("info", `container ${this.name} (${this.id.slice(0, 12)}) exited: ${describe(exit)}`);
    this.resolveDone(exit);
  }

  attach(sink: OutputSink, logs: boolean, follow: boolean): void {
    this.output.attach(sink, logs, follow);
  }

  async writeStdin(chunk: Uint8Array): Promise<void> {
    if (this.stdinOpen && this.running) await this.child!.writeStdin(chunk);
  }

  closeStdin(): void {
    if (!this.stdinOpen || !this.running) return;
    this.stdinOpen = false;
    this.child!.closeStdin();
  }

  get acceptsStdin(): boolean {
    return this.stdinOpen && this.running;
  }

  resize(cols: number, rows: number): void {
    if (!this.init.tty) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `container ${this.name} has no terminal to resize`);
    if (!this.running) return;
    this.child!.resize(cols, rows);
    resizeByPidFile(this.pidFile, cols, rows);
  }

  /** Deletes the container's files; it must have exited. */
  cleanUp(): void {
    try {
      umount2(this.rootfs, MNT_DETACH);
    } catch {
      // not mounted (the run failed before the mount)
    }
    fs.rmSync(this.init.bundle, { recursive: true, force: true });
    try {
      fs.rmdirSync(this.cgroup);
    } catch {
      // crun never created it
    }
  }
}

function oomKills(cgroup: string): number {
  try {
    // memory.events counts are hierarchical: crun's own cgroup below ours is
    // gone by now, but its OOM kills stay counted here.
    const m = /^oom_kill (\d+)$/m.exec(fs.readFileSync(path.join(cgroup, "memory.events"), "utf8"));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

export function describe(e: ContainerExit): string {
  const how = e.status.kind === "exited" ? `exit code ${e.status.code}` : `signal ${e.status.signal}`;
  return e.oomKilled ? `${how}, OOM-killed` : how;
}
