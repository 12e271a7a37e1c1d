// The agent's one edge for wire types: every Request is decoded here, once,
// into a plain, fully validated Command (as firecracker turns a parsed HTTP
// request into a VmmAction). Defaults are filled and limits checked in this
// file only; handlers take Commands and never see a protobuf type, its
// optional fields or its oneof.
//
// protobufjs stays the generator (the design names it, and its static module
// already types each message): what made handlers hard to change was not the
// generated code but reading it everywhere, which this file ends.
import path from "node:path";
import { ErrorCode, FractalError } from "../proto/errors.js";
import { checkSignal } from "../proto/signals.js";
import type { AttachRequest, ExecRequest, Request, RunRequest } from "../proto/wire.js";

/** A terminal's size. (Its TERM, when the client names one, is the last entry of the command's env.) */
export interface Tty {
  cols: number;
  rows: number;
}

/** Stream ids a request named; 0 = none. */
export interface Stdio {
  stdin: number;
  stdout: number;
  stderr: number;
}

export interface ExecCommand {
  argv: string[];
  /** Added to the environment (or, with replaceEnv, the whole of it), in order; a terminal's TERM last. */
  env: [string, string][];
  replaceEnv: boolean;
  /** Empty: the agent's (or the container's) own. */
  cwd: string;
  /** Numeric ids to run as, in the guest. */
  user?: { uid: number; gid: number };
  tty?: Tty;
  stdio: Stdio;
  /** Host paths to bind into a private mount namespace (local <- remote). */
  namespace?: { local: string; remote: string }[];
  /** Run inside this container instead of the guest. */
  container?: { ref: string; user: string };
}

export interface Limits {
  memoryBytes: number;
  cpus: number;
  pids: number;
}

/** A root file system prepared outside the agent (containerd's snapshotter), as guest paths. */
export type PreparedRoot =
  | { kind: "overlay"; lowers: string[]; upper: string; work: string }
  | { kind: "directory"; directory: string; readonly: boolean };

/** What a container built from someone else's OCI spec (the containerd shim) brings besides the process. */
export interface PreparedContainer {
  root: PreparedRoot;
  hostname: string;
  files: { path: string; content: Uint8Array }[];
  /** A container whose namespaces this one joins; "" for none. */
  joinNamespaces: string;
  /** Which of its namespaces: pid, ipc, uts. */
  joinTypes: ("pid" | "ipc" | "uts")[];
}

export interface RunCommand {
  image: string;
  name: string;
  command: string[];
  /** Replaces the image's Entrypoint and Cmd (docker run --entrypoint). */
  entrypoint?: string[];
  env: [string, string][];
  cwd: string;
  user: string;
  tty?: Tty;
  interactive: boolean;
  remove: boolean;
  limits: Limits;
  stdio: Stdio;
  progressStream: number;
  /** Set: no image is read; the command is the whole process. */
  prepared?: PreparedContainer;
  /** Guest directories or files bound into the container (volumes; the shim's binds). */
  binds: BindMount[];
  /** More images stacked over the image, later ones on top. */
  layers: { image: string; at: string }[];
}

export interface BindMount {
  source: string;
  destination: string;
  readonly: boolean;
}

export interface LayerAddCommand {
  container: string;
  image: string;
  at: string;
  readonly: boolean;
  progressStream: number;
}

export interface AttachCommand {
  container: string;
  logs: boolean;
  follow: boolean;
  stdio: Stdio;
}

/** Every request the agent serves, decoded. */
export type Command =
  | { kind: "ping"; nonce: number }
  | { kind: "version" }
  | { kind: "exec"; exec: ExecCommand }
  | { kind: "signal"; process: number; signal: number; group: boolean }
  | { kind: "resize"; process: number; cols: number; rows: number }
  | { kind: "closeStdin"; process: number }
  | { kind: "wait"; process: number; execRequest: number }
  | { kind: "shutdown"; reboot: boolean }
  | { kind: "images" }
  | { kind: "imageUnpack"; image: string; progressStream: number }
  | { kind: "run"; run: RunCommand }
  | { kind: "attach"; attach: AttachCommand }
  | { kind: "containerWait"; container: string }
  | { kind: "containerKill"; container: string; signal: number }
  | { kind: "containerStop"; container: string; timeoutS: number }
  | { kind: "containerRemove"; container: string; force: boolean }
  | { kind: "containerList"; all: boolean }
  | { kind: "containerResize"; container: string; cols: number; rows: number }
  | { kind: "portForward"; forward: PortForwardCommand }
  | { kind: "copy"; copy: CopyCommand }
  | { kind: "layerAdd"; add: LayerAddCommand }
  | { kind: "layerRemove"; container: string; layer: string }
  | { kind: "layerList"; container: string }
  | { kind: "attestKeys" }
  | { kind: "attestQuote"; quote: AttestQuoteCommand };

