// Process handlers: exec, signal, resize, close-stdin, wait. Each connection
// has its own ProcessTable; when the connection goes, its processes get
// SIGHUP, as a login session's do when the terminal hangs up.
import fs from "node:fs";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import { checkSignal } from "../../proto/signals.js";
import { HOST_ROOT, NS_HELPER } from "../../proto/guest.js";
import type { ResponseBody, Session } from "../../proto/session.js";
import type { ExecRequest } from "../../proto/wire.js";
import { startChild, type ExitResult } from "../process/child.js";
import { ProcessTable } from "../process/table.js";
import { log } from "../log.js";
import { resizeByPidFile } from "../containers/winsize.js";
import type { ContainerManager } from "../containers/manager.js";
import { containerExecArgv } from "./containers.js";

const SIGHUP = 1;


/**
 * Wraps argv so the helper runs it in a private mount namespace. The
 * namespace is never entered by this process: unshare(2) and setns(2)
 * change only the calling thread, and Bun runs many threads.
 */
function inNamespace(argv: string[], ns: NonNullable<ExecRequest["namespace"]>, cwd: string): string[] {
  const binds = (ns.entries ?? []).flatMap((e) => {
    const local = e.local ?? "";
    const remote = e.remote || local;
    if (!local.startsWith("/") || !remote.startsWith("/")) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `namespace entry "${local}=${remote}": paths must be absolute`);
    return ["-bind", `${local}=${remote}`];
  });
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

  exec(req: ExecRequest): ResponseBody {
    const argv = req.argv ?? [];
    if (argv.length === 0) throw new FractalError(ErrorCode.INVALID_ARGUMENT, "exec: argv is empty");
    let env: Record<string, string> = req.replaceEnv ? {} : { ...(process.env as Record<string, string>) };
    for (const kv of req.env ?? []) {
      if (!kv.key || kv.key.includes("=")) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `exec: bad environment variable name "${kv.key ?? ""}"`);
      env[kv.key] = kv.value ?? "";
    }
    const tty = req.tty ? { cols: req.tty.cols ?? 80, rows: req.tty.rows ?? 24 } : undefined;
    if (req.tty?.term) env.TERM = req.tty.term;
    let cwd = req.cwd || process.cwd();
    let command = argv;
    let pidFile: string | undefined;
    if (req.container) {
      // The container's environment, cwd and user apply inside it; the
      // runtime itself runs with the agent's.
      const ce = containerExecArgv(this.containers, req, tty !== undefined);
      command = ce.argv;
      pidFile = ce.pidFile;
      env = { ...(process.env as Record<string, string>) };
      cwd = "/";
    } else if (req.namespace) {
      if (!hostRootMounted()) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `--namespace needs the host's root at ${HOST_ROOT}: boot the VM with --host-root`);
      // The working directory is inside the namespace; the helper falls back to / when it is not there.
      command = inNamespace(argv, req.namespace, req.cwd || "/");
      cwd = "/";
    }
    checkDirectory(cwd);

    // Open the streams before anything can fail asynchronously: data for
    // stdin may already be on its way right behind this request.
    const s = this.session;
    const stdin = req.stdinStream ? s.openIn(req.stdinStream) : undefined;
    const stdout = req.stdoutStream ? s.openOut(req.stdoutStream) : undefined;
    const stderr = req.stderrStream && !tty ? s.openOut(req.stderrStream) : undefined;
    const discard = () => Promise.resolve();

    let child;
    try {
      child = startChild(
        { argv: command, env, cwd, tty, uid: req.setUid ? (req.uid ?? 0) : undefined, gid: req.setUid ? (req.gid ?? 0) : undefined },
        {
          stdout: stdout ? (c) => stdout.write(c) : discard,
          stderr: stderr ? (c) => stderr.write(c) : discard,
        },
      );
    } catch (err) {
      stdin?.reset("exec failed");
      stdout?.end();
      stderr?.end();
      throw err;
    }
    if (stdin) {
      stdin.pipeTo({
        data: (chunk, done) => void child.writeStdin(chunk).then(done, done),
        end: () => child.closeStdin(),
        abort: () => child.closeStdin(),
      });
    } else if (!tty) {
      child.closeStdin();
    }
    const entry = this.table.add(child);
    if (pidFile) this.pidFiles.set(entry.handle, pidFile);
    child.done.then(() => {
      stdout?.end();
      stderr?.end();
      if (pidFile) fs.rmSync(pidFile, { force: true });
    });
    return { exec: { process: entry.handle, pid: child.pid } };
  }

  signal(handle: number, sig: number, group: boolean): ResponseBody {
    this.table.requireRunning(handle, "signal").signal(checkSignal(sig), group);
    return { ok: {} };
  }

  resize(handle: number, cols: number, rows: number): ResponseBody {
    if (cols < 1 || rows < 1 || cols > 0xffff || rows > 0xffff) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `window size ${cols}x${rows} is out of range`);
    this.table.requireRunning(handle, "resize").resize(cols, rows);
    const pidFile = this.pidFiles.get(handle);
    if (pidFile) resizeByPidFile(pidFile, cols, rows);
    return { ok: {} };
  }

  closeStdin(handle: number): ResponseBody {
    this.table.requireRunning(handle, "close stdin").closeStdin();
    return { ok: {} };
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
