// Layer extraction: one tar (plain, gzip or zstd) streamed through
// tar-stream into a directory an overlay mount can use as a lower layer.
// The blob's digest and the uncompressed content's diff_id are computed on
// the way through; the layer is written to a temporary directory and renamed
// into place only when both match, so a half-written or corrupt layer is
// never used. OCI whiteouts become overlay whiteouts (0/0 character devices);
// an opaque directory gets overlay's xattr, or is reported to the caller
// when the directory will be served over a file system that drops trusted
// xattrs (9p does), which then spells the opacity out as whiteouts.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import tar from "tar-stream";
import { ImageError } from "./errors.js";
import type { Layer } from "./store.js";
import { lsetxattr, mknod, S_IFBLK, S_IFCHR, S_IFIFO } from "../proto/libc.js";
import { ContainedTree, entryPath } from "./tree.js";

const OPAQUE_XATTR = "trusted.overlay.opaque";
const WH = ".wh.";
const OPQ = ".wh..wh..opq";
/**
 * Tar bytes allowed between entries (headers, pax records, padding, the end
 * blocks). More means data no entry accounts for: an endless stream of
 * zeros after the archive's end, or a giant pax header tar-stream would
 * hold in memory.
 */
const SLACK_BYTES = 1 << 20;

export interface UnpackOptions {
  /** "xattr": mark opaque directories for overlay; "record": only list them in the result. */
  opaque: "xattr" | "record";
  /** Called as compressed bytes are read. */
  progress?: (bytes: number) => void;
  /** Runs on the finished temporary directory before it is renamed into place. */
  finish?: (dir: string, result: UnpackResult) => void;
}

export interface UnpackResult {
  entries: number;
  /** Opaque directories, relative to the layer root. */
  opaque: string[];
}

type Header = tar.Header;

/** An entry's body as tar-stream hands it over (a streamx Readable). */
type Body = import("streamx").Readable;

interface DirMeta {
  real: string;
  header: Header;
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

interface StreamHash {
  bytes: number;
  /** Resolves at once unless too much is waiting to be hashed. */
  update(chunk: Uint8Array): Promise<void> | undefined;
  digest(): Promise<string>;
  close(): void;
}

/** sha256 on this thread: for small layers, where starting a worker costs more. */
class InlineSha256 implements StreamHash {
  private readonly hash = createHash("sha256");
  bytes = 0;
  update(chunk: Uint8Array): undefined {
    this.bytes += chunk.length;
    this.hash.update(chunk);
    return undefined;
  }
  digest(): Promise<string> {
    return Promise.resolve(`sha256:${this.hash.digest("hex")}`);
  }
  close(): void {}
}

/** Layers at least this big hash on worker threads (a worker takes ~0.3 s to start under TCG). */
const WORKER_HASH_MIN = 8 << 20;

/** sha256 of one byte stream on a worker thread, with bounded bytes in flight. */
class Sha256Worker implements StreamHash {
  private readonly worker: Worker;
  private inFlight = 0;
  private waiters: (() => void)[] = [];
  private result?: (d: string) => void;
  private failed?: Error;
  bytes = 0;

  private done = false;

  constructor() {
    this.worker = idleWorkers.pop() ?? new Worker(HASH_WORKER);
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
    if (this.failed) throw this.failed;
    this.bytes += chunk.length;
    this.inFlight += chunk.length;
    // A copy (the stream may reuse the chunk's memory), handed over without a second one.
    const copy = new Uint8Array(chunk);
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
      idleWorkers.push(this.worker);
    } else {
      this.worker.terminate();
    }
  }
}

const MAX_IN_FLIGHT = 32 << 20;
/** Finished workers kept for the next unpack: two, as one unpack uses. */
const MAX_IDLE_WORKERS = 2;
const idleWorkers: Worker[] = [];
// In a compiled binary the worker is its own entry point (see the Makefile),
// named relative to the entry points' common root; from source, it sits next
// to this module.
// (import.meta.url keeps the source path in a --bytecode build; Bun.main
// tells the two apart.)
const HASH_WORKER = Bun.main.startsWith("/$bunfs/") ? "./oci/hash-worker.ts" : new URL("./hash-worker.ts", import.meta.url).href;

