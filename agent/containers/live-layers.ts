// One container's stack of images and the seams (./seams.ts) that put the
// added ones in place. The record lives in the bundle (layers.json), so an
// agent that restarts knows what it stacked. Every change mounts the seams
// it needs fresh in the guest, then the helper (fractal-ns -graft) swaps
// them into the container's mount namespace while its cgroup is frozen:
// a seam, once there, is only ever replaced by a fresh one (the root
// overlay's own view of a path below a seam goes stale the moment the
// container writes through the seam).
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import { NS_HELPER } from "../../proto/guest.js";
import { lgetxattr, MNT_DETACH, MS_RDONLY, mount, umount2 } from "../../proto/libc.js";
import { runQuiet } from "../process/quiet.js";
import type { Container } from "./container.js";
import { overlayData } from "./overlay.js";
import { byDepth, isUnder, planSeam, seamPaths, type OwnLayers, type SeamLayer, type SeamPlan } from "./seams.js";

/** One image in a container's stack. */
export interface LayerRecord {
  id: string;
  image: string;
  digest: string;
  diffIds: string[];
  chainId: string;
  at: string;
  readonly: boolean;
  addedMs: number;
  /** "image": the container's own; "run": run --layer over its root (part of it for good); "live": on a seam. */
  how: "image" | "run" | "live";
  /** For "live": the guest directory with the image's merged layers. */
  stack?: string;
}

interface MountedSeam extends SeamPlan {
  work: string;
}

interface StackRecord {
  layers: LayerRecord[];
  seams: Record<string, MountedSeam>;
  /** Mount points made for a seam (the container had no such directory): removed again once nothing is there. */
  created: string[];
  generation: number;
}

const RECORD = "layers.json";

/** Runs the namespace helper; rejects with its complaint. */
async function helper(args: string[]): Promise<void> {
  const r = await runQuiet(NS_HELPER, args);
  if (r.code !== 0) throw new FractalError(ErrorCode.INVALID_ARGUMENT, r.err.replace(/^fractal-ns: /, "") || `fractal-ns exited with ${r.code}`);
}

export class ContainerStack {
  private record: StackRecord;
  /** One change at a time per container. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly c: Container,
    private readonly cgroup: string,
  ) {
    this.record = readRecord(path.join(c.init.bundle, RECORD)) ?? { layers: [], seams: {}, created: [], generation: 0 };
  }

  get layers(): LayerRecord[] {
    return this.record.layers;
  }

  /** The container's own root, as its overlay stacks it (undefined: a prepared root, which cannot take live layers). */
  private get own(): OwnLayers | undefined {
    const lowers = this.c.init.lowers;
    return lowers ? { upper: path.join(this.c.init.bundle, "upper"), lowers } : undefined;
  }

  /** Runs `f` after every earlier change of this container has finished. */
  serial<T>(f: () => Promise<T>): Promise<T> {
    const next = this.queue.then(f, f);
    this.queue = next.catch(() => {});
    return next;
  }

  /** Puts `layer` (its stack mounted) into the running container. */
  async add(layer: LayerRecord): Promise<void> {
    await this.change([layer, ...this.live()], [layer]);
  }

  /** Takes `layer` out; the caller releases its stack. */
  async remove(layer: LayerRecord): Promise<void> {
    await this.change(this.live().filter((l) => l.id !== layer.id), []);
  }

  private live(): LayerRecord[] {
    return this.record.layers.filter((l) => l.how === "live").reverse();
  }

