// containerd's view of a container (the bundle's OCI config.json and the
// rootfs mounts its snapshotter prepared) turned into what the agent runs.
// Paths stay the same: the snapshotter directory is shared into the VM at
// its host path. What cannot reach the VM is an error naming it, not a
// silently different container.
import fs from "node:fs";
import path from "node:path";
import type { PreparedRunOptions, RunOptions } from "../../client.js";
import type { containerd } from "../gen/containerd.js";
import { Code, TtrpcError } from "../ttrpc.js";
import { CONTAINER_TYPE, SANDBOX_ID } from "./group.js";

/** The parts of an OCI runtime spec the shim reads. */
export interface OciProcess {
  terminal?: boolean;
  consoleSize?: { height: number; width: number };
  user?: { uid?: number; gid?: number; additionalGids?: number[] };
  args?: string[];
  env?: string[];
  cwd?: string;
}

export interface OciSpec {
  process?: OciProcess;
  hostname?: string;
  mounts?: { destination: string; type?: string; source?: string; options?: string[] }[];
  annotations?: Record<string, string>;
  linux?: {
    namespaces?: { type: string; path?: string }[];
    resources?: {
      memory?: { limit?: number };
      cpu?: { quota?: number; period?: number };
      pids?: { limit?: number };
    };
  };
}

const MAX_FILE = 1 << 20;
const bad = (msg: string) => new TtrpcError(Code.INVALID_ARGUMENT, msg);

