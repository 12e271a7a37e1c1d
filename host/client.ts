// AgentClient: the host's API to an agent, in domain types. The CLI and the
// tests use this; only this file converts to and from wire messages.
import { dial } from "../proto/dial.js";
import type { Endpoint } from "../proto/endpoint.js";
import { ErrorCode, FractalError } from "../proto/errors.js";
import type { Link } from "../proto/link.js";
import { Session, type RequestBody, type SessionOptions } from "../proto/session.js";
import type { InStream, OutStream, StreamSink } from "../proto/stream.js";
import type { Response } from "../proto/wire.js";

export interface AgentInfo {
  agentVersion: string;
  protocolVersion: number;
  runtime: string;
  kernel: string;
  hostname: string;
  arch: string;
}

export interface ExecOptions {
  argv: string[];
  /** Added to the agent's environment, or the whole environment with replaceEnv. */
  env?: Record<string, string>;
  replaceEnv?: boolean;
  cwd?: string;
  user?: { uid: number; gid: number };
  /** Run on a PTY of this size; stdout then carries all output. */
  tty?: { cols: number; rows: number; term?: string };
  /** Open a stdin stream; without it the process reads /dev/null (pipes) or nothing (PTY). */
  stdin?: boolean;
  /** Run in a private mount namespace of host paths (needs a VM booted with --host-root). */
  namespace?: { local: string; remote: string }[];
}

export type ExitResult = { kind: "exited"; code: number } | { kind: "signaled"; signal: number };

/** Shell convention: an exit code, or 128+N for death by signal N. */
export function exitStatusOf(r: ExitResult): number {
  return r.kind === "exited" ? r.code : 128 + r.signal;
}

export class AgentClient {
  private constructor(readonly session: Session) {}

  static async connect(url: string | Endpoint, opts: SessionOptions = {}): Promise<AgentClient> {
    return AgentClient.over(await dial(url), opts);
  }

  /** Speaks the protocol over an already connected link. */
  static async over(link: Link, opts: SessionOptions = {}): Promise<AgentClient> {
    return new AgentClient(await Session.connect(link, { name: "fractal-host", ...opts }));
  }

  /** Round-trip time of one ping, in milliseconds. */
  async ping(): Promise<number> {
    const t0 = performance.now();
    const nonce = Math.floor(Math.random() * 2 ** 31);
    const r = await this.call({ ping: { nonce } }, "ping");
    if (r.ping?.nonce !== nonce) throw new FractalError(ErrorCode.INTERNAL, "ping answered with the wrong nonce");
    return performance.now() - t0;
  }

  async version(): Promise<AgentInfo> {
    const v = (await this.call({ version: {} }, "version")).version!; // call() checked the kind
    return {
      agentVersion: v.agentVersion ?? "",
      protocolVersion: v.protocolVersion ?? 0,
      runtime: v.runtime ?? "",
      kernel: v.kernel ?? "",
      hostname: v.hostname ?? "",
      arch: v.arch ?? "",
    };
  }

  /** Starts a process. Attach output sinks right away: bytes may already be arriving. */
  async exec(o: ExecOptions): Promise<RemoteProcess> {
    const s = this.session;
    const stdinId = o.stdin ? s.allocateStreamId() : 0;
    const stdoutId = s.allocateStreamId();
    const stderrId = o.tty ? 0 : s.allocateStreamId();
    const stdout = s.openIn(stdoutId);
    const stderr = stderrId ? s.openIn(stderrId) : undefined;
    const stdin = stdinId ? s.openOut(stdinId) : undefined;
    let r: Response;
    try {
      r = await this.call(
        {
          exec: {
            argv: o.argv,
            env: Object.entries(o.env ?? {}).map(([key, value]) => ({ key, value })),
            replaceEnv: o.replaceEnv ?? false,
            cwd: o.cwd ?? "",
            setUid: o.user !== undefined,
            uid: o.user?.uid ?? 0,
            gid: o.user?.gid ?? 0,
            tty: o.tty ? { cols: o.tty.cols, rows: o.tty.rows, term: o.tty.term ?? "" } : undefined,
            stdinStream: stdinId,
            stdoutStream: stdoutId,
            stderrStream: stderrId,
            namespace: o.namespace ? { entries: o.namespace } : undefined,
          },
        },
        "exec",
      );
    } catch (err) {
      s.forget(stdoutId);
      if (stderrId) s.forget(stderrId);
      if (stdinId) s.forget(stdinId);
      throw err;
    }
    return new RemoteProcess(this, r.exec!.process ?? 0, r.exec!.pid ?? 0, stdin, stdout, stderr); // call() checked the kind
  }

