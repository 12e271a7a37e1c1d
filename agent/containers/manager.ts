// The agent's containers, shared by every connection: a detached container
// outlives the connection that ran it. Lookup is by id, unique id prefix or
// name, as docker does.
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { asFractalError } from "../../oci/errors.js";
import { ImageStore, processArgs, type Image, type RunConfig } from "../../oci/store.js";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import { IMAGE_STORE } from "../../proto/guest.js";
import { log } from "../log.js";
import { runQuiet } from "../process/quiet.js";
import { MS_BIND, MS_RDONLY, MS_REMOUNT, mount } from "../../proto/libc.js";
import { Container, RUNTIME, type ContainerExit } from "./container.js";
import { LayerCache, type Progress } from "./layers.js";
import type { OutputSink } from "./output.js";
import type { LayerAddCommand, PreparedRoot, RunCommand } from "../commands.js";
import { ContainerStack, newLayerId, type LayerRecord } from "./live-layers.js";
import { SharedStacks } from "./stacks.js";
import { mergeEnv, runtimeConfig, type SpecInput } from "./spec.js";
import { checkCommand } from "./lookup.js";
import { overlayData } from "./overlay.js";
import { resolveUser } from "./users.js";

export const CONTAINERS_DIR = "/run/fractal/containers";
const NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/;

/** A run as the manager takes it: the decoded request without its streams, env as K=V. */
export type RunSpec = Omit<RunCommand, "stdio" | "progressStream" | "env"> & { env: string[] };

/** Runs the OCI runtime for a short command (kill, delete); resolves with its exit code and stderr. */
const runtime = (args: string[]) => runQuiet(RUNTIME, args);

export class ContainerManager {
  readonly store: ImageStore;
  readonly layers: LayerCache;
  /** Added images' merged layers, shared by the containers they are added to. */
  readonly stacks = new SharedStacks();
  private readonly containers = new Map<string, Container>();
  private readonly containerStacks = new Map<string, ContainerStack>();
  /** Auto-removed (--rm) containers, kept so a wait that arrives late still gets the status. */
  private readonly removed = new Map<string, Container>();

  constructor(storeDir = IMAGE_STORE) {
    this.store = new ImageStore(storeDir);
    this.layers = new LayerCache(this.store);
  }

  list(all: boolean): Container[] {
    return [...this.containers.values()].filter((c) => all || c.running);
  }