/** Resolves when `extract` wants more input; rejects if it failed meanwhile. */
function drained(extract: tar.Extract): Promise<void> {
  return new Promise((resolve, reject) => {
    const ok = () => {
      extract.off("error", bad);
      resolve();
    };
    const bad = (e: Error) => {
      extract.off("drain", ok);
      reject(e);
    };
    extract.once("drain", ok);
    extract.once("error", bad);
  });
}

function rmQuiet(p: string): void {
  try {
    fs.rmSync(p, { recursive: true, force: true });
  } catch {
    // best effort: a temporary directory
  }
}

/** Makes room for a new entry: anything at `real` goes, except a directory the entry will reuse. */
function clear(real: string, keepDir: boolean, tree: ContainedTree): void {
  // No exception for the usual case, a new name: under emulation 2000 thrown
  // ENOENTs cost a noticeable part of an unpack.
  const st = fs.lstatSync(real, { throwIfNoEntry: false });
  if (st === undefined) return;
  if (st.isDirectory()) {
    if (keepDir) return;
    fs.rmSync(real, { recursive: true, force: true });
    tree.invalidate();
  } else {
    fs.unlinkSync(real);
    if (st.isSymbolicLink()) tree.invalidate();
  }
}

function applyMeta(real: string, h: Header, isLink: boolean): void {
  fs.lchownSync(real, h.uid ?? 0, h.gid ?? 0);
  // After chown, which clears set-id bits.
  if (!isLink) fs.chmodSync(real, (h.mode ?? 0o644) & 0o7777);
  const t = h.mtime ?? new Date(0);
  fs.lutimesSync(real, t, t);
}

function applyXattrs(real: string, h: Header): void {
  for (const [k, v] of Object.entries((h.pax ?? {}) as Record<string, string>)) {
    if (!k.startsWith("SCHILY.xattr.")) continue;
    const name = k.slice("SCHILY.xattr.".length);
    // A layer must not forge overlay's own markers.
    if (name.startsWith("trusted.overlay.")) continue;
    try {
      lsetxattr(real, name, Buffer.from(v, "latin1"));
    } catch {
      // A file system without that namespace (user.* on an older tmpfs):
      // the attribute is lost, the file is not.
    }
  }
}

class Extractor {
  readonly tree: ContainedTree;
  readonly dirs: DirMeta[] = [];
  readonly opaque: string[] = [];
  entries = 0;
  /** Uncompressed bytes seen so far; kept current by unpackLayer. */
  expanded = 0;
  /** Past this many uncompressed bytes without a new entry the stream is refused. */
  budget = SLACK_BYTES;
  /** File bytes this layer may still write: the free space when it started. */
  private room: number;

  constructor(
    readonly root: string,
    private readonly opts: UnpackOptions,
  ) {
    this.tree = new ContainedTree(root);
    const st = fs.statfsSync(root);
    this.room = st.bavail * st.bsize;
  }

