// One container: its bundle directory, its overlay root, the OCI runtime
// process that runs it, and its output log. The runtime (crun) is started
// by the guest's one shim (fractal-ns -shimd, see shim.ts), which holds the
// container's stdio as FIFOs in the bundle and records its exit status
// there, so a container outlives the agent: a restarted agent finds the
// bundle (container.json), reopens the FIFOs and goes on logging and serving
// it. The shim starts crun from a root it can pivot_root away from, which
// the guest's initramfs root is not.
import fs from "node:fs";
import path from "node:path";
import { S_IFIFO, mknod } from "../../proto/libc.js";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import { log } from "../log.js";
import type { ExitResult } from "../process/child.js";
import { MNT_DETACH, umount2 } from "../../proto/libc.js";
import { OutputLog, type OutputSink } from "./output.js";
import { resizeByPidFile } from "./winsize.js";
import { containerShim } from "./shim.js";

export const RUNTIME = "/bin/crun";
/** Every container's cgroup lives under this one; crun's own is a child of ours. */
export const CGROUP_ROOT = "/sys/fs/cgroup/fractal";
/** What a bundle keeps about its container, for an agent that restarts. */
const RECORD = "container.json";

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
  /** --rm: removed once it exits. */
  remove: boolean;
  createdMs: number;
  /** The root overlay's lower directories, topmost first; absent for a root prepared outside fractal. */
  lowers?: string[];
  /** Guest directories bound into it (volumes, the shim's binds). */
  binds?: { source: string; destination: string; readonly: boolean }[];
}

export class Container {
  finishedMs = 0;
  exit?: ContainerExit;
  readonly output: OutputLog;
  private stdinFd = -1;
  /** Writes to the stdin FIFO, waiting for room when the container is not reading (no busy retry). */
  private stdinSink: ReturnType<ReturnType<typeof Bun.file>["writer"]> | undefined;
  private stdinOpen: boolean;
  private startedShim = false;
  /** Settles once the runtime has its process (the pid file), or gave up. */
  private launched: Promise<void> = Promise.resolve();
  readonly done: Promise<ContainerExit>;
  private resolveDone!: (e: ContainerExit) => void;

  constructor(readonly init: ContainerInit) {
    this.output = new OutputLog(path.join(init.bundle, "output"));
    this.stdinOpen = init.interactive;
    this.done = new Promise((r) => (this.resolveDone = r));
  }

  /** A container a previous agent started, from its bundle; undefined if the bundle is not one. */
  static adopt(bundle: string): Container | undefined {
    let init: ContainerInit;
    try {
      init = JSON.parse(fs.readFileSync(path.join(bundle, RECORD), "utf8")) as ContainerInit;
    } catch {
      return undefined;
    }
    if (init.bundle !== bundle) return undefined;
    const c = new Container(init);
    c.startedShim = true;
    c.connect(false);
    return c;
  }

  get id(): string {
    return this.init.id;
  }
  get name(): string {
    return this.init.name;
  }
  get createdMs(): number {
    return this.init.createdMs;
  }
  get running(): boolean {
    return this.startedShim && this.exit === undefined;
  }
  /** The container's first process, as the runtime reported it (0 before it started). */
  get pid(): number {
    return Number(readQuiet(this.pidFile) ?? 0);
  }
  get rootfs(): string {
    return path.join(this.init.bundle, "rootfs");
  }
  /**
   * The root as the container's processes see it: through its mount
   * namespace while it runs (images stacked into it live are there), else
   * the root overlay as mounted for it.
   */
  get root(): string {
    const pid = this.running ? this.pid : 0;
    return pid > 0 ? `/proc/${pid}/root` : this.rootfs;
  }
  get pidFile(): string {
    return path.join(this.init.bundle, "pid");
  }
  get cgroup(): string {
    return path.join(CGROUP_ROOT, this.id);
  }
  private fifo(name: "stdin" | "stdout" | "stderr"): string {
    return path.join(this.init.bundle, name);
  }

  /** Has the shim start `crun run`; output flows to the log and to sinks attached before this call. */
  async start(): Promise<void> {
    const { bundle } = this.init;
    fs.writeFileSync(path.join(bundle, RECORD), JSON.stringify(this.init));
    const fifos: ("stdin" | "stdout" | "stderr")[] = this.init.interactive ? ["stdout", "stderr", "stdin"] : ["stdout", "stderr"];
    for (const f of fifos) mknod(this.fifo(f), S_IFIFO, 0o600);
    const console = this.init.tty ? path.join(bundle, "console.sock") : undefined;
    const argv = [RUNTIME, "run", ...(console ? ["--console-socket", console] : []), "--bundle", bundle, "--pid-file", this.pidFile, this.id];
    this.startedShim = true;
    // Until the shim has its ends open, our own writers stand in for them:
    // a FIFO with no writer at all reads as EOF, which would mean "exited".
    const bridge = this.connect(true);
    try {
      await containerShim.start({ bundle, stdin: this.init.interactive, console, argv });
    } catch (err) {
      // Not started: the readers see EOF, and no exit is recorded for it.
      this.startedShim = false;
      for (const fd of bridge) fs.closeSync(fd);
      this.closeStdinFd();
      throw err;
    }
    this.launched = runtimeReported(bundle, containerShim.lost()).then(() => {
      for (const fd of bridge) fs.closeSync(fd);
    });
  }

