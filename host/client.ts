// AgentClient: the host's API to an agent, in domain types. The CLI and the
// tests use this; only this file converts to and from wire messages.
import type net from "node:net";
import { dial, type DialOptions } from "../proto/dial.js";
import type { Endpoint } from "../proto/endpoint.js";
import { ErrorCode, FractalError } from "../proto/errors.js";
import type { Link } from "../proto/link.js";
import { Session, type RequestBody, type SessionOptions } from "../proto/session.js";
import { chunksOf, type InStream, type OutStream, type StreamSink } from "../proto/stream.js";
import { joinSocket } from "../proto/stream-socket.js";
import { lineSplitter } from "../proto/lines.js";
import type { LayerInfo, Response } from "../proto/wire.js";
import { loadSigner } from "./keys.js";

export interface AgentInfo {
  agentVersion: string;
  protocolVersion: number;
  runtime: string;
  kernel: string;
  hostname: string;
  arch: string;
  /** The guest's links are configured: a TCP connection now reaches it. */
  networkReady: boolean;
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
  /** Run inside this container (id, prefix or name) instead of the guest. */
  container?: string;
  /** With container: user[:group] by name or number, resolved in the container. */
  userSpec?: string;
  /**
   * Send the wait for the exit right behind the exec instead of a round trip
   * later, for a caller that will wait (the agent forgets the process once it
   * has answered, so a signal after the exit then finds none).
   */
  waitAhead?: boolean;
}

export interface ClientOptions extends SessionOptions {
  dial?: DialOptions;
  /** The private key to answer an agent's challenge with (default: $FRACTAL_KEY, else ~/.config/fractal/key). */
  keyFile?: string;
}

/** A TPM's keys, as TPM2B_PUBLIC structures (and the DER EK certificate, empty when none). */
export interface AttestKeys {
  ekPublic: Buffer;
  ekCertificate: Buffer;
  akPublic: Buffer;
}

/** What a machine answers a credential and nonce with (fractal.proto, AttestEvidence). */
export interface AttestEvidence {
  secret: Buffer;
  attest: Buffer;
  signature: Buffer;
  pcrValues: Buffer[];
  eventLog: Buffer;
}

export type ExitResult = { kind: "exited"; code: number } | { kind: "signaled"; signal: number };

/** How a container ended: its main process's status, and whether its cgroup OOM-killed something. */
export type ContainerExitResult = ExitResult & { oomKilled: boolean };

export interface ImageSummary {
  reference: string;
  digest: string;
  size: number;
  layers: number;
  unpacked: boolean;
  source: string;
}

export interface RunOptions {
  image: string;
  name?: string;
  command?: string[];
  /** Replaces the image's Entrypoint (and drops its Cmd); [] clears it. */
  entrypoint?: string[];
  env?: Record<string, string>;
  cwd?: string;
  user?: string;
  tty?: { cols: number; rows: number; term?: string };
  /** Keep the container's stdin open (and connect ours unless detached). */
  interactive?: boolean;
  /** Return once started; output is kept for logs/attach. */
  detach?: boolean;
  remove?: boolean;
  memoryBytes?: number;
  cpus?: number;
  pids?: number;
  /** Progress lines while layers are unpacked. */
  onProgress?: (line: string) => void;
  /** A root prepared outside the agent (containerd's snapshots, as guest paths): `image` only labels it and `command` is the whole process. */
  prepared?: PreparedRunOptions;
  /** Guest directories bound into the container (run -v, after the host path was found in a share). */
  binds?: { source: string; destination: string; readonly: boolean }[];
  /** More images stacked over the image (run --layer), later ones on top; `at` "/" for the root. */
  layers?: { image: string; at: string }[];
}

/** One image in a container's stack (layer ls). */
export interface LayerSummary {
  id: string;
  image: string;
  digest: string;
  diffIds: string[];
  at: string;
  readonly: boolean;
  addedMs: number;
  how: string;
  removable: boolean;
}

export interface PreparedRunOptions {
  root: { lowers: string[]; upper: string; work: string } | { directory: string; readonly: boolean };
  hostname?: string;
  files?: { path: string; content: Uint8Array }[];
  binds?: { source: string; destination: string; readonly: boolean }[];
  /** A running container whose namespaces this one joins: joinTypes of pid, ipc, uts (default ipc and uts). */
  joinNamespaces?: string;
  joinTypes?: ("pid" | "ipc" | "uts")[];
}

