// A layer blob as a verified byte stream: read from the store,
// decompressed (gzip or zstd, sniffed from its first bytes), hashed (the
// uncompressed diff_id), and checked against the image once the caller has
// read it all. It only reads and verifies; applying the tar it carries is
// oci/layer.ts's job.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { ImageError } from "./errors.js";
import type { Layer } from "./store.js";

/** A failure reading the blob or decompressing it, as opposed to using what came out. */
export class BlobReadError extends Error {
  constructor(
    readonly compressed: boolean,
    cause: unknown,
  ) {
    super(cause instanceof Error ? cause.message : String(cause));
    this.name = "BlobReadError";
  }
}

export interface BlobStream {
  /** The next uncompressed bytes, undefined at the end; a failure to read or decompress rejects with BlobReadError. */
  read(): Promise<Uint8Array | undefined>;
  /** After the last read: throws ImageError "corrupt" unless size, digest and diff_id all match. */
  verify(): Promise<void>;
  cancel(): void;
  /** Releases the hashers; call once, whatever happened. */
  close(): void;
}

/** Opens `layer`'s blob for reading; `progress` sees compressed bytes as they are read. */
export function openBlob(layer: Layer, progress?: (bytes: number) => void): BlobStream {
  const src = layer.source;
  let size: number;
  try {
    const st = fs.statSync(src.file);
    if (!st.isFile()) throw new Error("not a regular file");
    size = src.size >= 0 ? src.size : st.size - src.offset;
  } catch (err) {
    throw new ImageError("corrupt", `${src.label}: cannot read ${src.file}: ${(err as Error).message}`);
  }
  // One hash, of the uncompressed content: its match with the config's
  // diff_id (the config itself verified by digest) authenticates every
  // byte written. The compressed blob's own digest would add nothing to
  // that, and hashing it too cost up to half again under emulation.
  // How far the content expands is known only at its end (a 1 MiB gzip
  // blob can hold a 128 MiB tar): the hasher picks its thread from what it
  // has seen.
  const diffHash = new DeferredSha256();
  const kind = size > 0 ? sniff(src.file, src.offset) : "none";
  let read = 0;
  // Web streams: Bun runs these natively; node:stream pipelines of the
  // same stages cost three times as much under emulation.
  let plain: ReadableStream<Uint8Array> = Bun.file(src.file)
    .slice(src.offset, src.offset + size)
    .stream()
    .pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, ctl) {
          read += chunk.length;
          progress?.(chunk.length);
          ctl.enqueue(chunk);
        },
      }),
    );
  if (kind !== "none") {
    // "zstd" is missing from TypeScript's CompressionFormat; Bun supports it.
    const format = kind as unknown as ConstructorParameters<typeof DecompressionStream>[0];
    plain = plain.pipeThrough(new DecompressionStream(format) as unknown as TransformStream<Uint8Array, Uint8Array>);
  }
  const reader = plain.getReader();
  return {
    async read() {
      for (;;) {
        let r;
        try {
          r = await reader.read();
        } catch (err) {
          throw new BlobReadError(kind !== "none", err);
        }
        if (r.done) return undefined;
        if (r.value.length === 0) continue;
        // Whatever follows the tar's end blocks is still hashed.
        await diffHash.update(r.value);
        return r.value;
      }
    },
    async verify() {
      const diffId = await diffHash.digest();
      if (read !== size) throw new ImageError("corrupt", `${src.label}: truncated (${read} of ${size} bytes)`);
      // An uncompressed blob is its own content: one digest names both.
      if (kind === "none" && layer.digest && diffId !== layer.digest) throw new ImageError("corrupt", `${src.label}: content does not match its digest (corrupt blob)`);
      if (diffId !== layer.diffId) {
        throw new ImageError("corrupt", `${src.label}: content does not match the image config (corrupt blob): uncompressed it is ${diffId}, the config says ${layer.diffId}`);
      }
    },
    cancel() {
      void reader.cancel().catch(() => {});
    },
    close() {
      diffHash.close();
    },
  };
}

function sniff(file: string, offset: number): "gzip" | "zstd" | "none" {
  const b = Buffer.alloc(4);
  const fd = fs.openSync(file, "r");
  try {
    fs.readSync(fd, b, 0, 4, offset);
  } finally {
    fs.closeSync(fd);
  }
  if (b[0] === 0x1f && b[1] === 0x8b) return "gzip";
  if (b.readUInt32LE(0) === 0xfd2fb528) return "zstd";
  return "none";
}

/** Streams at least this big hash on worker threads (a worker takes ~0.3 s to start under TCG). */
const WORKER_HASH_MIN = 8 << 20;

/**
 * sha256 of a stream of unknown length: the first WORKER_HASH_MIN bytes are
 * held (copied: the stream may reuse a chunk's memory) and hashed on this
 * thread if the stream ends there; a longer stream hands them to a worker.
 */
class DeferredSha256 {
  private held: Uint8Array<ArrayBuffer>[] = [];
  private heldBytes = 0;
  private worker?: Sha256Worker;