  /** Opens the FIFOs and pumps output into the log until the shim is gone; returns the bridge writers asked for. */
  private connect(bridge = false): number[] {
    const flags = fs.constants.O_RDONLY | fs.constants.O_NONBLOCK;
    const outs = [fs.openSync(this.fifo("stdout"), flags), fs.openSync(this.fifo("stderr"), flags)];
    const writers = bridge ? [fs.openSync(this.fifo("stdout"), fs.constants.O_WRONLY | fs.constants.O_NONBLOCK), fs.openSync(this.fifo("stderr"), fs.constants.O_WRONLY | fs.constants.O_NONBLOCK)] : [];
    const pumps = [this.pump(outs[0]!, 1), this.pump(outs[1]!, 2)];
    // Read-write: opening never waits for the shim, and a writer exists
    // while we are here; the shim's own writer covers the time we are not.
    if (this.stdinOpen) {
      this.stdinFd = fs.openSync(this.fifo("stdin"), fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
      this.stdinSink = Bun.file(this.stdinFd).writer();
    }
    void Promise.all(pumps).then(() => this.finish());
    return writers;
  }

  /** Copies one FIFO into the log; it ends when the shim and the container have closed their write ends. */
  private async pump(fd: number, kind: 1 | 2): Promise<void> {
    const reader = Bun.file(fd).stream().getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        // Waiting for attached clients paces the container: a full FIFO blocks its writes.
        await this.output.write(kind, value);
      }
    } catch (err) {
      log("warn", `container ${this.name}: reading its output: ${(err as Error).message}`);
    } finally {
      fs.closeSync(fd);
    }
  }

  /**
   * Resolves once the runtime reports the container's process (its pid
   * file), or it already ended: then exec, kill and state work.
   */
  started(): Promise<void> {
    return this.launched;
  }

  private finish(): void {
    if (!this.startedShim) return;
    const text = readQuiet(path.join(this.init.bundle, "exit"));
    const m = /^(exited|signaled) (\d+)/.exec(text ?? "");
    // No status: the shim itself was killed; the container went with it.
    const status: ExitResult = !m ? { kind: "exited", code: 255 } : m[1] === "signaled" ? { kind: "signaled", signal: Number(m[2]) } : { kind: "exited", code: Number(m[2]) };
    if (!m) log("warn", `container ${this.name}: its shim ended without recording an exit status`);
    const exit = { status, oomKilled: oomKills(this.cgroup) > 0 };
    this.exit = exit;
    this.finishedMs = fileMtime(path.join(this.init.bundle, "exit")) ?? Date.now();
    this.closeStdinFd();
    this.output.close();
    log("info", `container ${this.name} (${this.id.slice(0, 12)}) exited: ${describe(exit)}`);
    this.resolveDone(exit);
  }

  /** See OutputLog.attach: only a client feeding stdin paces the container. */
  attach(sink: OutputSink, o: { pace: boolean; fromStart: boolean; follow: boolean }): void {
    this.output.attach(sink, o);
  }

  /** Resolves once the FIFO took the chunk: a container that does not read holds its writer back. */
  async writeStdin(chunk: Uint8Array): Promise<void> {
    const sink = this.stdinSink;
    if (!sink || !this.acceptsStdin) return;
    sink.write(chunk);
    await sink.flush();
  }

  closeStdin(): void {
    if (!this.stdinOpen || !this.running) return;
    this.stdinOpen = false;
    this.closeStdinFd();
    // The shim drops its writer too, so the container reads EOF; a shim
    // that is gone took the container with it.
    containerShim.closeStdin(this.init.bundle).catch(() => {});
  }

  private closeStdinFd(): void {
    if (this.stdinFd < 0) return;
    void Promise.resolve(this.stdinSink?.end()).catch(() => {});
    this.stdinSink = undefined;
    fs.closeSync(this.stdinFd);
    this.stdinFd = -1;
  }

  get acceptsStdin(): boolean {
    return this.stdinOpen && this.running;
  }

  resize(cols: number, rows: number): void {
    if (!this.init.tty) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `container ${this.name} has no terminal to resize`);
    if (!this.running) return;
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

/**
 * Resolves once the runtime reported the container's process (a non-empty
 * pid file in the bundle) or its end (the shim's exit file), or `giveUp`
 * settles (the shim died): inotify on the bundle directory, not a polling
 * loop.
 */
function runtimeReported(bundle: string, giveUp: Promise<unknown>): Promise<void> {
  return new Promise((resolve) => {
    const seen = () => (readQuiet(path.join(bundle, "pid")) ?? "").trim() !== "" || fs.existsSync(path.join(bundle, "exit"));
    const done = () => {
      watcher.close();
      resolve();
    };
    const watcher = fs.watch(bundle, () => {
      if (seen()) done();
    });
    void giveUp.then(done, done);
    // Either may have appeared before the watch began.
    if (seen()) done();
  });
}

function readQuiet(file: string): string | undefined {
  try {
    return fs.readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
}

function fileMtime(file: string): number | undefined {
  return fs.statSync(file, { throwIfNoEntry: false })?.mtimeMs;
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
