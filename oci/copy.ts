// `cp` as tar streams (tar-stream), shared by the agent and the CLI: pack a
// path of a tree, and unpack a tar into a tree. Both resolve paths with
// ContainedTree, so neither a symlink in the tree (a container's `/x -> /`)
// nor a name in the tar (`../../etc/passwd`) reaches outside the root: the
// agent copies inside a container's root, and the CLI treats a tar from a
// guest as untrusted input too. Modes, owners, times, directories and
// symlinks are kept; other special files are skipped.
import fs from "node:fs";
import path from "node:path";
import { Readable } from "node:stream";
import tar from "tar-stream";
import { ErrorCode, FractalError } from "../proto/errors.js";
import { ContainedTree, entryPath } from "./tree.js";

const notFound = (what: string) => new FractalError(ErrorCode.NOT_FOUND, what);

/** `rel` under `root`, symlinks followed the contained way; NOT_FOUND names `shown` if it is absent. */
export function resolveIn(root: string, rel: string, shown: string): { real: string; st: fs.Stats } {
  const r = new ContainedTree(root).resolve(rel.replace(/^\/+/, ""));
  if (!r) throw notFound(`${shown}: no such file or directory`);
  return r;
}

/**
 * A tar of `real` (a file or a directory tree, inner symlinks kept as links)
 * whose top entry is `name`. `followTop`: `real` is a root reached through
 * a link (a running container's /proc/PID/root), read as the directory it
 * leads to.
 */
export function packPath(real: string, name: string, followTop = false): Readable {
  const pack = tar.pack();
  // A reader that stops (a client gone mid-copy) destroys the pack: the
  // file being read then closes, and the walk ends.
  let reading: fs.ReadStream | undefined;
  pack.on("close", () => reading?.destroy());
  const walk = async (p: string, entryName: string): Promise<void> => {
    if (pack.destroyed) throw new Error("the copy was abandoned");
    const st = followTop && p === real ? fs.statSync(p) : fs.lstatSync(p);
    const base = { name: entryName, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: st.mtime };
    if (st.isDirectory()) {
      pack.entry({ ...base, name: `${entryName}/`, type: "directory" }); // tar's convention: a directory's name ends in /
      for (const child of fs.readdirSync(p).sort()) await walk(path.join(p, child), `${entryName}/${child}`);
    } else if (st.isSymbolicLink()) {
      pack.entry({ ...base, type: "symlink", linkname: fs.readlinkSync(p) });
    } else if (st.isFile()) {
      await new Promise<void>((resolve, reject) => {
        const sink = pack.entry({ ...base, type: "file", size: st.size }, (err) => (err ? reject(err) : resolve()));
        const src = fs.createReadStream(p);
        reading = src;
        src.on("error", reject);
        src.on("close", () => (src.readableEnded ? undefined : reject(new Error("the copy was abandoned"))));
        src.pipe(sink);
      });
      reading = undefined;
    }
    // sockets, FIFOs and devices have no content to copy
  };
  walk(real, name).then(
    () => pack.finalize(),
    (err: Error) => pack.destroy(err),
  );
  return pack as unknown as Readable;
}

/**
 * Unpacks a tar into `destRel` under `root` (a directory that exists);
 * with `renameTop`, the tar's top-level name becomes that (docker's
 * `cp SRC DEST` where DEST does not exist yet).
 */
export async function unpackInto(input: AsyncIterable<Uint8Array>, root: string, destRel: string, renameTop?: string): Promise<void> {
  const tree = new ContainedTree(root);
  const extract = tar.extract();
  const dirs: { real: string; h: tar.Header }[] = [];
  extract.on("entry", (h, body, next) => {
    // Destroying the extractor destroys the entry too, which then reports the
    // same error; the extractor's listener below is the one that counts.
    body.on("error", () => {});
    const done = (err?: unknown) => {
      if (err) {
        body.resume();
        extract.destroy(err instanceof Error ? err : new Error(String(err)));
      } else next();
    };
    try {
      let rel = entryPath(h.name);
      if (renameTop !== undefined) rel = [renameTop, ...rel.split("/").slice(1)].filter((p) => p !== "").join("/");
      const target = path.posix.join(destRel.replace(/^\/+/, ""), rel);
      const real = tree.entry(target, true)!; // create: parents are made
      const st = tree.lstat(real);
      if (st && !(st.isDirectory() && h.type === "directory")) {
        fs.rmSync(real, { recursive: true, force: true });
        tree.invalidate();
      }
      switch (h.type) {
        case "directory":
          if (!st?.isDirectory()) fs.mkdirSync(real, { mode: 0o700 });
          dirs.push({ real, h });
          body.resume();
          body.on("end", () => done());
          return;
        case "file": {
          const fd = fs.openSync(real, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
          const out = fs.createWriteStream("", { fd, autoClose: true });
          body.pipe(out);
          out.on("finish", () => {
            try {
              meta(real, h, false);
              done();
            } catch (err) {
              done(err);
            }
          });
          out.on("error", done);
          return;
        }
        case "symlink":
          fs.symlinkSync(h.linkname ?? "", real);
          tree.invalidate();
          meta(real, h, true);
          break;
        default:
          // hard links, devices: not copied
      }
      body.resume();
      body.on("end", () => done());
    } catch (err) {
      done(err);
    }
  });
  const finished = new Promise<void>((resolve, reject) => {
    extract.once("finish", resolve);
    // on, not once: a destroyed extractor may report its error again, and an
    // unheard 'error' would take the whole process (the agent) down.
    extract.on("error", reject);
  });
  try {
    for await (const chunk of input) {
      if (extract.destroyed) break; // an entry failed: `finished` says why
      if (!extract.write(chunk)) await drainOrClose(extract);
    }
    if (!extract.destroyed) extract.end(undefined);
    await finished;
  } catch (err) {
    throw err instanceof FractalError ? err : new FractalError(ErrorCode.INVALID_ARGUMENT, `cp: ${(err as Error).message}`);
  }
  // Directory modes and times last: writing inside changed them.
  for (const d of dirs.reverse()) meta(d.real, d.h, false);
}

function meta(real: string, h: tar.Header, link: boolean): void {
  fs.lchownSync(real, h.uid ?? 0, h.gid ?? 0);
  if (!link) fs.chmodSync(real, (h.mode ?? 0o644) & 0o7777);
  const t = h.mtime ?? new Date();
  fs.lutimesSync(real, t, t);
}

/** Where a copy into `rel` under `root` goes: into it if it is a directory, else it becomes its name. */
export function copyTarget(root: string, rel: string, shown: string): { destRel: string; renameTop?: string } {
  const tree = new ContainedTree(root);
  const r = tree.resolve(rel.replace(/^\/+/, ""));
  if (r?.st.isDirectory()) return { destRel: path.relative(root, r.real) };
  const parent = path.posix.dirname(rel.replace(/^\/+/, ""));
  const p = tree.resolve(parent === "." ? "" : parent);
  if (!p?.st.isDirectory()) throw notFound(`${shown}: no such directory to copy into`);
  return { destRel: path.relative(root, p.real), renameTop: path.posix.basename(rel) };
}

/**
 * Waits for a writable to drain or, since a destroyed one never drains, to
 * close; the listener that did not fire goes too. Left behind, one 'close'
 * listener per wait piled up over a large copy (node warned at eleven).
 */
function drainOrClose(w: NodeJS.WritableStream): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      w.off("drain", done);
      w.off("close", done);
      resolve();
    };
    w.once("drain", done);
    w.once("close", done);
  });
}