export interface AttestQuoteCommand {
  credentialBlob: Buffer;
  encryptedSecret: Buffer;
  nonce: Buffer;
  pcrs: number[];
}

export interface CopyCommand {
  /** "" for the guest itself. */
  container: string;
  path: string;
  into: boolean;
  stream: number;
}

export interface PortForwardCommand {
  /** "" for none. */
  container: string;
  host: string;
  port: number;
  inStream: number;
  outStream: number;
}

export function assertNever(x: never): never {
  throw new FractalError(ErrorCode.UNKNOWN_MESSAGE, `unknown request type ${String(x)}`);
}

const bad = (why: string) => new FractalError(ErrorCode.INVALID_ARGUMENT, why);

/** The policy name of a command (proto/authorized-keys.ts): its type in snake case; attach without stdin is "logs". */
export function policyName(c: Command): string {
  if (c.kind === "attach" && c.attach.stdio.stdin === 0) return "logs";
  return c.kind.replace(/[A-Z]/g, (ch) => `_${ch.toLowerCase()}`);
}

/** Decodes and checks a request; throws FractalError naming what is wrong. */
export function decodeRequest(req: Request): Command {
  // protobufjs sets `body` to the name of the oneof field present; an
  // unknown field number (a newer client) leaves it undefined.
  const kind = (req as { body?: NonNullable<Request["body"]> }).body;
  switch (kind) {
    case undefined:
      throw new FractalError(ErrorCode.UNKNOWN_MESSAGE, "unknown request type (a newer client?)");
    case "ping":
      return { kind, nonce: req.ping?.nonce ?? 0 };
    case "version":
      return { kind };
    case "exec":
      return { kind, exec: execCommand(req.exec ?? {}) };
    case "signal":
      return { kind, process: req.signal?.process ?? 0, signal: checkSignal(req.signal?.signal ?? 0), group: req.signal?.group ?? false };
    case "resize": {
      const r = req.resize ?? {};
      return { kind, process: r.process ?? 0, ...windowSize(r.cols ?? 0, r.rows ?? 0) };
    }
    case "closeStdin":
      return { kind, process: req.closeStdin?.process ?? 0 };
    case "wait":
      return { kind, process: req.wait?.process ?? 0, execRequest: req.wait?.execRequest ?? 0 };
    case "shutdown":
      return { kind, reboot: req.shutdown?.reboot ?? false };
    case "images":
      return { kind };
    case "imageUnpack":
      return { kind, image: nonEmpty(req.imageUnpack?.image, "image"), progressStream: req.imageUnpack?.progressStream ?? 0 };
    case "run":
      return { kind, run: runCommand(req.run ?? {}) };
    case "attach":
      return { kind, attach: attachCommand(req.attach ?? {}) };
    case "containerWait":
      return { kind, container: containerRef(req.containerWait?.container) };
    case "containerKill":
      return { kind, container: containerRef(req.containerKill?.container), signal: checkSignal(req.containerKill?.signal ?? 0) };
    case "containerStop":
      // 0 means docker's default grace period.
      return { kind, container: containerRef(req.containerStop?.container), timeoutS: req.containerStop?.timeoutS || 10 };
    case "containerRemove":
      return { kind, container: containerRef(req.containerRemove?.container), force: req.containerRemove?.force ?? false };
    case "containerList":
      return { kind, all: req.containerList?.all ?? false };
    case "containerResize": {
      const r = req.containerResize ?? {};
      return { kind, container: containerRef(r.container), ...windowSize(r.cols ?? 0, r.rows ?? 0) };
    }
    case "portForward": {
      const f = req.portForward ?? {};
      const port = f.port ?? 0;
      if (!Number.isInteger(port) || port < 1 || port > 65535) throw bad(`port-forward: port ${port} is out of range (1-65535)`);
      if (!f.inStream || !f.outStream) throw bad("port-forward: both streams are needed");
      return { kind, forward: { container: f.container ?? "", host: f.host || "127.0.0.1", port, inStream: f.inStream, outStream: f.outStream } };
    }
    case "copy": {
      const c = req.copy ?? {};
      if (!c.path || !c.path.startsWith("/")) throw bad(`cp: the path must be absolute, not "${c.path ?? ""}"`);
      if (!c.stream) throw bad("cp: no stream");
      return { kind, copy: { container: c.container ?? "", path: c.path, into: c.into ?? false, stream: c.stream } };
    }
    case "layerAdd": {
      const a = req.layerAdd ?? {};
      const add = { container: containerRef(a.container), image: nonEmpty(a.image, "image"), at: containerPath(a.at, "layer add"), readonly: a.readonly ?? false, progressStream: a.progressStream ?? 0 };
      return { kind, add };
    }
    case "layerRemove":
      return { kind, container: containerRef(req.layerRemove?.container), layer: nonEmpty(req.layerRemove?.layer, "layer id") };
    case "layerList":
      return { kind, container: containerRef(req.layerList?.container) };
    case "attestKeys":
      return { kind };
    case "attestQuote": {
      const q = req.attestQuote ?? {};
      const bytes = (b: Uint8Array | null | undefined) => Buffer.from(b ?? new Uint8Array());
      const pcrs = q.pcrs ?? [];
      if (pcrs.some((p) => p > 23) || pcrs.some((p, i) => i > 0 && p <= pcrs[i - 1]!)) throw bad("attest: PCRs must be ascending numbers 0-23");
      return { kind, quote: { credentialBlob: bytes(q.credentialBlob), encryptedSecret: bytes(q.encryptedSecret), nonce: bytes(q.nonce), pcrs } };
    }
    default:
      return assertNever(kind);
  }
}