export interface ContainerSummary {
  id: string;
  name: string;
  image: string;
  command: string[];
  running: boolean;
  createdMs: number;
  finishedMs: number;
  exit?: ContainerExitResult;
  pid: number;
  tty: boolean;
  interactive: boolean;
  /** Guest directories bound into it (volumes). */
  mounts: { source: string; destination: string; readonly: boolean }[];
}

/** What RemoteProcess needs to control the thing whose streams it holds. */
interface ProcessControl {
  signal(sig: number, group: boolean): Promise<void>;
  resize(cols: number, rows: number): Promise<void>;
  closeStdin(): void;
  wait(): Promise<ExitResult>;
}

type WireExit = { status?: { code?: number | null; signal?: number | null } | null; oomKilled?: boolean | null };

function isNoSuchProcess(err: unknown): boolean {
  return err instanceof FractalError && err.code === ErrorCode.NO_SUCH_PROCESS;
}

function containerExit(e: WireExit | null | undefined): ContainerExitResult {
  const st = e?.status;
  return st?.signal ? { kind: "signaled", signal: st.signal, oomKilled: e?.oomKilled ?? false } : { kind: "exited", code: st?.code ?? 0, oomKilled: e?.oomKilled ?? false };
}

/** Shell convention: an exit code, or 128+N for death by signal N. */
export function exitStatusOf(r: ExitResult): number {
  return r.kind === "exited" ? r.code : 128 + r.signal;
}

export class AgentClient {
  private constructor(readonly session: Session) {}

  /**
   * Dials and shakes hands. An agent that asks for a key gets opts.signer,
   * or else the key in opts.keyFile, else $FRACTAL_KEY, else
   * ~/.config/fractal/key.
   */
  static async connect(url: string | Endpoint, opts: ClientOptions = {}): Promise<AgentClient> {
    return AgentClient.over(await dial(url, opts.dial), opts);
  }