  /** `live`: newest first. */
  private async change(live: LayerRecord[], added: LayerRecord[]): Promise<void> {
    const own = this.own;
    if (!own) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `container ${this.c.name} runs on a root prepared outside fractal (containerd's): images cannot be stacked into it`);
    const pid = this.c.pid;
    if (!this.c.running || pid <= 0) throw new FractalError(ErrorCode.NOT_RUNNING, `container ${this.c.name} is not running`);
    const root = `/proc/${pid}/root`;
    const layers = live.map(seamLayer);
    const current = this.record.seams;
    // A seam stays a seam: see the top of this file.
    const paths = byDepth([...new Set([...seamPaths(layers, (name) => usableTopLevel(root, name)), ...Object.keys(current)])]);
    const fresh = paths.filter((p) => !current[p]);
    const created = fresh.filter((p) => !fs.existsSync(path.join(root, p)));
    if (fresh.length > 0) await helper(["-dirs", String(pid), "--", ...fresh.map((p) => `make:${p}`)]);
    const record = { ...this.record, created: [...this.record.created, ...created] };
    const plans = paths.map((p) => planSeam(p, layers, own, isOpaque));
    const changed = new Set(plans.filter((pl) => !current[pl.path] || !samePlan(current[pl.path]!, pl)).map((pl) => pl.path));
    // Detaching a seam takes the seams below it along: they are mounted again.
    for (const p of paths) if ([...changed].some((q) => isUnder(p, q))) changed.add(p);
    // A directory made only for added images goes again once none is there and the container left nothing in it.
    const gone = new Set(plans.filter((pl) => record.created.includes(pl.path) && pl.lowers.length === 0 && isEmpty(path.join(own.upper, pl.path)) && !paths.some((q) => isUnder(q, pl.path))).map((pl) => pl.path));
    const generation = record.generation + 1;
    const staged: { path: string; mnt: string; seam: MountedSeam }[] = [];
    try {
      for (const pl of plans) {
        if (!changed.has(pl.path) || gone.has(pl.path)) continue;
        const dir = path.join(this.c.init.bundle, "seams", `${generation}-${staged.length}`);
        const seam = { ...pl, work: path.join(dir, "work") };
        staged.push({ path: pl.path, mnt: path.join(dir, "mnt"), seam });
        this.mountSeam(staged[staged.length - 1]!.mnt, seam, own);
      }
      const ops = [...[...changed].filter((p) => current[p]).map((p) => `detach:${p}`), ...staged.map((s) => `${s.path}=${s.mnt}`)];
      if (ops.length > 0) await helper(["-graft", String(pid), "-freeze", this.cgroup, "--", ...ops]);
    } finally {
      for (const s of staged) {
        try {
          umount2(s.mnt, MNT_DETACH);
        } catch {
          // never mounted
        }
      }
    }
    const seams: Record<string, MountedSeam> = {};
    for (const p of paths) if (!gone.has(p)) seams[p] = staged.find((s) => s.path === p)?.seam ?? current[p]!;
    if (gone.size > 0) await helper(["-dirs", String(pid), "--", ...[...gone].reverse().map((p) => `remove:${p}`)]).catch(() => {});
    const ids = new Set(live.map((l) => l.id));
    this.record = {
      layers: [...this.record.layers.filter((l) => l.how !== "live" || ids.has(l.id)), ...added],
      seams,
      created: record.created.filter((p) => !gone.has(p)),
      generation,
    };
    this.save();
  }

  /** A fresh overlay for one seam, in the guest, for the helper to clone into the container. */
  private mountSeam(mnt: string, seam: MountedSeam, own: OwnLayers): void {
    fs.mkdirSync(mnt, { recursive: true });
    fs.mkdirSync(seam.work, { recursive: true });
    // overlayfs needs a lower layer: a seam over a directory only the container wrote to gets an empty one.
    const lowers = seam.lowers.length > 0 ? seam.lowers : [emptyDir(path.dirname(path.dirname(mnt)))];
    // index=off: the container's upper tree is shared by its root and its
    // seams (each path written through exactly one of them at a time);
    // redirect_dir=off: a renamed directory's redirect names a path from
    // the overlay's own root, which would mean another place to the root.
    const data = `${overlayData(lowers, path.join(own.upper, seam.path), seam.work)},index=off,redirect_dir=off`;
    try {
      mount("overlay", mnt, "overlay", seam.readonly ? MS_RDONLY : 0, data);
    } catch (err) {
      throw new FractalError(ErrorCode.INTERNAL, `stack images at ${seam.path} in ${this.c.name}: ${(err as Error).message}`);
    }
  }

  /**
   * Records the layers a container starts with (its image, run --layer)
   * and mounts the seams of those at a path (run --layer IMAGE:PATH) for
   * crun to bind in: what the guest must bind where.
   */
  start(records: LayerRecord[], rootfs: string): { path: string; source: string; readonly: boolean }[] {
    const own = this.own!;
    const layers = records.filter((l) => l.how === "live").reverse().map(seamLayer);
    const paths = seamPaths(layers, (name) => usableTopLevel(rootfs, name));
    const created: string[] = [];
    for (const p of paths) if (makeDirIn(rootfs, p)) created.push(p);
    const seams: Record<string, MountedSeam> = {};
    const mounts = paths.map((p, i) => {
      const pl = planSeam(p, layers, own, isOpaque);
      const dir = path.join(this.c.init.bundle, "seams", `1-${i}`);
      const seam = { ...pl, work: path.join(dir, "work") };
      seams[p] = seam;
      this.mountSeam(path.join(dir, "mnt"), seam, own);
      return { path: p, source: path.join(dir, "mnt"), readonly: seam.readonly };
    });
    this.record = { layers: records, seams, created, generation: 1 };
    this.save();
    return mounts;
  }

  /** After crun bound them: the guest's own mounts of the seams are not needed. */
  unstage(mounts: { source: string }[]): void {
    for (const m of mounts) {
      try {
        umount2(m.source, MNT_DETACH);
      } catch {
        // already gone
      }
    }
  }

  private save(): void {
    const file = path.join(this.c.init.bundle, RECORD);
    fs.writeFileSync(`${file}.tmp`, JSON.stringify(this.record));
    fs.renameSync(`${file}.tmp`, file);
  }
}