  find(ref: string): Container {
    if (ref === "") throw new FractalError(ErrorCode.INVALID_ARGUMENT, "no container given");
    const byName = [...this.containers.values()].find((c) => c.name === ref);
    if (byName) return byName;
    const byId = [...this.containers.values()].filter((c) => c.id.startsWith(ref));
    if (byId.length === 1) return byId[0]!;
    if (byId.length > 1) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `container id prefix ${ref} is ambiguous`);
    throw new FractalError(ErrorCode.CONTAINER_NOT_FOUND, `no such container: ${ref}`);
  }

  private checkNameFree(name: string): void {
    if ([...this.containers.values()].some((c) => c.name === name)) throw new FractalError(ErrorCode.ALREADY_EXISTS, `container name "${name}" is already in use`);
  }

  /** As find, but also sees containers --rm already removed. */
  findForWait(ref: string): Container {
    try {
      return this.find(ref);
    } catch (err) {
      const gone = this.removed.get(ref) ?? [...this.removed.values()].find((c) => c.name === ref || c.id.startsWith(ref));
      if (gone) return gone;
      throw err;
    }
  }

  resolveImage(ref: string): Image {
    try {
      return this.store.resolve(ref);
    } catch (err) {
      throw asFractalError(err);
    }
  }

  /** Makes an image's layers ready (unpacked in the cache, or shared from the store). */
  async prepare(ref: string | Image, progress?: Progress): Promise<string[]> {
    const img = typeof ref === "string" ? this.resolveImage(ref) : ref;
    try {
      return await this.layers.lowerDirs(img, progress);
    } catch (err) {
      throw asFractalError(err);
    }
  }

  /** Creates and starts a container; `sink` (if any) sees its output from the first byte. */
  /** `pace`: the client behind `sink` feeds the container's stdin, so it may hold the container back (see OutputLog). */
  async run(spec: RunSpec, sink?: OutputSink, progress?: Progress, pace = false): Promise<Container> {
    if (spec.name !== "" && !NAME.test(spec.name)) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `invalid container name "${spec.name}": use letters, digits, '_', '.' and '-'`);
    if (spec.name !== "") this.checkNameFree(spec.name);
    const img = spec.prepared ? undefined : this.resolveImage(spec.image);
    const args = img ? processArgs(img.config, spec.command, spec.entrypoint) : spec.command;
    if (args.length === 0) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `image ${spec.image} has no command: give one after the image name`);
    if (spec.prepared && spec.layers.length > 0) throw new FractalError(ErrorCode.INVALID_ARGUMENT, "--layer needs an image's layers, not a root prepared outside fractal");
    const imageLowers = img ? await this.prepare(img, progress) : [];
    // run --layer: over the root, its layers join the root overlay (later ones on top); at a path, a seam.
    const extra: { img: Image; at: string; lowers: string[] }[] = [];
    for (const l of spec.layers) {
      const limg = this.resolveImage(l.image);
      extra.push({ img: limg, at: l.at, lowers: await this.prepare(limg, progress) });
    }
    const lowers = [...extra.filter((e) => e.at === "/").reverse().flatMap((e) => e.lowers), ...imageLowers];
    const join = spec.prepared?.joinNamespaces ? this.find(spec.prepared.joinNamespaces) : undefined;
    if (join && !join.running) throw new FractalError(ErrorCode.NOT_RUNNING, `container ${join.name}, whose namespaces ${spec.name} should join, is not running`);
    const id = randomBytes(16).toString("hex");
    const name = spec.name || `c-${id.slice(0, 8)}`;
    // Again: the name could have been taken while layers were unpacking.
    this.checkNameFree(name);
    const bundle = path.join(CONTAINERS_DIR, id);
    // A prepared root brings its own upper layer.
    for (const d of spec.prepared ? ["rootfs"] : ["upper", "work", "rootfs"]) fs.mkdirSync(path.join(bundle, d), { recursive: true });
    const createdMs = Date.now();
    const c = new Container({ id, name, image: spec.image, args, env: [], cwd: "/", bundle, tty: spec.tty, interactive: spec.interactive, remove: spec.remove, createdMs, lowers: img ? lowers : undefined, binds: spec.binds });
    const stack = this.stackOf(c);
    let staged: { path: string; source: string; readonly: boolean }[] = [];
    const records = [imageRecord(spec.image, img, createdMs)];
    try {
      if (spec.prepared) mountPrepared(c.rootfs, spec.prepared.root);
      else mountRoot(bundle, lowers);
      for (const e of extra) {
        const rec: LayerRecord = { ...imageRecord(e.img.reference || e.img.digest, e.img, createdMs), id: newLayerId(), at: e.at, how: e.at === "/" ? "run" : "live" };
        if (rec.how === "live") rec.stack = this.stacks.acquire(rec.chainId, e.lowers, `${id}/${rec.id}`);
        records.push(rec);
      }
      staged = stack.start(records, c.rootfs);
      writeBundle(c, img?.config ?? {}, spec, join?.pid ?? 0, staged);
      this.containers.set(id, c);
      // From the first byte.
      if (sink) c.attach(sink, { pace, fromStart: true, follow: true });
      await c.start();
    } catch (err) {
      this.containers.delete(id);
      this.containerStacks.delete(id);
      stack.unstage(staged);
      for (const l of records) if (l.stack) this.stacks.release(l.chainId, `${id}/${l.id}`);
      c.output.close();
      c.cleanUp();
      throw err;
    }
    await c.started();
    stack.unstage(staged);
    this.removeWhenDone(c);
    return c;
  }

  private stackOf(c: Container): ContainerStack {
    let s = this.containerStacks.get(c.id);
    if (!s) {
      s = new ContainerStack(c, c.cgroup);
      this.containerStacks.set(c.id, s);
    }
    return s;
  }

  /** A container's stack of images, bottom first. */
  layerList(ref: string): LayerRecord[] {
    return this.stackOf(this.find(ref)).layers;
  }

  /** Stacks an image into a running container (fractal-host layer add). */
  async layerAdd(cmd: LayerAddCommand, progress?: Progress): Promise<LayerRecord> {
    const c = this.find(cmd.container);
    if (!c.running) throw new FractalError(ErrorCode.NOT_RUNNING, `container ${c.name} is not running`);
    const stack = this.stackOf(c);
    const img = this.resolveImage(cmd.image);
    const lowers = await this.prepare(img, progress);
    return stack.serial(async () => {
      const rec: LayerRecord = { ...imageRecord(cmd.image, img, Date.now()), id: newLayerId(), at: cmd.at, readonly: cmd.readonly, how: "live" };
      const user = `${c.id}/${rec.id}`;
      rec.stack = this.stacks.acquire(rec.chainId, lowers, user);
      try {
        await stack.add(rec);
      } catch (err) {
        this.stacks.release(rec.chainId, user);
        throw err;
      }
      return rec;
    });
  }

  /** Takes an added image out of a running container again (fractal-host layer rm). */
  async layerRemove(ref: string, layer: string): Promise<void> {
    const c = this.find(ref);
    const stack = this.stackOf(c);
    await stack.serial(async () => {
      const matches = stack.layers.filter((l) => l.id.startsWith(layer));
      if (matches.length === 0) throw new FractalError(ErrorCode.NOT_FOUND, `container ${c.name} has no layer ${layer} (see fractal-host layer ls ${c.name})`);
      if (matches.length > 1) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `layer id prefix ${layer} is ambiguous in ${c.name}`);
      const rec = matches[0]!;
      if (rec.how !== "live") throw new FractalError(ErrorCode.INVALID_ARGUMENT, `layer ${rec.id} (${rec.image}) is part of ${c.name}'s root ${rec.how === "image" ? "(its image)" : "(run --layer over /)"} and cannot be removed`);
      if (!c.running) throw new FractalError(ErrorCode.NOT_RUNNING, `container ${c.name} is not running`);
      await stack.remove(rec);
      this.stacks.release(rec.chainId, `${c.id}/${rec.id}`);
    });
  }

  private removeWhenDone(c: Container): void {
    if (!c.init.remove) return;
    void c.done.then(() => {
      this.removed.set(c.id, c);
      if (this.removed.size > 256) this.removed.delete(this.removed.keys().next().value!);
      this.forget(c);
    });
  }

  /**
   * Takes over the containers a previous agent left running (or finished
   * while no agent was there): an agent that was killed and restarted
   * lists, attaches to and stops them as if it had started them.
   */
  adoptAll(dir = CONTAINERS_DIR): number {
    let names: string[];
    try {
      names = fs.readdirSync(dir);
    } catch {
      return 0;
    }
    for (const n of names) {
      if (this.containers.has(n)) continue;
      const c = Container.adopt(path.join(dir, n));
      if (!c) continue;
      this.containers.set(c.id, c);
      for (const l of this.stackOf(c).layers) if (l.how === "live") this.stacks.hold(l.chainId, `${c.id}/${l.id}`);
      this.removeWhenDone(c);
      log("info", `found container ${c.name} (${c.id.slice(0, 12)}) ${c.exit ? "exited" : "left by a previous agent"}`);
    }
    return this.containers.size;
  }

  async kill(ref: string, signal: number): Promise<void> {
    const c = this.find(ref);
    if (!c.running) throw new FractalError(ErrorCode.NOT_RUNNING, `container ${c.name} is not running`);
    const r = await runtime(["kill", c.id, String(signal)]);
    // It may have exited on its own meanwhile; that is not an error.
    if (r.code !== 0 && c.running) throw new FractalError(ErrorCode.INTERNAL, `crun kill ${c.name}: ${r.err}`);
  }

  /** SIGTERM, then SIGKILL once the grace period is over. */
  async stop(ref: string, timeoutS: number): Promise<ContainerExit> {
    const c = this.find(ref);
    if (!c.running) return c.done;
    await this.kill(c.id, 15).catch(() => {});
    const timer = new Promise<"timeout">((r) => setTimeout(() => r("timeout"), timeoutS * 1000));
    if ((await Promise.race([c.done, timer])) === "timeout") await this.kill(c.id, 9).catch(() => {});
    return c.done;
  }

  async remove(ref: string, force: boolean): Promise<void> {
    const c = this.find(ref);
    if (c.running) {
      if (!force) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `container ${c.name} is running: stop it first or use rm -f`);
      await this.kill(c.id, 9).catch(() => {});
      await c.done;
    }
    this.forget(c);
  }

  private forget(c: Container): void {
    if (!this.containers.delete(c.id)) return;
    const live = this.stackOf(c).layers.filter((l) => l.how === "live");
    this.containerStacks.delete(c.id);
    void runtime(["delete", "-f", c.id]).finally(() => {
      c.cleanUp();
      for (const l of live) this.stacks.release(l.chainId, `${c.id}/${l.id}`);
    });
  }
}