/**
 * A path in a container where an image is stacked: absolute and in its
 * simplest spelling (it names a directory of the container's upper layer),
 * and free of what overlayfs' option string cannot carry.
 */
function containerPath(p: string | null | undefined, what: string): string {
  const at = p || "/";
  if (!at.startsWith("/") || path.posix.normalize(at) !== at || (at !== "/" && at.endsWith("/"))) throw bad(`${what}: "${at}" must be an absolute path in its simplest form (no "..", ".", "//" or trailing "/")`);
  if (/[,:\\\n]/.test(at)) throw bad(`${what}: "${at}" has a ',', ':', '\\' or newline, which overlayfs options cannot carry`);
  return at;
}

function execCommand(e: ExecRequest): ExecCommand {
  const argv = e.argv ?? [];
  if (argv.length === 0 || argv[0] === "") throw bad("exec: no command given");
  const container = e.container ? { ref: e.container, user: e.user ?? "" } : undefined;
  if (container && e.namespace) throw bad("exec: --namespace runs in the guest, not in a container");
  return {
    argv,
    env: envPairs(e.env, e.tty, "exec"),
    replaceEnv: e.replaceEnv ?? false,
    cwd: e.cwd ?? "",
    user: e.setUid ? { uid: e.uid ?? 0, gid: e.gid ?? 0 } : undefined,
    tty: tty(e.tty),
    stdio: { stdin: e.stdinStream ?? 0, stdout: e.stdoutStream ?? 0, stderr: e.stderrStream ?? 0 },
    namespace: e.namespace ? (e.namespace.entries ?? []).map((n) => namespaceEntry(n.local ?? "", n.remote ?? "")) : undefined,
    container,
  };
}

function runCommand(r: RunRequest): RunCommand {
  const limit = (v: number | null | undefined, what: string) => {
    const n = v ?? 0;
    if (!Number.isFinite(n) || n < 0) throw bad(`run: bad ${what} ${n}`);
    return n;
  };
  return {
    image: nonEmpty(r.image, "image"),
    name: r.name ?? "",
    command: r.command ?? [],
    entrypoint: r.replaceEntrypoint ? (r.entrypoint ?? []) : undefined,
    env: envPairs(r.env, r.tty, "run"),
    cwd: r.cwd ?? "",
    user: r.user ?? "",
    tty: tty(r.tty),
    interactive: r.interactive ?? false,
    remove: r.remove ?? false,
    limits: { memoryBytes: limit(r.memoryBytes, "memory limit"), cpus: limit(r.cpus, "CPU limit"), pids: limit(r.pids, "pids limit") },
    stdio: { stdin: r.stdinStream ?? 0, stdout: r.stdoutStream ?? 0, stderr: r.stderrStream ?? 0 },
    progressStream: r.progressStream ?? 0,
    prepared: r.root ? preparedContainer(r) : undefined,
    binds: (r.binds ?? []).map((b) => ({ source: absolute(b.source, "bind source"), destination: absolute(b.destination, "bind destination"), readonly: b.readonly ?? false })),
    layers: (r.layers ?? []).map((l) => ({ image: nonEmpty(l.image, "--layer image"), at: containerPath(l.at, "run --layer") })),
  };
}

