// Container and image requests. The ContainerManager is one per agent, not
// per connection: containers outlive the connection that started them. A
// connection only lends its streams to a container while attached.
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import { checkSignal } from "../../proto/signals.js";
import type { ResponseBody, Session } from "../../proto/session.js";
import type { AttachRequest, ExecRequest, RunRequest } from "../../proto/wire.js";
import { describe, RUNTIME, type Container, type ContainerExit } from "../containers/container.js";
import type { ContainerManager } from "../containers/manager.js";
import { IMAGE_STORE } from "../../proto/guest.js";
import type { OutputSink } from "../containers/output.js";
import { checkCommand } from "../containers/lookup.js";
import { resolveUser } from "../containers/users.js";
import { log } from "../log.js";


function exitToWire(e: ContainerExit): NonNullable<ResponseBody["containerExit"]> {
  const status = e.status.kind === "exited" ? { code: e.status.code } : { signal: e.status.signal };
  return { status, oomKilled: e.oomKilled };
}

/** The client's streams as an output sink; a closed connection makes writes fail, which detaches it. */
function streamSink(session: Session, stdoutId: number, stderrId: number, tty: boolean): OutputSink {
  const out = stdoutId ? session.openOut(stdoutId) : undefined;
  const err = stderrId ? session.openOut(stderrId) : undefined;
  // A terminal has one output; a stderr stream the client opened anyway ends now.
  if (tty) err?.end();
  const none = () => Promise.resolve();
  return {
    stdout: out ? (c) => out.write(c) : none,
    stderr: err ? (c) => err.write(c) : none,
    end() {
      out?.end();
      err?.end();
    },
  };
}

/** Progress as text lines on the client's stream, if it asked for one. */
function progressLines(session: Session, streamId: number): { line?: (l: string) => void; end(): void } {
  if (!streamId) return { end() {} };
  const out = session.openOut(streamId);
  return { line: (l) => void out.write(Buffer.from(`${l}\n`)).catch(() => {}), end: () => out.end() };
}

function pipeStdin(session: Session, streamId: number, c: Container): void {
  if (!streamId) return;
  const input = session.openIn(streamId);
  if (!c.acceptsStdin) {
    input.reset(`container ${c.name} does not take input (run it with -i)`);
    return;
  }
  input.pipeTo({
    data: (chunk, done) => void c.writeStdin(chunk).then(done, done),
    // The client's stdin ended, as `docker run -i` passes EOF on.
    end: () => c.closeStdin(),
  });
}

export class ContainerHandlers {
  constructor(
    private readonly session: Session,
    private readonly containers: ContainerManager,
  ) {}

  images(): ResponseBody {
    let scan;
    try {
      scan = this.containers.store.scan();
    } catch (err) {
      if (!fs.existsSync(IMAGE_STORE)) throw new FractalError(ErrorCode.NOT_FOUND, `no image store at ${IMAGE_STORE}: boot the VM with --images DIR`);
      throw err;
    }
    for (const p of scan.problems) log("warn", `image store: ${p.source}: ${p.message}`);
    return {
      images: {
        store: IMAGE_STORE,
        images: scan.images.map((i) => ({
          reference: i.reference,
          digest: i.digest,
          size: i.size,
          layers: i.layers.length,
          unpacked: i.layers.every((l) => this.containers.layers.ready(l) !== undefined),
          source: i.source,
        })),
      },
    };
  }

  async unpack(image: string, progressStream: number): Promise<ResponseBody> {
    const progress = progressLines(this.session, progressStream);
    try {
      await this.containers.prepare(image, progress.line);
    } finally {
      progress.end();
    }
    return { ok: {} };
  }