  /** Speaks the protocol over an already connected link. */
  static async over(link: Link, opts: ClientOptions = {}): Promise<AgentClient> {
    // The key file is read while the Hello is in flight, but a missing or
    // bad one matters only if the agent asks for a key: a unix socket or a
    // VM's serial line works without one.
    let keyless = false;
    const { keyFile, ...session } = opts;
    const load = session.signer ?? (() => loadSigner(keyFile ?? (process.env.FRACTAL_KEY || undefined)));
    const signer =
      typeof load === "function"
        ? async () => {
            const s = await load();
            keyless = s === undefined;
            return s;
          }
        : load;
    try {
      return new AgentClient(await Session.connect(link, { name: "fractal-host", ...session, signer }));
    } catch (err) {
      if (err instanceof FractalError && err.code === ErrorCode.UNAUTHENTICATED && keyless) {
        throw new FractalError(err.code, `${err.message}: make one with \`fractal-host keygen\` and authorise its .pub (boot does that for its VMs)`);
      }
      throw err;
    }
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
      networkReady: v.networkReady ?? false,
    };
  }

  /** Starts a process. Attach output sinks right away: bytes may already be arriving. */
  async exec(o: ExecOptions): Promise<RemoteProcess> {
    const streams = new RequestStreams(this);
    const stdin = streams.outgoing(o.stdin ?? false);
    const stdout = streams.incoming(true);
    const stderr = streams.incoming(!o.tty);
    const started = streams.call(
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
          stdinStream: stdin.id,
          stdoutStream: stdout.id,
          stderrStream: stderr.id,
          namespace: o.namespace ? { entries: o.namespace } : undefined,
          container: o.container ?? "",
          user: o.userSpec ?? "",
        },
      },
      "exec",
    );
    // request() went out synchronously inside call(): its id is the last one.
    const ahead = o.waitAhead ? this.call({ wait: { execRequest: this.session.lastRequestId } }, "exit") : undefined;
    ahead?.catch(() => {}); // a failed exec fails this too; the exec's own error is the one to report
    const r = await started;
    const handle = r.exec!.process ?? 0; // call() checked the kind
    const byHandle = () => this.call({ wait: { process: handle } }, "exit");
    const control: ProcessControl = {
      signal: async (signal, group) => void (await this.call({ signal: { process: handle, signal, group } }, "ok")),
      resize: async (cols, rows) => void (await this.call({ resize: { process: handle, cols, rows } }, "ok")),
      closeStdin: () => void this.call({ closeStdin: { process: handle } }, "ok").catch(() => {}),
      wait: async () => {
        // An agent from before exec_request reads the wait as one for handle 0, which it never gives.
        const w = ahead ? await ahead.catch((err: unknown) => (isNoSuchProcess(err) ? byHandle() : Promise.reject(err))) : await byHandle();
        const e = w.exit!; // call() checked the kind
        return e.signal ? { kind: "signaled", signal: e.signal } : { kind: "exited", code: e.code ?? 0 };
      },
    };
    return new RemoteProcess(control, handle, r.exec!.pid ?? 0, stdin.stream, stdout.stream!, stderr.stream); // stdout: always asked for
  }

  async images(): Promise<{ store: string; images: ImageSummary[] }> {
    const r = (await this.call({ images: {} }, "images")).images!; // call() checked the kind
    return {
      store: r.store ?? "",
      images: (r.images ?? []).map((i) => ({
        reference: i.reference ?? "",
        digest: i.digest ?? "",
        size: i.size ?? 0,
        layers: i.layers ?? 0,
        unpacked: i.unpacked ?? false,
        source: i.source ?? "",
      })),
    };
  }

  /** Unpacks an image's layers into the guest's cache (as docker pull makes an image ready). */
  async unpackImage(image: string, onProgress?: (line: string) => void): Promise<void> {
    const streams = new RequestStreams(this);
    await streams.call({ imageUnpack: { image, progressStream: streams.lines(onProgress) } }, "ok");
  }

  /** Creates and starts a container; unless detached, its output is on the returned process's sinks. */
  async run(o: RunOptions): Promise<{ id: string; name: string; proc?: RemoteProcess }> {
    const attached = !o.detach;
    const streams = new RequestStreams(this);
    const stdin = streams.outgoing(attached && (o.interactive ?? false));
    const stdout = streams.incoming(attached);
    const stderr = streams.incoming(attached && !o.tty);
    const r = await streams.call(
      {
        run: {
          image: o.image,
          name: o.name ?? "",
          command: o.command ?? [],
          replaceEntrypoint: o.entrypoint !== undefined,
          entrypoint: o.entrypoint ?? [],
          env: Object.entries(o.env ?? {}).map(([key, value]) => ({ key, value })),
          cwd: o.cwd ?? "",
          user: o.user ?? "",
          tty: o.tty ? { cols: o.tty.cols, rows: o.tty.rows, term: o.tty.term ?? "" } : undefined,
          interactive: o.interactive ?? false,
          remove: o.remove ?? false,
          memoryBytes: o.memoryBytes ?? 0,
          cpus: o.cpus ?? 0,
          pids: o.pids ?? 0,
          stdinStream: stdin.id,
          stdoutStream: stdout.id,
          stderrStream: stderr.id,
          progressStream: streams.lines(o.onProgress),
          binds: [...(o.binds ?? []), ...(o.prepared?.binds ?? [])],
          layers: o.layers ?? [],
          ...(o.prepared
            ? {
                root: "directory" in o.prepared.root ? { directory: o.prepared.root.directory, readonly: o.prepared.root.readonly } : o.prepared.root,
                hostname: o.prepared.hostname ?? "",
                files: o.prepared.files ?? [],
                joinNamespaces: o.prepared.joinNamespaces ?? "",
                joinNamespaceTypes: o.prepared.joinTypes ?? [],
              }
            : {}),
        },
      },
      "run",
    );
    const id = r.run!.id ?? ""; // call() checked the kind
    const name = r.run!.name ?? "";
    if (!stdout.stream) return { id, name };
    return { id, name, proc: new RemoteProcess(this.containerControl(id), 0, 0, stdin.stream, stdout.stream, stderr.stream) };
  }

  /** Connects to a container's output (and input when `stdin`); with `follow` until it exits. */
  async attach(container: string, o: { stdin?: boolean; logs?: boolean; follow?: boolean }): Promise<RemoteProcess> {
    const streams = new RequestStreams(this);
    const stdin = streams.outgoing(o.stdin ?? false);
    const stdout = streams.incoming(true);
    const stderr = streams.incoming(true);
    await streams.call({ attach: { container, logs: o.logs ?? false, follow: o.follow ?? false, stdinStream: stdin.id, stdoutStream: stdout.id, stderrStream: stderr.id } }, "ok");
    return new RemoteProcess(this.containerControl(container), 0, 0, stdin.stream, stdout.stream!, stderr.stream); // stdout: always asked for
  }

  async containerWait(container: string): Promise<ContainerExitResult> {
    return containerExit((await this.call({ containerWait: { container } }, "containerExit")).containerExit);
  }

  async kill(container: string, signal: number): Promise<void> {
    await this.call({ containerKill: { container, signal } }, "ok");
  }

  async stop(container: string, timeoutS = 10): Promise<ContainerExitResult> {
    return containerExit((await this.call({ containerStop: { container, timeoutS } }, "containerExit")).containerExit);
  }

  async remove(container: string, force = false): Promise<void> {
    await this.call({ containerRemove: { container, force } }, "ok");
  }

  async containers(all: boolean): Promise<ContainerSummary[]> {
    const r = (await this.call({ containerList: { all } }, "containers")).containers!; // call() checked the kind
    // Times come on the guest's clock; shift them onto ours so ages are right.
    const skew = r.nowMs ? Date.now() - r.nowMs : 0;
    return (r.containers ?? []).map((c) => ({
      id: c.id ?? "",
      name: c.name ?? "",
      image: c.image ?? "",
      command: c.command ?? [],
      running: c.state === "running",
      createdMs: (c.createdMs ?? 0) + skew,
      finishedMs: c.finishedMs ? c.finishedMs + skew : 0,
      exit: c.exit ? containerExit(c.exit) : undefined,
      pid: c.pid ?? 0,
      tty: c.tty ?? false,
      interactive: c.interactive ?? false,
      mounts: (c.mounts ?? []).map((m) => ({ source: m.source ?? "", destination: m.destination ?? "", readonly: m.readonly ?? false })),
    }));
  }

  /**
   * Joins a local socket to a TCP port in the guest (or a container's: they
   * share the guest's network), over this connection's streams. Rejects if
   * the agent cannot connect; resolves once both directions have ended.
   */
  async portForward(sock: net.Socket, o: { port: number; host?: string; container?: string }): Promise<void> {
    const streams = new RequestStreams(this);
    const toAgent = streams.outgoing(true);
    const fromAgent = streams.incoming(true);
    await streams.call({ portForward: { container: o.container ?? "", host: o.host ?? "", port: o.port, inStream: toAgent.id, outStream: fromAgent.id } }, "ok");
    await joinSocket(sock, toAgent.stream!, fromAgent.stream!); // (true) always opens them
  }

  /** Stacks an image into a running container at `at`; answers the new layer. */
  async layerAdd(container: string, image: string, o: { at?: string; readonly?: boolean; onProgress?: (line: string) => void } = {}): Promise<LayerSummary> {
    const streams = new RequestStreams(this);
    const r = await streams.call({ layerAdd: { container, image, at: o.at ?? "/", readonly: o.readonly ?? false, progressStream: streams.lines(o.onProgress) } }, "layer");
    return layerSummary(r.layer!); // call() checked the kind
  }

  async layerRemove(container: string, layer: string): Promise<void> {
    await this.call({ layerRemove: { container, layer } }, "ok");
  }

  async layers(container: string): Promise<LayerSummary[]> {
    return ((await this.call({ layerList: { container } }, "layers")).layers!.layers ?? []).map(layerSummary); // call() checked the kind
  }

  /** The TPM's endorsement and attestation keys (docs/attestation.md). */
  async attestKeys(): Promise<AttestKeys> {
    const k = (await this.call({ attestKeys: {} }, "attestKeys")).attestKeys!; // call() checked the kind
    return { ekPublic: Buffer.from(k.ekPublic ?? []), ekCertificate: Buffer.from(k.ekCertificate ?? []), akPublic: Buffer.from(k.akPublic ?? []) };
  }

  /** Evidence for a credential and a nonce: the decrypted secret, a quote of `pcrs`, the PCR values and the event log. */
  async attestQuote(q: { credentialBlob: Buffer; encryptedSecret: Buffer; nonce: Buffer; pcrs: number[] }): Promise<AttestEvidence> {
    const e = (await this.call({ attestQuote: q }, "attestEvidence")).attestEvidence!; // call() checked the kind
    const b = (x: Uint8Array | null | undefined) => Buffer.from(x ?? []);
    return { secret: b(e.secret), attest: b(e.attest), signature: b(e.signature), pcrValues: (e.pcrValues ?? []).map(b), eventLog: b(e.eventLog) };
  }

  /** cp out: the tar of `path` (in `container`, or the guest with ""), chunk by chunk as the agent sends it. */
  async *copyOut(container: string, path: string): AsyncGenerator<Uint8Array> {
    const streams = new RequestStreams(this);
    const { id, stream } = streams.incoming(true);
    const replied = streams.call({ copy: { container, path, into: false, stream: id } }, "ok");
    // A refused copy sends nothing: its error ends the iteration.
    replied.catch((err: FractalError) => stream!.abort(err));
    yield* chunksOf(stream!);
    await replied;
  }

  /** cp in: sends a tar (chunks) to be unpacked at `path` in `container` (or the guest with ""). */
  async copyIn(container: string, path: string, tar: AsyncIterable<Uint8Array>): Promise<void> {
    const streams = new RequestStreams(this);
    const { id, stream } = streams.outgoing(true);
    const reply = streams.call({ copy: { container, path, into: true, stream: id } }, "ok");
    let sendErr: Error | undefined;
    const send = (async () => {
      for await (const chunk of tar) await stream!.write(chunk);
      stream!.end();
    })().catch((err: Error) => (sendErr = err));
    await reply;
    await send;
    if (sendErr) throw sendErr;
  }

  private containerControl(container: string): ProcessControl {
    return {
      signal: (sig) => this.kill(container, sig),
      resize: async (cols, rows) => void (await this.call({ containerResize: { container, cols, rows } }, "ok")),
      closeStdin: () => {},
      wait: () => this.containerWait(container),
    };
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

/**
 * The streams one request names, opened before it goes out (the agent may
 * send on them as soon as it answers, or before) and forgotten if it fails.
 */
class RequestStreams {
  private readonly ids: number[] = [];
  private readonly session: Session;

  constructor(private readonly client: AgentClient) {
    this.session = client.session;
  }

  /** A stream the agent sends on, if wanted; id 0 means none. */
  incoming(want: boolean): { id: number; stream?: InStream } {
    if (!want) return { id: 0 };
    const id = this.take();
    return { id, stream: this.session.openIn(id) };
  }

  /** A stream we send on, if wanted; id 0 means none. */
  outgoing(want: boolean): { id: number; stream?: OutStream } {
    if (!want) return { id: 0 };
    const id = this.take();
    return { id, stream: this.session.openOut(id) };
  }

  /** An incoming stream of text lines (progress), if there is someone to tell; its id. */
  lines(onLine?: (line: string) => void): number {
    if (!onLine) return 0;
    const { id, stream } = this.incoming(true);
    const feed = lineSplitter(onLine);
    // incoming(true) always opens a stream.
    stream!.pipeTo({
      data(chunk, done) {
        feed(Buffer.from(chunk).toString());
        done();
      },
      end() {},
    });
    return id;
  }

  /** Sends the request; if it fails, its streams are dropped. */
  async call(body: RequestBody, expect: NonNullable<Response["body"]> | "ok"): Promise<Response> {
    try {
      return await this.client.call(body, expect);
    } catch (err) {
      for (const id of this.ids) this.session.forget(id);
      throw err;
    }
  }

  private take(): number {
    const id = this.session.allocateStreamId();
    this.ids.push(id);
    return id;
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
    private readonly control: ProcessControl,
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
    else this.control.closeStdin();
  }

  signal(sig: number, group = true): Promise<void> {
    return this.control.signal(sig, group);
  }

  resize(cols: number, rows: number): Promise<void> {
    return this.control.resize(cols, rows);
  }

  /** The exit status, once every byte of output has been delivered to the sinks. */
  async wait(): Promise<ExitResult> {
    // Sinks nobody attached would hold credit forever: drain them to nowhere.
    if (!this.outSink) this.onStdout(() => {});
    if (this.stderrStream && !this.errSink) this.onStderr(() => {});
    const r = await this.control.wait();
    await this.outputsDone;
    return r;
  }

  /** Resolves when all output has arrived (for attachments that end before the exit). */
  outputEnded(): Promise<void> {
    if (!this.outSink) this.onStdout(() => {});
    if (this.stderrStream && !this.errSink) this.onStderr(() => {});
    return this.outputsDone;
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

function layerSummary(l: LayerInfo): LayerSummary {
  return {
    id: l.id ?? "",
    image: l.image ?? "",
    digest: l.digest ?? "",
    diffIds: l.diffIds ?? [],
    at: l.at ?? "/",
    readonly: l.readonly ?? false,
    addedMs: l.addedMs ?? 0,
    how: l.how ?? "",
    removable: l.removable ?? false,
  };
}