const MAX_FILE = 1 << 20;
const absolute = (p: string | null | undefined, what: string): string => {
  if (!p || !p.startsWith("/") || p.split("/").includes("..")) throw bad(`run: ${what} must be an absolute path without "..", not "${p ?? ""}"`);
  return p;
};

function preparedContainer(r: RunRequest): PreparedContainer {
  const root = r.root!;
  let prepared: PreparedRoot;
  if (root.directory) {
    prepared = { kind: "directory", directory: absolute(root.directory, "root directory"), readonly: root.readonly ?? false };
  } else {
    // overlayfs' option string separates with ',' and ':': such a name would smuggle in options.
    const layer = (p: string | null | undefined, what: string) => {
      const a = absolute(p, what);
      if (/[,:\\]/.test(a)) throw bad(`run: ${what} "${a}" has a ',', ':' or '\\', which overlayfs options cannot carry`);
      return a;
    };
    const lowers = (root.lowers ?? []).map((l) => layer(l, "lower layer"));
    if (lowers.length === 0) throw bad("run: a prepared root needs a directory or at least one lower layer");
    const upper = root.upper ?? "";
    const work = root.work ?? "";
    if ((upper === "") !== (work === "")) throw bad("run: a prepared root's upper and work directories go together");
    if (upper === "" && lowers.length < 2) throw bad("run: a read-only overlay needs two lower layers (use a directory root for one)");
    prepared = { kind: "overlay", lowers, upper: upper && layer(upper, "upper"), work: work && layer(work, "work") };
  }
  const files = (r.files ?? []).map((f) => {
    const content = f.content ?? new Uint8Array();
    if (content.length > MAX_FILE) throw bad(`run: file ${f.path} is larger than 1 MiB`);
    return { path: absolute(f.path, "file path"), content };
  });
  const joinTypes = (r.joinNamespaceTypes?.length ? r.joinNamespaceTypes : ["ipc", "uts"]).map((t) => {
    if (t !== "pid" && t !== "ipc" && t !== "uts") throw bad(`run: cannot join a container's ${t} namespace (pid, ipc or uts)`);
    return t;
  });
  return { root: prepared, hostname: r.hostname ?? "", files, joinNamespaces: r.joinNamespaces ?? "", joinTypes };
}

function attachCommand(a: AttachRequest): AttachCommand {
  return {
    container: containerRef(a.container),
    logs: a.logs ?? false,
    follow: a.follow ?? false,
    stdio: { stdin: a.stdinStream ?? 0, stdout: a.stdoutStream ?? 0, stderr: a.stderrStream ?? 0 },
  };
}

function tty(t: { cols?: number | null; rows?: number | null } | null | undefined): Tty | undefined {
  if (!t) return undefined;
  return windowSize(t.cols || 80, t.rows || 24);
}

function windowSize(cols: number, rows: number): { cols: number; rows: number } {
  if (cols < 1 || rows < 1 || cols > 0xffff || rows > 0xffff) throw bad(`window size ${cols}x${rows} is out of range`);
  return { cols, rows };
}

/** The request's variables, checked, then the terminal's TERM (which wins, as the client's terminal says what it is). */
function envPairs(kvs: { key?: string | null; value?: string | null }[] | null | undefined, t: { term?: string | null } | null | undefined, what: string): [string, string][] {
  const pairs = (kvs ?? []).map((kv): [string, string] => {
    const key = kv.key ?? "";
    if (key === "" || key.includes("=") || key.includes("\0")) throw bad(`${what}: bad environment variable name "${key}"`);
    return [key, kv.value ?? ""];
  });
  if (t?.term) pairs.push(["TERM", t.term]);
  return pairs;
}

function namespaceEntry(local: string, remote: string): { local: string; remote: string } {
  const r = remote || local;
  if (!local.startsWith("/") || !r.startsWith("/")) throw bad(`namespace entry "${local}=${r}": paths must be absolute`);
  return { local, remote: r };
}

function containerRef(ref: string | null | undefined): string {
  if (!ref) throw bad("no container given");
  return ref;
}

function nonEmpty(v: string | null | undefined, what: string): string {
  if (!v) throw bad(`no ${what} given`);
  return v;
}
