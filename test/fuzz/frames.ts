// Fuzz inputs for the protocol: structured frames (every field of the schema
// filled with random, edge-case or out-of-range values, so they decode and
// reach the session and the request handlers) and mutated frames (bytes
// flipped, cut, spliced, lengths lied about, so they exercise the decoder).
// Seeded, so a failure can be replayed from its seed.
import path from "node:path";
import protobuf from "protobufjs";
import { HEADER_SIZE, MAGIC } from "../../proto/frame.js";

const SCHEMA = path.resolve(import.meta.dirname, "../../proto/fractal.proto");
const root = protobuf.loadSync(SCHEMA);
root.resolveAll();
const FrameType = root.lookupType("fractal.v1.Frame");

/** xorshift32: small, fast, reproducible. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 1;
  }
  next(): number {
    let x = this.s;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s = x >>> 0;
    return this.s;
  }
  int(n: number): number {
    return this.next() % n;
  }
  chance(p: number): boolean {
    return this.next() / 0x100000000 < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  bytes(n: number): Uint8Array {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = this.next() & 0xff;
    return b;
  }
}

const EDGE_U32 = [0, 1, 2, 3, 4, 7, 9, 15, 19, 64, 255, 4096, 65535, 0x7fffffff, 0xfffffffe, 0xffffffff];
const EDGE_STRINGS = ["", "/", ".", "..", "../../etc", "/proc/self/fd/0", "-1", "busybox", "\u0000", "%s%n", "a".repeat(300), "é☃\uffff"];

function randomString(r: Rng): string {
  if (r.chance(0.4)) return r.pick(EDGE_STRINGS);
  const n = r.int(12);
  let s = "";
  for (let i = 0; i < n; i++) s += String.fromCharCode(r.chance(0.9) ? 0x20 + r.int(95) : r.int(0x3000));
  return s;
}

function randomScalar(r: Rng, type: string): unknown {
  switch (type) {
    case "bool":
      return r.chance(0.5);
    case "string":
      return randomString(r);
    case "bytes":
      return r.bytes(r.chance(0.1) ? r.int(70000) : r.int(40));
    case "double":
    case "float":
      return r.pick([0, -1, 1.5, 1e308, Number.NaN, Number.POSITIVE_INFINITY, r.int(100000)]);
    default:
      // Every integer field of the schema is unsigned 32-bit or an enum.
      return r.chance(0.6) ? r.int(24) : r.pick(EDGE_U32);
  }
}

function randomMessage(r: Rng, t: protobuf.Type, depth: number): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const oneofMembers = new Set(t.oneofsArray.flatMap((o) => o.fieldsArray.map((f) => f.name)));
  for (const o of t.oneofsArray) {
    const f = r.pick(o.fieldsArray);
    out[f.name] = randomField(r, f, depth);
  }
  for (const f of t.fieldsArray) {
    if (oneofMembers.has(f.name) || !r.chance(0.6)) continue;
    out[f.name] = f.repeated ? Array.from({ length: r.int(4) }, () => randomField(r, f, depth)) : randomField(r, f, depth);
  }
  return out;
}

function randomField(r: Rng, f: protobuf.Field, depth: number): unknown {
  if (f.resolvedType instanceof protobuf.Type) return depth > 4 ? {} : randomMessage(r, f.resolvedType, depth + 1);
  if (f.resolvedType instanceof protobuf.Enum) return r.chance(0.8) ? r.pick(Object.values(f.resolvedType.values)) : r.int(40);
  return randomScalar(r, f.type);
}

/**
 * Fuzzing must not do harm to the machine it runs on: whatever a random exec
 * asks for, it runs `true` (or something that does not exist), never a
 * command named by chance, never writes files by cp, never connects to a
 * port of the machine's and never reaches its TPM. Everything else it asks
 * for (user, cwd, env, terminal, streams, namespaces, containers) stays
 * random.
 */
function defuse(frame: Record<string, unknown>, r: Rng): void {
  const req = frame.request as Record<string, Record<string, unknown>> | undefined;
  const exec = req?.exec;
  if (exec) exec.argv = [r.pick(["true", "/nonexistent/fuzz", ""]), ...((exec.argv as string[] | undefined) ?? []).slice(0, 3)];
  if (req?.run) req.run.command = ["true"];
  if (req?.shutdown) delete req.shutdown;
  // cp into the machine's own tree and port-forwards to its real ports stay out.
  if (req?.copy) req.copy.into = false;
  if (req?.portForward) Object.assign(req.portForward, { host: "127.0.0.1", port: 9 });
  // Nor does the machine's own TPM, should it have one.
  if (req?.attestKeys) delete req.attestKeys;
  if (req?.attestQuote) delete req.attestQuote;
}

// Frames that end a connection (a second HelloAck, Auth out of turn, a fatal
// ProtocolError) are drawn rarely, so most connections live long enough for
// requests and streams to interact.
const KIND_WEIGHTS: [string, number][] = [
  ["request", 50], ["data", 12], ["windowUpdate", 8], ["streamEnd", 6], ["streamReset", 6], ["response", 4],
  ["hello", 4], ["protocolError", 2], ["helloAck", 1], ["auth", 1], ["authOk", 1],
];
const WEIGHT_SUM = KIND_WEIGHTS.reduce((n, [, w]) => n + w, 0);

function pickKind(r: Rng): string {
  let x = r.int(WEIGHT_SUM);
  for (const [k, w] of KIND_WEIGHTS) {
    if ((x -= w) < 0) return k;
  }
  return "request";
}

/** One structured frame, encoded with its header. */
export function structuredFrame(r: Rng): Uint8Array {
  const kind = pickKind(r);
  const obj = { [kind]: randomField(r, FrameType.fields[kind]!, 0) };
  defuse(obj, r);
  const body = FrameType.encode(FrameType.fromObject(obj)).finish();
  return withHeader(body, body.length);
}

function withHeader(body: Uint8Array, declared: number): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + body.length);
  out.set(MAGIC, 0);
  new DataView(out.buffer).setUint32(2, declared >>> 0, false);
  out.set(body, HEADER_SIZE);
  return out;
}

/** A frame with its bytes damaged: the decoder's diet. */
export function mutatedFrame(r: Rng, seed: Uint8Array): Uint8Array {
  const b = new Uint8Array(seed);
  switch (r.int(6)) {
    case 0: // flip a few bytes anywhere, header included
      for (let i = r.int(4) + 1; i > 0; i--) b[r.int(b.length)] ^= 1 << r.int(8);
      return b;
    case 1: // cut short
      return b.subarray(0, r.int(b.length));
    case 2: // lie about the length
      return withHeader(b.subarray(HEADER_SIZE), r.pick([0, 1, b.length * 2, 1 << 20, (1 << 20) + 1, 0xffffffff, r.next()]));
    case 3: // random body under a valid header
      return withRandomBody(r);
    case 4: // two frames glued at a random point
      return Uint8Array.from([...b.subarray(0, r.int(b.length)), ...structuredFrame(r)]);
    default: // pure noise
      return r.bytes(r.int(32));
  }
}

function withRandomBody(r: Rng): Uint8Array {
  const body = r.bytes(r.int(64));
  return withHeader(body, body.length);
}
