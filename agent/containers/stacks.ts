// An added image's layers merged once for the whole guest: a read-only
// overlay per image, named by its top layer's ChainID (which digests the
// whole stack), mounted on first use and shared by every container the
// image is added to, as image layers themselves are. A one-layer image
// needs no merging: its layer directory is the stack. The count of users
// comes from the containers' own records, so an agent that restarts finds
// the same stacks in use.
import fs from "node:fs";
import path from "node:path";
import { hex } from "../../oci/digest.js";
import { MNT_DETACH, MS_RDONLY, mount, umount2 } from "../../proto/libc.js";
import { overlayData } from "./overlay.js";

export const STACK_DIR = "/run/fractal/stacks";

export class SharedStacks {
  private readonly users = new Map<string, Set<string>>();

  constructor(readonly dir = STACK_DIR) {}

  /** Where `chainId`'s layers (topmost first) appear merged, mounted now if no container had them yet; `user` holds it until release. */
  acquire(chainId: string, lowers: string[], user: string): string {
    if (lowers.length === 1) return lowers[0]!;
    const where = this.path(chainId);
    if (!isMountPoint(where)) {
      fs.mkdirSync(where, { recursive: true });
      mount("overlay", where, "overlay", MS_RDONLY, overlayData(lowers));
    }
    this.hold(chainId, user);
    return where;
  }

  /** Records a user of a stack found in a container's record (an agent restarted). */
  hold(chainId: string, user: string): void {
    const set = this.users.get(chainId) ?? new Set<string>();
    set.add(user);
    this.users.set(chainId, set);
  }

  /** Drops `user`'s hold; the last user's release unmounts the stack (lazily: a container's open files keep it). */
  release(chainId: string, user: string): void {
    const set = this.users.get(chainId);
    if (!set?.delete(user) || set.size > 0) return;
    this.users.delete(chainId);
    const where = this.path(chainId);
    if (!isMountPoint(where)) return;
    umount2(where, MNT_DETACH);
    fs.rmdirSync(where);
  }

  path(chainId: string): string {
    return path.join(this.dir, hex(chainId));
  }
}

/** A directory another file system is mounted on (its device differs from its parent's). */
export function isMountPoint(dir: string): boolean {
  const st = fs.statSync(dir, { throwIfNoEntry: false });
  const up = fs.statSync(path.dirname(dir), { throwIfNoEntry: false });
  return st !== undefined && up !== undefined && st.dev !== up.dev;
}
