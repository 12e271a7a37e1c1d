// Layer extraction: one tar (plain, gzip or zstd) streamed through
// tar-stream into a directory an overlay mount can use as a lower layer.
// The blob's digest and the uncompressed content's diff_id are computed on
// the way through; the layer is written to a temporary directory and renamed
// into place only when both match, so a half-written or corrupt layer is
// never used. OCI whiteouts become overlay whiteouts (0/0 character devices);
// an opaque directory gets overlay's xattr, or is reported to the caller
// when the directory will be served over a file system that drops trusted
// xattrs (9p does), which then spells the opacity out as whiteouts.
import fs from "node:fs";
import path from "node:path";
import { Transform, type TransformCallback, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import zlib from "node:zlib";
import tar from "tar-stream";
import { sha256 } from "./digest.js";
import { ImageError } from "./errors.js";
import type { Layer } from "./store.js";
import { lsetxattr, mknod, S_IFBLK, S_IFCHR, S_IFIFO } from "./sys.js";
import { ContainedTree, entryPath } from "./tree.js";

export const OPAQUE_XATTR = "trusted.overlay.opaque";
const WH = ".wh.";
const OPQ = ".wh..wh..opq";

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

class Hasher extends Transform {
  readonly hash = sha256();
  bytes = 0;
  constructor(private readonly onBytes?: (n: number) => void) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    this.onBytes?.(chunk.length);
    cb(null, chunk);
  }
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
  let st: fs.Stats;
  try {
    st = fs.lstatSync(real);
  } catch {
    return;
  }
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

  constructor(
    readonly root: string,
    private readonly opts: UnpackOptions,
  ) {
    this.tree = new ContainedTree(root);
  }

  /** Handles one entry; `body` is consumed here. */
  async entry(h: Header, body: Body): Promise<void> {
    this.entries++;
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
        await writeFile(real, body);
        break;
      case "symlink":
        clear(real, false, this.tree);
        fs.symlinkSync(h.linkname ?? "", real);
        this.tree.invalidate();
        applyMeta(real, h, true);
        applyXattrs(real, h);
        return drain(body);
      case "link": {
        const targetRel = entryPath(h.linkname ?? "");
        const target = this.tree.entry(targetRel, false);
        let st: fs.Stats | undefined;
        try {
          st = target === undefined ? undefined : fs.lstatSync(target);
        } catch {
          st = undefined;
        }
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

function drain(body: Body): Promise<void> {
  return new Promise((resolve, reject) => {
    body.on("end", resolve);
    body.on("error", reject);
    body.resume();
  });
}

function writeFile(real: string, body: Body): Promise<void> {
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
    body.on("end", resolve);
    body.on("error", reject);
  }).finally(() => fs.closeSync(fd));
}

/**
 * Unpacks `layer` into `dest` (which must not exist yet). On any failure
 * nothing is left at `dest`.
 */
export async function unpackLayer(layer: Layer, dest: string, opts: UnpackOptions): Promise<UnpackResult> {
  const src = layer.source;
  const tmp = `${dest}.partial-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  fs.mkdirSync(tmp, { mode: 0o755 });
  const ex = new Extractor(tmp, opts);
  try {
    const size = src.size >= 0 ? src.size : fs.statSync(src.file).size - src.offset;
    const raw = fs.createReadStream(src.file, { start: src.offset, end: src.offset + size - 1, highWaterMark: 1 << 20 });
    const rawHash = new Hasher(opts.progress);
    const diffHash = new Hasher();
    const kind = size > 0 ? sniff(src.file, src.offset) : "none";
    const stages: NodeJS.ReadWriteStream[] = [rawHash];
    if (kind === "gzip") stages.push(zlib.createGunzip());
    if (kind === "zstd") stages.push(zlib.createZstdDecompress());
    stages.push(diffHash);
    const extract = tar.extract();
    extract.on("entry", (h, body, next) => {
      ex.entry(h, body).then(
        () => next(),
        (err: unknown) => next(err instanceof Error ? err : new Error(String(err))),
      );
    });
    // Whatever follows the tar's end blocks must still be hashed.
    const sink = new Writable({
      write(chunk: Buffer, _e, cb) {
        if (!extract.write(chunk)) extract.once("drain", () => cb());
        else cb();
      },
      final(cb) {
        extract.end(undefined);
        extract.once("finish", () => cb(null));
      },
    });
    extract.on("error", (e) => sink.destroy(e));
    await pipeline([raw, ...stages, sink] as unknown as [NodeJS.ReadableStream, NodeJS.WritableStream]);
    const label = src.label;
    if (rawHash.bytes !== size) throw new ImageError("corrupt", `${label}: truncated (${rawHash.bytes} of ${size} bytes)`);
    if (layer.digest && `sha256:${rawHash.hash.digest("hex")}` !== layer.digest) throw new ImageError("corrupt", `${label}: content does not match its digest (corrupt blob)`);
    const diffId = `sha256:${diffHash.hash.digest("hex")}`;
    if (diffId !== layer.diffId) throw new ImageError("corrupt", `${label}: uncompressed content is ${diffId}, but the image config says ${layer.diffId}`);
    ex.finishDirs();
    const result = { entries: ex.entries, opaque: ex.opaque };
    opts.finish?.(tmp, result);
    fs.renameSync(tmp, dest);
    return result;
  } catch (err) {
    rmQuiet(tmp);
    if (err instanceof ImageError) throw err;
    const e = err as NodeJS.ErrnoException;
    if (e.code?.startsWith("Z_") || e.code?.startsWith("ZSTD") || /zstd/i.test(e.message)) throw new ImageError("corrupt", `${src.label}: cannot decompress (${e.message})`);
    if (/tar|header|end of data/i.test(e.message)) throw new ImageError("corrupt", `${src.label}: not a valid tar (${e.message})`);
    throw new ImageError("invalid", `${src.label}: ${e.message}`);
  }
}