  /** Handles one entry; `body` is consumed here. */
  async entry(h: Header, body: Body): Promise<void> {
    // An entry refused before its body is read is destroyed with the error
    // that refused it; the error reaches the caller through next(err), not
    // as an unhandled 'error' event.
    body.on("error", () => {});
    this.entries++;
    const size = h.size ?? 0;
    // Refused from the header, before a byte is written: a declared size
    // that cannot fit (an 8 GiB "file" in a 1 KiB blob, a decompression bomb).
    if (size > this.room) {
      throw new ImageError("invalid", `entry "${h.name}" declares ${human(size)}, more than the ${human(this.room)} left where layers are unpacked`);
    }
    this.room -= size;
    this.budget = this.expanded + size + SLACK_BYTES;
    const rel = entryPath(h.name);
    const base = path.posix.basename(rel);
    if (rel === "") return drain(body);
    if (base === OPQ) {
      const dir = this.tree.dir(path.posix.dirname(rel), true)!;
      if (this.opts.opaque === "xattr") lsetxattr(dir, OPAQUE_XATTR, Buffer.from("y"));
      this.opaque.push(path.relative(this.root, dir));
      return drain(body);
    }
    if (base.startsWith(WH + WH)) return drain(body); // other AUFS metadata (.wh..wh.plnk): nothing to do
    if (base.startsWith(WH)) {
      const real = this.tree.entry(path.posix.join(path.posix.dirname(rel), base.slice(WH.length)), true)!;
      clear(real, false, this.tree);
      mknod(real, S_IFCHR, 0, 0, 0);
      return drain(body);
    }
    const real = this.tree.entry(rel, true)!;
    switch (h.type) {
      case "directory":
        clear(real, true, this.tree);
        if (!fs.existsSync(real)) fs.mkdirSync(real, { mode: 0o755 });
        applyXattrs(real, h);
        this.dirs.push({ real, header: h });
        return drain(body);
      case "file":
      case "contiguous-file":
        clear(real, false, this.tree);
        await writeFile(real, body, h);
        applyXattrs(real, h);
        return;
      case "symlink":
        clear(real, false, this.tree);
        fs.symlinkSync(h.linkname ?? "", real);
        this.tree.invalidate();
        applyMeta(real, h, true);
        applyXattrs(real, h);
        return drain(body);
      case "link": {
        let targetRel: string;
        try {
          targetRel = entryPath(h.linkname ?? "");
        } catch {
          throw new ImageError("invalid", `entry "${h.name}": hard link target "${h.linkname}" points outside the layer`);
        }
        const target = this.tree.entry(targetRel, false);
        const st = target === undefined ? undefined : fs.lstatSync(target, { throwIfNoEntry: false });
        if (!st || st.isDirectory()) throw new ImageError("invalid", `entry "${h.name}": hard link target "${h.linkname}" is not a file in this layer`);
        clear(real, false, this.tree);
        fs.linkSync(target!, real);
        return drain(body);
      }
      case "character-device":
      case "block-device":
      case "fifo": {
        clear(real, false, this.tree);
        const type = h.type === "fifo" ? S_IFIFO : h.type === "block-device" ? S_IFBLK : S_IFCHR;
        mknod(real, type, h.mode ?? 0o600, h.devmajor ?? 0, h.devminor ?? 0);
        break;
      }
      default:
        // pax/GNU metadata is folded into headers by tar-stream; anything
        // else (sockets, unknown types) has no place in a rootfs.
        return drain(body);
    }
    applyMeta(real, h, false);
    applyXattrs(real, h);
  }

  /** Directory modes and times last: writing inside a directory changes its mtime. */
  finishDirs(): void {
    for (let i = this.dirs.length - 1; i >= 0; i--) {
      const d = this.dirs[i]!;
      applyMeta(d.real, d.header, false);
    }
  }
}

function human(n: number): string {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return i === 0 ? `${n} bytes` : `${n.toFixed(1)} ${units[i]}`;
}

function drain(body: Body): Promise<void> {
  return new Promise((resolve, reject) => {
    body.on("end", resolve);
    body.on("error", reject);
    body.resume();
  });
}

const ROOT_CREATES = process.getuid?.() === 0 && process.getgid?.() === 0;