/** An image's entry in a container's stack. */
function imageRecord(ref: string, img: Image | undefined, addedMs: number): LayerRecord {
  const layers = img?.layers ?? [];
  return { id: "image", image: ref, digest: img?.digest ?? "", diffIds: layers.map((l) => l.diffId), chainId: layers[layers.length - 1]?.chainId ?? "", at: "/", readonly: false, addedMs, how: "image" };
}

/** The container's root: the image's layers under an overlay whose upper layer is the container's own. */
function mountRoot(bundle: string, lowers: string[]): void {
  mount("overlay", path.join(bundle, "rootfs"), "overlay", 0, overlayData(lowers, `${bundle}/upper`, `${bundle}/work`));
}

/** A root someone else prepared: their overlay of guest directories, or one directory as it is. */
function mountPrepared(rootfs: string, root: PreparedRoot): void {
  try {
    if (root.kind === "directory") {
      mount(root.directory, rootfs, "", MS_BIND, "");
      if (root.readonly) mount("", rootfs, "", MS_BIND | MS_REMOUNT | MS_RDONLY, "");
      return;
    }
    const data = root.upper ? overlayData(root.lowers, root.upper, root.work) : overlayData(root.lowers);
    mount("overlay", rootfs, "overlay", 0, data);
  } catch (err) {
    const what = root.kind === "directory" ? root.directory : `lower ${root.lowers.join(":")}${root.upper ? `, upper ${root.upper}` : ""}`;
    throw new FractalError(ErrorCode.INVALID_ARGUMENT, `cannot mount the prepared root (${what}): ${(err as Error).message}`);
  }
}

