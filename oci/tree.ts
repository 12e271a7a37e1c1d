// Path resolution that cannot leave a directory: the layer directory an
// extraction writes into, or a container's rootfs read from the guest.
// `..` stops at the root and symlinks are followed as if the root were `/`
// (an absolute target starts again at the root), the way a chroot would see
// them, so no entry name or link can reach a file outside.
import fs from "node:fs";
import path from "node:path";
import { ImageError } from "./errors.js";

const MAX_LINKS = 40; // as the kernel's ELOOP limit

export class ContainedTree {
  private readonly cache = new Map<string, string>();

  constructor(readonly root: string) {}

  /**
   * lstat, except for the root itself, which is followed: a running
   * container's root is /proc/PID/root, a link into its mount namespace.
   */
  lstat(real: string): fs.Stats | undefined {
    return real === this.root ? fs.statSync(real, { throwIfNoEntry: false }) : fs.lstatSync(real, { throwIfNoEntry: false });
  }

  /** Forgets resolved directories; call after replacing a directory or symlink. */
  invalidate(): void {
    this.cache.clear();
  }

  /**
   * Resolves `rel` (a directory) to a real path under the root, following
   * symlinks inside the tree; missing directories are created when `create`.
   * Returns undefined if something is missing and `create` is false.
   */
  dir(rel: string, create: boolean): string | undefined {
    if (rel === "" || rel === ".") return this.root;
    const hit = this.cache.get(rel);
    if (hit !== undefined) return hit;
    const stack: string[] = [];
    const todo = rel.split("/").filter((p) => p !== "" && p !== ".");
    let links = 0;
    while (todo.length > 0) {
      const part = todo.shift()!;
      if (part === "..") {
        stack.pop();
        continue;
      }
      const real = path.join(this.root, ...stack, part);
      const st = fs.lstatSync(real, { throwIfNoEntry: false });
      if (st === undefined) {
        if (!create) return undefined;
        fs.mkdirSync(real, { mode: 0o755 });
        stack.push(part);
      } else if (st.isSymbolicLink()) {
        if (++links > MAX_LINKS) throw new ImageError("invalid", `${rel}: too many levels of symbolic links`);
        const target = fs.readlinkSync(real);
        if (target.startsWith("/")) stack.length = 0;
        todo.unshift(...target.split("/").filter((p) => p !== "" && p !== "."));
      } else if (st.isDirectory()) {
        stack.push(part);
      } else {
        throw new ImageError("invalid", `${rel}: ${path.join(...stack, part)} is not a directory`);
      }
    }
    const out = path.join(this.root, ...stack);
    this.cache.set(rel, out);
    return out;
  }

  /** The real path of `rel` with its parent resolved inside the tree (the last component is not followed). */
  entry(rel: string, create: boolean): string | undefined {
    const parent = this.dir(path.posix.dirname(rel), create);
    return parent === undefined ? undefined : path.join(parent, path.posix.basename(rel));
  }

  /**
   * Follows `rel` to what it finally names, symlinks resolved the contained
   * way: its real path and lstat, or undefined if anything on the way is missing.
   */
  resolve(rel: string): { real: string; st: fs.Stats } | undefined {
    let p = this.entry(rel, false);
    for (let i = 0; p !== undefined && i < MAX_LINKS; i++) {
      const st = this.lstat(p);
      if (st === undefined) return undefined;
      if (!st.isSymbolicLink()) return { real: p, st };
      const target = fs.readlinkSync(p);
      const base = path.posix.dirname(path.relative(this.root, p));
      p = this.entry(target.startsWith("/") ? target.slice(1) : path.posix.join(base, target), false);
    }
    return undefined;
  }

  /** Reads a file inside the tree, following symlinks the contained way; undefined if absent. */
  readFile(rel: string): string | undefined {
    const r = this.resolve(rel);
    return r?.st.isFile() ? fs.readFileSync(r.real, "utf8") : undefined;
  }
}

/** A tar entry name as a path relative to the layer root; refuses names that climb out of it. */
export function entryPath(name: string): string {
  const n = path.posix.normalize(name.replace(/^\/+/, ""));
  if (n === ".." || n.startsWith("../")) throw new ImageError("invalid", `entry "${name}" points outside the layer`);
  return n === "." ? "" : n.replace(/\/$/, "");
}
