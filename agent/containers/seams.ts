// Where live layers meet a container's root: its "seams". overlayfs cannot
// change the layers of a mounted overlay, and a process's root stays the
// mount it was when the process started, so nothing mounted over the
// container's "/" would ever be seen by what already runs. Below the root
// it is different: a fresh overlay mounted over a directory is seen by the
// next lookup. So an image added at PATH is a fresh overlay at PATH, and an
// image added at "/" is one at each top-level directory it has (/usr, /bin,
// /opt...). Each seam stacks, topmost first, the added images' directories
// at that path, then the container's own layers there, with the
// container's writable layer at that path as its upper: the container's
// writes stay on top, and both the seam and the root write into the one
// upper tree. This file decides what each seam stacks; the container's own
// layers are read with overlayfs' rules (a whiteout or a non-directory
// hides what is below it, an opaque directory hides the layers below).
import fs from "node:fs";
import path from "node:path";

/** One image added to a container, as seams need it. */
export interface SeamLayer {
  /** Absolute path in the container. */
  at: string;
  /** The image's merged layers (a directory of the guest). */
  stack: string;
  readonly: boolean;
}

export interface SeamPlan {
  path: string;
  /** Topmost first: the added images' directories, then the container's own. */
  lowers: string[];
  readonly: boolean;
}

/** The container's root as its overlay stacks it. */
export interface OwnLayers {
  upper: string;
  /** Topmost first. */
  lowers: string[];
}

/** Top-level directories never stacked over: the runtime's own mounts live there. */
const NEVER = new Set(["dev", "proc", "sys"]);

/** Whether a layer's directory is opaque (overlayfs' trusted.overlay.opaque). */
export type IsOpaque = (dir: string) => boolean;

/**
 * The seam paths these layers need. `isDirInContainer` says whether a
 * top-level name is a real directory (or missing) in the container: an image
 * is never stacked over a container's symlink (as /bin -> usr/bin).
 */
export function seamPaths(layers: SeamLayer[], usableInContainer: (name: string) => boolean): string[] {
  const out = new Set<string>();
  for (const l of layers) {
    if (l.at !== "/") {
      out.add(l.at);
      continue;
    }
    for (const name of fs.readdirSync(l.stack).sort()) {
      if (NEVER.has(name) || !realDir(path.join(l.stack, name)) || !usableInContainer(name)) continue;
      out.add(`/${name}`);
    }
  }
  return byDepth([...out]);
}

/** What the seam at `at` stacks. `layers` newest first. */
export function planSeam(at: string, layers: SeamLayer[], own: OwnLayers, isOpaque: IsOpaque): SeamPlan {
  const lowers: string[] = [];
  let readonly = false;
  for (const l of layers) {
    if (at !== l.at && !isUnder(at, l.at)) continue;
    const dir = dirAt(l.stack, path.relative(l.at, at));
    if (!dir) continue;
    lowers.push(dir);
    readonly ||= l.readonly;
  }
  return { path: at, lowers: [...lowers, ...ownLowers(at, own, isOpaque)], readonly };
}

/**
 * The container's own lower directories at `at`, as its root overlay
 * shows them: walking down from the top (the upper first), a whiteout or a
 * non-directory on the way hides every layer below, and so does an opaque
 * directory, which itself still counts.
 */
export function ownLowers(at: string, own: OwnLayers, isOpaque: IsOpaque): string[] {
  const parts = at.split("/").filter(Boolean);
  const out: string[] = [];
  for (const [i, layer] of [own.upper, ...own.lowers].entries()) {
    let p = layer;
    let has = true;
    let hides = false;
    for (const part of parts) {
      p = path.join(p, part);
      const st = fs.lstatSync(p, { throwIfNoEntry: false });
      if (!st) {
        has = false;
        break;
      }
      if (!st.isDirectory()) {
        has = false;
        hides = true;
        break;
      }
      if (isOpaque(p)) hides = true;
    }
    if (has && i > 0) out.push(p);
    if (hides) break;
  }
  return out;
}

/** `root/rel` if every component of it is a real directory (no symlink may lead out of the image). */
function dirAt(root: string, rel: string): string | undefined {
  let p = root;
  for (const part of rel.split("/").filter(Boolean)) {
    p = path.join(p, part);
    if (!realDir(p)) return undefined;
  }
  return p;
}

function realDir(p: string): boolean {
  return fs.lstatSync(p, { throwIfNoEntry: false })?.isDirectory() ?? false;
}

export function isUnder(p: string, dir: string): boolean {
  return dir === "/" ? p !== "/" : p.startsWith(`${dir}/`);
}

export function byDepth(ps: string[]): string[] {
  return [...ps].sort((a, b) => a.split("/").length - b.split("/").length || a.localeCompare(b));
}
