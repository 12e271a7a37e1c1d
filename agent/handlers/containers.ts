// Container and image requests. The ContainerManager is one per agent, not
// per connection: containers outlive the connection that started them. A
// connection only lends its streams to a container while attached.
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import type { ResponseBody, Session } from "../../proto/session.js";
import type { AttachCommand, ExecCommand, RunCommand } from "../commands.js";
import { describe, RUNTIME, type Container, type ContainerExit } from "../containers/container.js";
import type { ContainerManager } from "../containers/manager.js";
import { IMAGE_STORE } from "../../proto/guest.js";
import type { OutputSink } from "../containers/output.js";
import { checkCommand } from "../containers/lookup.js";
import { resolveUser } from "../containers/users.js";
import { log } from "../log.js";
import { progressLines } from "./progress.js";


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

  async run(cmd: RunCommand): Promise<ResponseBody> {
    const { stdio, progressStream, ...spec } = cmd;
    const env = spec.env.map(([k, v]) => `${k}=${v}`);
    const progress = progressLines(this.session, progressStream);
    const sink = stdio.stdout ? streamSink(this.session, stdio.stdout, stdio.stderr, spec.tty !== undefined) : undefined;
    let c: Container;
    try {
      const feeds = stdio.stdin !== 0 && spec.interactive;
      c = await this.containers.run({ ...spec, env }, sink, progress.line, feeds);
    } catch (err) {
      sink?.end();
      throw err;
    } finally {
      progress.end();
    }
    pipeStdin(this.session, stdio.stdin, c);
    return { run: { id: c.id, name: c.name } };
  }

  async wait(ref: string): Promise<ResponseBody> {
    const c = this.containers.findForWait(ref);
    return { containerExit: exitToWire(await c.done) };
  }

  attach(cmd: AttachCommand): ResponseBody {
    const c = this.containers.find(cmd.container);
    const tty = c.init.tty !== undefined;
    const feeds = cmd.stdio.stdin !== 0 && c.acceptsStdin;
    c.attach(streamSink(this.session, cmd.stdio.stdout, cmd.stdio.stderr, tty), { pace: feeds, fromStart: cmd.logs, follow: cmd.follow });
    pipeStdin(this.session, cmd.stdio.stdin, c);
    return { ok: {} };
  }

  async kill(ref: string, sig: number): Promise<ResponseBody> {
    await this.containers.kill(ref, sig);
    return { ok: {} };
  }

  async stop(ref: string, timeoutS: number): Promise<ResponseBody> {
    const e = await this.containers.stop(ref, timeoutS);
    return { containerExit: exitToWire(e) };
  }

  async remove(ref: string, force: boolean): Promise<ResponseBody> {
    await this.containers.remove(ref, force);
    return { ok: {} };
  }

  resize(ref: string, cols: number, rows: number): ResponseBody {
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
          mounts: c.init.binds ?? [],
        })),
      },
    };
  }
}

/**
 * `exec` inside a container: the runtime's own exec joins the container's
 * namespaces and cgroup (never this process). Returns the argv to start.
 */
export function containerExecArgv(containers: ContainerManager, cmd: ExecCommand, container: { ref: string; user: string }): { argv: string[]; pidFile: string } {
  const c = containers.find(container.ref);
  if (!c.running) throw new FractalError(ErrorCode.NOT_RUNNING, `container ${c.name} is not running (${c.exit ? describe(c.exit) : "not started"})`);
  const pidFile = path.join(c.init.bundle, `exec-${randomBytes(6).toString("hex")}.pid`);
  const argv = [RUNTIME, "exec", "--pid-file", pidFile];
  if (cmd.tty) argv.push("--tty");
  if (cmd.cwd) argv.push("--cwd", cmd.cwd);
  if (container.user) {
    const u = resolveUser(c.root, container.user);
    argv.push("--user", `${u.uid}:${u.gid}`);
  }
  const env = [...c.init.env, ...cmd.env.map(([k, v]) => `${k}=${v}`)];
  // Later entries win in the runtime, as in the process environment.
  checkCommand(c.root, cmd.argv[0]!, [...env].reverse(), cmd.cwd || c.init.cwd); // decode checked argv is not empty
  for (const e of env) argv.push("--env", e);
  argv.push(c.id, ...cmd.argv);
  return { argv, pidFile };
}