  close(): void {
    this.session.close();
  }

  /** Sends a request; an Error response or a wrong answer kind becomes a FractalError. */
  async call(body: RequestBody, expect: NonNullable<Response["body"]> | "ok"): Promise<Response> {
    const r = await this.session.request(body);
    const kind = (r as { body?: string }).body;
    if (kind === "error") throw new FractalError(r.error!.code ?? ErrorCode.INTERNAL, r.error!.message ?? "unknown error");
    if (kind !== expect) throw new FractalError(ErrorCode.INTERNAL, `expected a ${expect} response, got ${kind ?? "nothing"}`);
    return r;
  }
}

/** A process running in the agent. */
export class RemoteProcess {
  private readonly outputsDone: Promise<void>;
  private endOut!: () => void;
  private endErr!: () => void;
  private outSink: StreamSink | undefined;
  private errSink: StreamSink | undefined;

  constructor(
    private readonly client: AgentClient,
    readonly handle: number,
    readonly pid: number,
    private readonly stdinStream: OutStream | undefined,
    private readonly stdoutStream: InStream,
    private readonly stderrStream: InStream | undefined,
  ) {
    const outEnded = new Promise<void>((r) => (this.endOut = r));
    const errEnded = stderrStream ? new Promise<void>((r) => (this.endErr = r)) : Promise.resolve();
    this.outputsDone = Promise.all([outEnded, errEnded]).then(() => {});
  }

  /**
   * Where stdout (or the PTY's output) goes. `write` resolves when the bytes
   * are consumed; until then the agent is held back by flow control.
   */
  onStdout(write: (chunk: Uint8Array) => void | Promise<void>): void {
    this.outSink = this.pipe(this.stdoutStream, write, () => this.endOut());
  }

  onStderr(write: (chunk: Uint8Array) => void | Promise<void>): void {
    if (!this.stderrStream) throw new FractalError(ErrorCode.INVALID_ARGUMENT, "a process on a terminal has no separate stderr");
    this.errSink = this.pipe(this.stderrStream, write, () => this.endErr());
  }

  /** Resolves once the agent accepted the bytes within the stream's credit. */
  write(chunk: Uint8Array): Promise<void> {
    if (!this.stdinStream) throw new FractalError(ErrorCode.INVALID_ARGUMENT, "process was started without stdin");
    return this.stdinStream.write(chunk);
  }

  /** End-of-file on stdin, after everything written so far. */
  closeStdin(): void {
    if (this.stdinStream) this.stdinStream.end();
    else void this.client.call({ closeStdin: { process: this.handle } }, "ok").catch(() => {});
  }

  async signal(sig: number, group = true): Promise<void> {
    await this.client.call({ signal: { process: this.handle, signal: sig, group } }, "ok");
  }

  async resize(cols: number, rows: number): Promise<void> {
    await this.client.call({ resize: { process: this.handle, cols, rows } }, "ok");
  }

  /** The exit status, once every byte of output has been delivered to the sinks. */
  async wait(): Promise<ExitResult> {
    // Sinks nobody attached would hold credit forever: drain them to nowhere.
    if (!this.outSink) this.onStdout(() => {});
    if (this.stderrStream && !this.errSink) this.onStderr(() => {});
    const r = await this.client.call({ wait: { process: this.handle } }, "exit");
    await this.outputsDone;
    const e = r.exit!; // call() checked the kind
    return e.signal ? { kind: "signaled", signal: e.signal } : { kind: "exited", code: e.code ?? 0 };
  }

  private pipe(stream: InStream, write: (c: Uint8Array) => void | Promise<void>, ended: () => void): StreamSink {
    const sink: StreamSink = {
      data(chunk, done) {
        const r = write(chunk);
        if (r instanceof Promise) r.then(done, done);
        else done();
      },
      end: ended,
      abort: ended,
    };
    stream.pipeTo(sink);
    return sink;
  }
}