/** K=V lines (an OCI process's or an image config's env) as a map; later names win. */
export function envMap(lines: string[] | null | undefined): Record<string, string> {
  const env: Record<string, string> = {};
  for (const kv of lines ?? []) {
    const eq = kv.indexOf("=");
    if (eq > 0) env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return env;
}

/** A process of an OCI spec (a task's, or an exec's) as the agent takes one. */
export function ociProcess(p: OciProcess): { args: string[]; env: Record<string, string>; cwd: string; user: string; tty?: { cols: number; rows: number; term?: string } } {
  const env = envMap(p.env);
  return {
    args: p.args ?? [],
    env,
    cwd: p.cwd || "/",
    user: `${p.user?.uid ?? 0}:${p.user?.gid ?? 0}`,
    tty: p.terminal ? { cols: p.consoleSize?.width || 80, rows: p.consoleSize?.height || 24, term: env.TERM } : undefined,
  };
}

const isBind = (m: { type?: string | null; options?: string[] | null }) => m.type === "bind" || (m.options ?? []).some((o) => o === "bind" || o === "rbind");

export function readSpec(bundle: string): OciSpec {
  const file = path.join(bundle, "config.json");
  try {
    return JSON.parse(fs.readFileSync(file, "utf8")) as OciSpec;
  } catch (err) {
    throw bad(`cannot read the OCI spec ${file}: ${(err as Error).message}`);
  }
}

/** The directory holding every snapshot a mount names: the overlayfs snapshotter's root (…/snapshots/N/fs → its parent of snapshots/). */
export function snapshotterRoot(paths: string[]): string {
  const roots = new Set<string>();
  for (const p of paths) {
    const m = p.match(/^(.*)\/snapshots\/\d+\/(fs|work)$/);
    roots.add(m ? m[1]! : path.dirname(p));
  }
  if (roots.size !== 1) throw bad(`the rootfs mounts span several directories (${[...roots].join(", ")}); one snapshotter's are expected`);
  return [...roots][0]!;
}

export interface PreparedRoot {
  root: PreparedRunOptions["root"];
  shareRoot: string;
}

/** containerd's rootfs mounts (one overlay, or one bind for a snapshot without parents) as the agent's prepared root. */
export function preparedRoot(mounts: containerd.types.IMount[]): PreparedRoot {
  if (mounts.length !== 1) throw bad(`expected one rootfs mount from the snapshotter, got ${mounts.length} (use the overlayfs snapshotter)`);
  const m = mounts[0]!;
  const opts = m.options ?? [];
  if (m.type === "overlay") {
    const get = (k: string) => opts.find((o) => o.startsWith(`${k}=`))?.slice(k.length + 1) ?? "";
    const lowers = get("lowerdir").split(":").filter((d) => d !== "");
    const upper = get("upperdir");
    const work = get("workdir");
    if (lowers.length === 0) throw bad(`overlay rootfs mount without lowerdir: ${opts.join(",")}`);
    return { root: { lowers, upper, work }, shareRoot: snapshotterRoot([...lowers, ...(upper ? [upper, work] : [])]) };
  }
  if (isBind(m)) {
    const dir = m.source ?? "";
    if (!dir.startsWith("/")) throw bad(`bind rootfs mount without an absolute source: "${dir}"`);
    return { root: { directory: dir, readonly: opts.includes("ro") }, shareRoot: snapshotterRoot([dir]) };
  }
  throw bad(`rootfs mount of type "${m.type}" is not supported (use the overlayfs snapshotter)`);
}

/** The agent's run options for a task: its process, limits, files and binds, in the VM whose share is `shareRoot`. */
export function runOptions(id: string, spec: OciSpec, root: PreparedRoot, stdin: boolean, log: (m: string) => void): RunOptions {
  const p = spec.process;
  if (!p?.args?.length) throw bad(`container ${id}: the OCI spec has no process args`);
  const files: PreparedRunOptions["files"] = [];
  const binds: PreparedRunOptions["binds"] = [];
  for (const m of spec.mounts ?? []) {
    if (!isBind(m)) continue; // proc, sysfs, devpts, tmpfs...: the agent mounts the standard set itself
    if (m.destination === "/dev/shm") continue; // the guest's container gets its own shm
    const src = m.source ?? "";
    const ro = (m.options ?? []).includes("ro");
    let st: fs.Stats;
    try {
      st = fs.statSync(src);
    } catch (err) {
      throw bad(`container ${id}: mount ${src} at ${m.destination}: ${(err as Error).message}`);
    }
    if (st.isFile()) {
      if (st.size > MAX_FILE) throw bad(`container ${id}: file ${src} bound at ${m.destination} is larger than 1 MiB; only small files are copied into the VM`);
      files.push({ path: m.destination, content: fs.readFileSync(src) });
    } else if (src === root.shareRoot || src.startsWith(`${root.shareRoot}/`)) {
      binds.push({ source: src, destination: m.destination, readonly: ro });
    } else {
      throw new TtrpcError(Code.FAILED_PRECONDITION, `container ${id}: host directory ${src} (mounted at ${m.destination}) is not shared with the VM; only ${root.shareRoot} is`);
    }
  }
  const res = spec.linux?.resources;
  const cpus = res?.cpu?.quota && res.cpu.quota > 0 && res.cpu.period ? res.cpu.quota / res.cpu.period : 0;
  const { env, cwd, user, tty } = ociProcess(p);
  const gid = p.user?.gid ?? 0;
  const sandbox = spec.annotations?.[SANDBOX_ID];
  const inPod = sandbox !== undefined && spec.annotations?.[CONTAINER_TYPE] === "container" && sandbox !== id;
  if ((p.user?.additionalGids ?? []).some((g) => g !== gid)) log(`container ${id}: additional groups are not passed on yet`);
  // The namespaces CRI shares with the sandbox name its (host) pid; in the guest they are the sandbox container's.
  const joinTypes = (spec.linux?.namespaces ?? []).filter((n) => n.path && (n.type === "pid" || n.type === "ipc" || n.type === "uts")).map((n) => n.type as "pid" | "ipc" | "uts");
  return {
    image: spec.annotations?.["io.kubernetes.cri.image-name"] ?? "containerd",
    name: id,
    command: p.args,
    env,
    cwd,
    user,
    tty,
    interactive: stdin,
    memoryBytes: res?.memory?.limit && res.memory.limit > 0 ? res.memory.limit : 0,
    cpus,
    pids: res?.pids?.limit && res.pids.limit > 0 ? res.pids.limit : 0,
    prepared: {
      root: root.root,
      hostname: spec.hostname ?? "",
      files,
      binds,
      joinNamespaces: inPod && joinTypes.length > 0 ? sandbox : undefined,
      joinTypes: inPod ? joinTypes : undefined,
    },
  };
}