/** The layer cache marks opaque directories with overlayfs' own xattr. */
function isOpaque(dir: string): boolean {
  const v = lgetxattr(dir, "trusted.overlay.opaque");
  return v !== undefined && v.length === 1 && v[0] === 0x79; // "y"
}

export function newLayerId(): string {
  return randomBytes(6).toString("hex");
}

function seamLayer(l: LayerRecord): SeamLayer {
  return { at: l.at, stack: l.stack!, readonly: l.readonly };
}

function samePlan(a: SeamPlan, b: SeamPlan): boolean {
  return a.readonly === b.readonly && a.lowers.length === b.lowers.length && a.lowers.every((l, i) => l === b.lowers[i]);
}

/** A top-level name an image may be stacked at: a real directory of the container, or nothing yet. */
function usableTopLevel(root: string, name: string): boolean {
  const st = fs.lstatSync(path.join(root, name), { throwIfNoEntry: false });
  return !st || st.isDirectory();
}

/**
 * Makes `p` a directory of a root that is not running yet (through its
 * overlay, so lower directories are copied up); true if it had to be made.
 */
function makeDirIn(rootfs: string, p: string): boolean {
  let cur = rootfs;
  let made = false;
  for (const part of p.split("/").filter(Boolean)) {
    cur = path.join(cur, part);
    const st = fs.lstatSync(cur, { throwIfNoEntry: false });
    if (!st) {
      fs.mkdirSync(cur, { mode: 0o755 });
      made = true;
    } else if (!st.isDirectory()) {
      throw new FractalError(ErrorCode.INVALID_ARGUMENT, `${path.relative(rootfs, cur) ? `/${path.relative(rootfs, cur)}` : "/"} is ${st.isSymbolicLink() ? "a symlink" : "not a directory"} in the image: give a path of real directories`);
    }
  }
  // A chmod to its own mode copies a lower directory up.
  const st = fs.statSync(cur);
  fs.chmodSync(cur, st.mode & 0o7777);
  return made;
}

function emptyDir(under: string): string {
  const d = path.join(under, "empty");
  fs.mkdirSync(d, { recursive: true });
  return d;
}

function isEmpty(dir: string): boolean {
  try {
    return fs.readdirSync(dir).length === 0;
  } catch {
    return true;
  }
}

function readRecord(file: string): StackRecord | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8")) as StackRecord;
  } catch {
    return undefined;
  }
}
