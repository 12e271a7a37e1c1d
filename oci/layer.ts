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
import tar from "tar-stream";
import { BlobReadError, openBlob, type BlobStream } from "./blob-stream.js";
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

/** A failure applying one entry (refused, or the disk said no), as opposed to the tar itself being broken. */
class EntryError extends Error {
  constructor(readonly failure: unknown) {
    super(failure instanceof Error ? failure.message : String(failure));
    this.name = "EntryError";
  }
}

/**
 * Unpacks `layer` into `dest` (which must not exist yet). On any failure
 * nothing is left at `dest`.
 */
export async function unpackLayer(layer: Layer, dest: string, opts: UnpackOptions): Promise<UnpackResult> {
  const src = layer.source;
  const blob = openBlob(layer, opts.progress);
  const tmp = `${dest}.partial-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  try {
    fs.mkdirSync(path.dirname(dest), { recursive: true });
    fs.mkdirSync(tmp, { mode: 0o755 });
    const ex = new Extractor(tmp, opts);
    await applyTar(blob, ex);
    await blob.verify();
    ex.finishDirs();
    const result = { entries: ex.entries, opaque: ex.opaque };
    opts.finish?.(tmp, result);
    fs.renameSync(tmp, dest);
    return result;
  } catch (err) {
    rmQuiet(tmp);
    throw classify(err, src.label);
  } finally {
    blob.close();
  }
}

/** Feeds the blob's tar through tar-stream into the extractor, holding the stream to its size budget. */
async function applyTar(blob: BlobStream, ex: Extractor): Promise<void> {
  const extract = tar.extract();
  extract.on("entry", (h, body, next) => {
    ex.entry(h, body).then(
      () => next(),
      (err: unknown) => next(new EntryError(err)),
    );
  });
  const finished = new Promise<void>((resolve, reject) => {
    extract.once("finish", () => resolve());
    extract.once("error", reject);
  });
  finished.catch(() => {}); // observed below; an early failure must not go unhandled
  try {
    for (;;) {
      const value = await blob.read();
      if (!value) break;
      ex.expanded += value.length;
      if (ex.expanded > ex.budget) {
        throw new ImageError("invalid", `more than ${human(SLACK_BYTES)} of data that no tar entry accounts for (after entry ${ex.entries}): trailing garbage or an oversized header`);
      }
      if (!extract.write(value)) await drained(extract);
    }
  } catch (err) {
    blob.cancel();
    throw err;
  }
  extract.end(undefined);
  await finished;
}

/** An unpack's failure as the ImageError a user reads, named after the layer, by where it came from. */
function classify(err: unknown, label: string): ImageError {
  const named = (kind: ImageError["kind"], message: string) => new ImageError(kind, message.startsWith(label) ? message : `${label}: ${message}`);
  if (err instanceof EntryError) return err.failure instanceof ImageError ? named(err.failure.kind, err.failure.message) : named("invalid", err.message);
  if (err instanceof ImageError) return named(err.kind, err.message);
  if (err instanceof BlobReadError) return named("corrupt", err.compressed ? `cannot decompress (${err.message})` : `cannot read the blob (${err.message})`);
  // Anything else came from tar-stream's parser.
  return named("corrupt", `not a valid tar (${err instanceof Error ? err.message : String(err)})`);
}