/** Writes a regular file and sets its metadata through the open descriptor (no path walks). */
function writeFile(real: string, body: Body, h: Header): Promise<void> {
  const fd = fs.openSync(real, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
  return new Promise<void>((resolve, reject) => {
    body.on("data", (chunk: unknown) => {
      try {
        fs.writeSync(fd, chunk as Buffer);
      } catch (err) {
        body.destroy(err as Error);
        reject(err);
      }
    });
    body.on("end", () => {
      try {
        // A new file is root's already when we are root (no directory is
        // set-gid while the layer is being written: modes come last).
        if (!(ROOT_CREATES && !h.uid && !h.gid)) fs.fchownSync(fd, h.uid ?? 0, h.gid ?? 0);
        fs.fchmodSync(fd, (h.mode ?? 0o644) & 0o7777);
        const t = h.mtime ?? new Date(0);
        fs.futimesSync(fd, t, t);
        resolve();
      } catch (err) {
        reject(err);
      }
    });
    body.on("error", reject);
  }).finally(() => fs.closeSync(fd));
}

/**
 * Unpacks `layer` into `dest` (which must not exist yet). On any failure
 * nothing is left at `dest`.
 */
export async function unpackLayer(layer: Layer, dest: string, opts: UnpackOptions): Promise<UnpackResult> {
  const src = layer.source;
  let size: number;
  try {
    const st = fs.statSync(src.file);
    if (!st.isFile()) throw new Error("not a regular file");
    size = src.size >= 0 ? src.size : st.size - src.offset;
  } catch (err) {
    throw new ImageError("corrupt", `${src.label}: cannot read ${src.file}: ${(err as Error).message}`);
  }
  const tmp = `${dest}.partial-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  fs.mkdirSync(tmp, { mode: 0o755 });
  const ex = new Extractor(tmp, opts);
  const big = size >= WORKER_HASH_MIN;
  const blobHash: StreamHash = big ? new Sha256Worker() : new InlineSha256();
  const diffHash: StreamHash = big ? new Sha256Worker() : new InlineSha256();
  // Set when reading the blob (or decompressing it) failed, as opposed to
  // parsing or writing what came out.
  let readFailed = false;
  let compressed = false;
  try {
    const kind = size > 0 ? sniff(src.file, src.offset) : "none";
    // Web streams: Bun runs these natively; node:stream pipelines of the
    // same stages cost three times as much under emulation.
    let plain: ReadableStream<Uint8Array> = Bun.file(src.file)
      .slice(src.offset, src.offset + size)
      .stream()
      .pipeThrough(
        new TransformStream<Uint8Array, Uint8Array>({
          async transform(chunk, ctl) {
            opts.progress?.(chunk.length);
            await blobHash.update(chunk);
            ctl.enqueue(chunk);
          },
        }),
      );
    if (kind !== "none") {
      compressed = true;
      // "zstd" is missing from TypeScript's CompressionFormat; Bun supports it.
      const format = kind as unknown as ConstructorParameters<typeof DecompressionStream>[0];
      plain = plain.pipeThrough(new DecompressionStream(format) as unknown as TransformStream<Uint8Array, Uint8Array>);
    }
    const extract = tar.extract();
    extract.on("entry", (h, body, next) => {
      ex.entry(h, body).then(
        () => next(),
        (err: unknown) => next(err instanceof Error ? err : new Error(String(err))),
      );
    });
    const finished = new Promise<void>((resolve, reject) => {
      extract.once("finish", () => resolve());
      extract.once("error", reject);
    });
    finished.catch(() => {}); // observed below; an early failure must not go unhandled
    const reader = plain.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read().catch((e: unknown) => {
          readFailed = true;
          throw e;
        });
        if (done) break;
        // Whatever follows the tar's end blocks is still hashed.
        await diffHash.update(value);
        ex.expanded += value.length;
        if (ex.expanded > ex.budget) {
          throw new ImageError("invalid", `more than ${human(SLACK_BYTES)} of data that no tar entry accounts for (after entry ${ex.entries}): trailing garbage or an oversized header`);
        }
        if (!extract.write(value)) await drained(extract);
      }
    } catch (err) {
      void reader.cancel().catch(() => {});
      throw err;
    }
    extract.end(undefined);
    await finished;
    const label = src.label;
    const [blobDigest, diffId] = await Promise.all([blobHash.digest(), diffHash.digest()]);
    if (blobHash.bytes !== size) throw new ImageError("corrupt", `${label}: truncated (${blobHash.bytes} of ${size} bytes)`);
    if (layer.digest && blobDigest !== layer.digest) throw new ImageError("corrupt", `${label}: content does not match its digest (corrupt blob)`);
    if (diffId !== layer.diffId) throw new ImageError("corrupt", `${label}: uncompressed content is ${diffId}, but the image config says ${layer.diffId}`);
    ex.finishDirs();
    const result = { entries: ex.entries, opaque: ex.opaque };
    opts.finish?.(tmp, result);
    fs.renameSync(tmp, dest);
    return result;
  } catch (err) {
    rmQuiet(tmp);
    // Errors from single entries ("points outside the layer") get the layer's name.
    if (err instanceof ImageError) throw err.message.startsWith(src.label) ? err : new ImageError(err.kind, `${src.label}: ${err.message}`);
    const e = err as NodeJS.ErrnoException;
    if (readFailed && compressed && !(e.code && e.syscall)) throw new ImageError("corrupt", `${src.label}: cannot decompress (${e.message})`);
    if (/tar|header|end of data/i.test(e.message)) throw new ImageError("corrupt", `${src.label}: not a valid tar (${e.message})`);
    throw new ImageError("invalid", `${src.label}: ${e.message}`);
  } finally {
    blobHash.close();
    diffHash.close();
  }
}