  /** Resolves at once unless too much is waiting to be hashed. */
  update(chunk: Uint8Array): Promise<void> | undefined {
    if (this.worker) return this.worker.update(chunk);
    this.held.push(chunk.slice());
    this.heldBytes += chunk.length;
    if (this.heldBytes < WORKER_HASH_MIN) return undefined;
    this.worker = new Sha256Worker();
    let wait: Promise<void> | undefined;
    for (const c of this.held.splice(0)) wait = this.worker.handOver(c);
    return wait;
  }

  digest(): Promise<string> {
    if (this.worker) return this.worker.digest();
    const hash = createHash("sha256");
    for (const c of this.held.splice(0)) hash.update(c);
    return Promise.resolve(`sha256:${hash.digest("hex")}`);
  }

  close(): void {
    this.held = [];
    this.worker?.close();
  }
}

/** sha256 of one byte stream on a worker thread, with bounded bytes in flight. */
class Sha256Worker {
  private readonly worker: Worker;
  private inFlight = 0;
  private waiters: (() => void)[] = [];
  private result?: (d: string) => void;
  private failed?: Error;
  private done = false;

  constructor() {
    this.worker = takeWorker() ?? new Worker(hashWorkerPath());
    this.worker.ref();
    this.worker.onmessage = (e: MessageEvent) => {
      const m = e.data as { acked?: number; digest?: string };
      if (m.digest) return this.result?.(m.digest);
      this.inFlight -= m.acked ?? 0;
      if (this.inFlight <= MAX_IN_FLIGHT) for (const w of this.waiters.splice(0)) w();
    };
    this.worker.onerror = (e) => {
      this.failed = new Error(`hash worker: ${e.message}`);
      for (const w of this.waiters.splice(0)) w();
    };
  }

  update(chunk: Uint8Array): Promise<void> | undefined {
    // A copy: the stream may reuse the chunk's memory.
    return this.handOver(new Uint8Array(chunk));
  }

  /** A chunk that is ours alone (its whole buffer), moved to the worker without another copy. */
  handOver(copy: Uint8Array<ArrayBuffer>): Promise<void> | undefined {
    if (this.failed) throw this.failed;
    this.inFlight += copy.length;
    this.worker.postMessage(copy, [copy.buffer]);
    if (this.inFlight <= MAX_IN_FLIGHT) return undefined;
    return new Promise((r) => this.waiters.push(r));
  }

  digest(): Promise<string> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve) => {
      this.result = (d) => {
        this.done = true;
        resolve(d);
      };
      this.worker.postMessage(null);
    });
  }

  /** Back to the pool when it finished cleanly (it has reset itself); otherwise gone. */
  close(): void {
    if (this.done && !this.failed && idleWorkers.length < MAX_IDLE_WORKERS) {
      this.worker.onmessage = null;
      this.worker.onerror = null;
      // An idle worker must not keep a command-line process alive.
      this.worker.unref();
      parkWorker(this.worker);
    } else {
      this.worker.terminate();
    }
  }
}

const MAX_IN_FLIGHT = 32 << 20;
/** Finished workers kept for the next unpack (one each): two, for unpacks that overlap. */
const MAX_IDLE_WORKERS = 2;
/**
 * How long a finished worker waits for the next unpack. Each holds a whole
 * JavaScript heap (~10 MiB resident): kept for good, two of them doubled an
 * idle agent's memory (bench-containers (d)); an image's layers, unpacked
 * back to back, still find them warm.
 */
export const IDLE_WORKER_MS = 5000;
/** Parked workers, each with the timer that ends it; taking one stops its timer. */
const idleWorkers: { worker: Worker; timer: ReturnType<typeof setTimeout> }[] = [];

function takeWorker(): Worker | undefined {
  const idle = idleWorkers.pop();
  if (idle) clearTimeout(idle.timer);
  return idle?.worker;
}

function parkWorker(worker: Worker): void {
  const idle = {
    worker,
    timer: setTimeout(() => {
      idleWorkers.splice(idleWorkers.indexOf(idle), 1);
      worker.terminate();
    }, IDLE_WORKER_MS),
  };
  idle.timer.unref();
  idleWorkers.push(idle);
}
// In a compiled binary the worker is its own entry point (see the Makefile),
// named relative to the entry points' common root; from source, it is
// oci/hash-worker.ts of the tree the entry point (Bun.main) is in. Not
// import.meta.url: a compiled binary would keep it as the checkout's
// absolute path, and builds in two directories must be byte-identical.
let hashWorker: string | undefined;
function hashWorkerPath(): string {
  if (hashWorker) return hashWorker;
  if (Bun.main.startsWith("/$bunfs/")) return (hashWorker = "./oci/hash-worker.ts");
  for (let d = path.dirname(Bun.main); ; d = path.dirname(d)) {
    const f = path.join(d, "oci", "hash-worker.ts");
    if (fs.existsSync(f)) return (hashWorker = f);
    if (d === path.dirname(d)) throw new Error(`cannot find oci/hash-worker.ts above ${Bun.main}`);
  }
}