  async run(req: RunRequest): Promise<ResponseBody> {
    const tty = req.tty ? { cols: req.tty.cols || 80, rows: req.tty.rows || 24 } : undefined;
    const env = (req.env ?? []).map((kv) => {
      if (!kv.key || kv.key.includes("=")) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `run: bad environment variable name "${kv.key ?? ""}"`);
      return `${kv.key}=${kv.value ?? ""}`;
    });
    if (req.tty?.term) env.push(`TERM=${req.tty.term}`);
    const limit = (v: number | null | undefined, what: string) => {
      const n = v ?? 0;
      if (!Number.isFinite(n) || n < 0) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `run: bad ${what} ${n}`);
      return n;
    };
    const progress = progressLines(this.session, req.progressStream ?? 0);
    const sink = req.stdoutStream ? streamSink(this.session, req.stdoutStream, req.stderrStream ?? 0, tty !== undefined) : undefined;
    let c: Container;
    try {
      c = await this.containers.run(
        {
          image: req.image ?? "",
          name: req.name ?? "",
          command: req.command ?? [],
          entrypoint: req.replaceEntrypoint ? (req.entrypoint ?? []) : undefined,
          env,
          cwd: req.cwd ?? "",
          user: req.user ?? "",
          tty,
          interactive: req.interactive ?? false,
          remove: req.remove ?? false,
          limits: { memoryBytes: limit(req.memoryBytes, "memory limit"), cpus: limit(req.cpus, "CPU limit"), pids: limit(req.pids, "pids limit") },
        },
        sink,
        progress.line,
        (req.stdinStream ?? 0) !== 0,
      );
    } catch (err) {
      sink?.end();
      throw err;
    } finally {
      progress.end();
    }
    pipeStdin(this.session, req.stdinStream ?? 0, c);
    return { run: { id: c.id, name: c.name } };
  }

  async wait(ref: string): Promise<ResponseBody> {
    const c = this.containers.findForWait(ref);
    return { containerExit: exitToWire(await c.done) };
  }

  attach(req: AttachRequest): ResponseBody {
    const c = this.containers.find(req.container ?? "");
    const tty = c.init.tty !== undefined;
    const feeds = (req.stdinStream ?? 0) !== 0 && c.acceptsStdin;
    c.attach(streamSink(this.session, req.stdoutStream ?? 0, req.stderrStream ?? 0, tty), { pace: feeds, fromStart: req.logs ?? false, follow: req.follow ?? false });
    pipeStdin(this.session, req.stdinStream ?? 0, c);
    return { ok: {} };
  }

  async kill(ref: string, sig: number): Promise<ResponseBody> {
    await this.containers.kill(ref, checkSignal(sig));
    return { ok: {} };
  }

  async stop(ref: string, timeoutS: number): Promise<ResponseBody> {
    const e = await this.containers.stop(ref, timeoutS || 10);
    return { containerExit: exitToWire(e) };
  }

  async remove(ref: string, force: boolean): Promise<ResponseBody> {
    await this.containers.remove(ref, force);
    return { ok: {} };
  }

  resize(ref: string, cols: number, rows: number): ResponseBody {
    if (cols < 1 || rows < 1 || cols > 0xffff || rows > 0xffff) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `window size ${cols}x${rows} is out of range`);
    this.containers.find(ref).resize(cols, rows);
    return { ok: {} };
  }

  list(all: boolean): ResponseBody {
    return {
      containers: {
        nowMs: Date.now(),
        containers: this.containers.list(all).map((c) => ({
          id: c.id,
          name: c.name,
          image: c.init.image,
          command: c.init.args,
          state: c.running ? "running" : "exited",
          createdMs: c.createdMs,
          finishedMs: c.finishedMs,
          exit: c.exit ? exitToWire(c.exit) : undefined,
          pid: c.pid,
          tty: c.init.tty !== undefined,
          interactive: c.acceptsStdin,
        })),
      },
    };
  }
}

/**
 * `exec` inside a container: the runtime's own exec joins the container's
 * namespaces and cgroup (never this process). Returns the argv to start.
 */
export function containerExecArgv(containers: ContainerManager, req: ExecRequest, tty: boolean): { argv: string[]; pidFile: string } {
  const c = containers.find(req.container ?? "");
  if (!c.running) throw new FractalError(ErrorCode.NOT_RUNNING, `container ${c.name} is not running (${c.exit ? describe(c.exit) : "not started"})`);
  const pidFile = path.join(c.init.bundle, `exec-${randomBytes(6).toString("hex")}.pid`);
  const argv = [RUNTIME, "exec", "--pid-file", pidFile];
  if (tty) argv.push("--tty");
  if (req.cwd) argv.push("--cwd", req.cwd);
  if (req.user) {
    const u = resolveUser(c.rootfs, req.user);
    argv.push("--user", `${u.uid}:${u.gid}`);
  }
  const env = [...c.init.env, ...(req.env ?? []).map((kv) => `${kv.key}=${kv.value ?? ""}`)];
  if (req.tty?.term) env.push(`TERM=${req.tty.term}`);
  // Later entries win in the runtime, as in the process environment.
  checkCommand(c.rootfs, req.argv?.[0] ?? "", [...env].reverse(), req.cwd || c.init.cwd);
  for (const e of env) argv.push("--env", e);
  argv.push(c.id, ...(req.argv ?? []));
  return { argv, pidFile };
}