/**
 * The process as the image and the request define it (user and groups from
 * the container's own files, environment, working directory, a command that
 * exists there), the files bound over its /etc, and the runtime's
 * config.json.
 */
function writeBundle(c: Container, image: RunConfig, spec: RunSpec, joinPid: number, layerMounts: { path: string; source: string; readonly: boolean }[]): void {
  const { bundle, id } = c.init;
  const rootfs = c.rootfs;
  const user = resolveUser(rootfs, spec.user || image.User || "");
  const env = mergeEnv(image.Env ?? [], spec.env, user.home);
  c.init.env.push(...env);
  const cwd = spec.cwd || image.WorkingDir || "/";
  c.init.cwd = cwd;
  checkCommand(rootfs, c.init.args[0]!, env, cwd); // run() refused an empty command
  const hostname = spec.prepared?.hostname || id.slice(0, 12);
  fs.writeFileSync(path.join(bundle, "hostname"), `${hostname}\n`);
  fs.writeFileSync(path.join(bundle, "hosts"), `127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t${hostname}\n`);
  fs.writeFileSync(path.join(bundle, "resolv.conf"), fs.existsSync("/etc/resolv.conf") ? fs.readFileSync("/etc/resolv.conf") : "");
  // The request's files replace the default ones at the same path.
  const binds: SpecInput["binds"] = [];
  spec.prepared?.files.forEach((f, i) => {
    const src = path.join(bundle, `file-${i}`);
    fs.writeFileSync(src, f.content);
    binds.push({ source: src, destination: f.path, readonly: false });
  });
  for (const b of spec.binds) binds.push(b);
  const layers = layerMounts.map((m) => ({ source: m.source, destination: m.path, readonly: m.readonly }));
  const cfg = runtimeConfig({ args: c.init.args, env, cwd, user, tty: spec.tty, hostname, rootfs, bundle, cgroupsPath: `/fractal/${id}/ctr`, limits: spec.limits, layerMounts: layers, binds, joinPid, joinTypes: spec.prepared?.joinTypes });
  fs.writeFileSync(path.join(bundle, "config.json"), JSON.stringify(cfg, null, 1));
}
