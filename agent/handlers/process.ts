// Process handlers: exec, signal, resize, close-stdin, wait. Each connection
// has its own ProcessTable; when the connection goes, its processes get
// SIGHUP, as a login session's do when the terminal hangs up.
import fs from "node:fs";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import { HOST_ROOT, NS_HELPER } from "../../proto/guest.js";
import type { ResponseBody, Session } from "../../proto/session.js";
import type { InStream, OutStream } from "../../proto/stream.js";
import type { ExecCommand } from "../commands.js";
import { startChild, type Child, type ChildSpec, type ExitResult } from "../process/child.js";
import { ProcessTable } from "../process/table.js";
import { log } from "../log.js";
import { resizeByPidFile } from "../containers/winsize.js";
import type { ContainerManager } from "../containers/manager.js";
import { containerExecArgv } from "./containers.js";

const SIGHUP = 1;
const discard = () => Promise.resolve();


/**
 * Wraps argv so the helper runs it in a private mount namespace. The
 * namespace is never entered by this process: unshare(2) and setns(2)
 * change only the calling thread, and Bun runs many threads.
 */
function inNamespace(argv: string[], ns: { local: string; remote: string }[], cwd: string): string[] {
  const binds = ns.flatMap((e) => ["-bind", `${e.local}=${e.remote}`]);
  return [NS_HELPER, "-root", HOST_ROOT, ...binds, "-cwd", cwd, "--", ...argv];
}

function hostRootMounted(): boolean {
  try {
    return fs.readFileSync("/proc/mounts", "utf8").split("\n").some((l) => l.split(" ")[1] === HOST_ROOT);
  } catch {
    return false;
  }
}

export class ProcessHandlers {
  private readonly table = new ProcessTable();
  /** Processes in containers: where the runtime wrote their pid (for resize). */
  private readonly pidFiles = new Map<number, string>();

  constructor(
    private readonly session: Session,
    private readonly containers: ContainerManager,
  ) {
    session.onClose(() => this.hangUp());
  }

  /** Starts a process: where and how it runs, its streams, then the child itself. */
  exec(cmd: ExecCommand, requestId: number): ResponseBody {
    const launch = this.launchSpec(cmd);
    const streams = this.openStdio(cmd);
    let child: Child;
    try {
      child = startChild(launch, {
        stdout: streams.stdout ? (c) => streams.stdout!.write(c) : discard, // checked in the condition
        stderr: streams.stderr ? (c) => streams.stderr!.write(c) : discard,
      });
    } catch (err) {
      streams.stdin?.reset("exec failed");
      streams.stdout?.end();
      streams.stderr?.end();
      throw err;
    }
    this.feedStdin(child, streams.stdin, cmd.tty !== undefined);
    const entry = this.table.add(child, requestId);
    if (launch.pidFile) this.pidFiles.set(entry.handle, launch.pidFile);
    void child.done.then(() => {
      streams.stdout?.end();
      streams.stderr?.end();
      if (launch.pidFile) fs.rmSync(launch.pidFile, { force: true });
    });
    return { exec: { process: entry.handle, pid: child.pid } };
  }

  /** The argv, environment and directory to start: in the guest, in a container (through the runtime), or in a namespace of host paths (through the helper). */
  private launchSpec(cmd: ExecCommand): ChildSpec & { pidFile?: string } {
    const { tty } = cmd;
    const agentEnv = { ...(process.env as Record<string, string>) }; // process.env holds strings only
    if (cmd.container) {
      // The container's environment, cwd and user apply inside it; the
      // runtime itself runs with the agent's.
      const ce = containerExecArgv(this.containers, cmd, cmd.container);
      return { argv: ce.argv, env: agentEnv, cwd: "/", tty, pidFile: ce.pidFile };
    }
    const env: Record<string, string> = cmd.replaceEnv ? {} : agentEnv;
    for (const [k, v] of cmd.env) env[k] = v;
    const ids = cmd.user ? { uid: cmd.user.uid, gid: cmd.user.gid } : {};
    if (cmd.namespace) {
      if (!hostRootMounted()) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `--namespace needs the host's root at ${HOST_ROOT}: boot the VM with --host-root`);
      // The working directory is inside the namespace; the helper falls back to / when it is not there.
      return { argv: inNamespace(cmd.argv, cmd.namespace, cmd.cwd || "/"), env, cwd: "/", tty, ...ids };
    }
    const cwd = cmd.cwd || process.cwd();
    checkDirectory(cwd);
    return { argv: cmd.argv, env, cwd, tty, ...ids };
  }

  /**
   * Opens the streams the request named before anything can fail
   * asynchronously: data for stdin may already be on its way right behind
   * the request. A terminal has one output: no stderr stream.
   */
  private openStdio(cmd: ExecCommand): { stdin?: InStream; stdout?: OutStream; stderr?: OutStream } {
    const s = this.session;
    const { stdin, stdout, stderr } = cmd.stdio;
    return {
      stdin: stdin ? s.openIn(stdin) : undefined,
      stdout: stdout ? s.openOut(stdout) : undefined,
      stderr: stderr && !cmd.tty ? s.openOut(stderr) : undefined,
    };
  }

  /** Connects the client's stdin stream to the child; without one, a pipe child reads EOF at once. */
  private feedStdin(child: Child, stdin: InStream | undefined, tty: boolean): void {
    if (stdin) {
      stdin.pipeTo({
        data: (chunk, done) => void child.writeStdin(chunk).then(done, done),
        end: () => child.closeStdin(),
        abort: () => child.closeStdin(),
      });
    } else if (!tty) {
      child.closeStdin();
    }
  }

  signal(handle: number, sig: number, group: boolean): ResponseBody {
    this.table.requireRunning(handle, "signal").signal(sig, group);
    return { ok: {} };
  }

  resize(handle: number, cols: number, rows: number): ResponseBody {
    this.table.requireRunning(handle, "resize").resize(cols, rows);
    const pidFile = this.pidFiles.get(handle);
    if (pidFile) resizeByPidFile(pidFile, cols, rows);
    return { ok: {} };
  }

  closeStdin(handle: number): ResponseBody {
    this.table.requireRunning(handle, "close stdin").closeStdin();
    return { ok: {} };
  }

  /** The handle of the process the Exec request `requestId` started. */
  startedBy(requestId: number): number {
    return this.table.startedBy(requestId);
  }

  async wait(handle: number): Promise<ResponseBody> {
    const entry = this.table.get(handle);
    const status = await entry.child.done;
    // Stream ends were queued when `done` resolved, ahead of this response,
    // so the client has every byte of output before it sees the status.
    this.table.remove(handle);
    this.pidFiles.delete(handle);
    return { exit: toWire(status) };
  }

  private hangUp(): void {
    for (const e of this.table.running()) {
      log("info", `connection closed: sending SIGHUP to process ${e.child.pid}`);
      e.child.closeStdin();
      e.child.signal(SIGHUP, true);
    }
  }
}

function toWire(s: ExitResult): NonNullable<ResponseBody["exit"]> {
  return s.kind === "exited" ? { code: s.code } : { signal: s.signal };
}

function checkDirectory(dir: string): void {
  let st;
  try {
    st = fs.statSync(dir);
  } catch {
    throw new FractalError(ErrorCode.INVALID_ARGUMENT, `working directory ${dir} does not exist`);
  }
  if (!st.isDirectory()) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `working directory ${dir} is not a directory`);
}
