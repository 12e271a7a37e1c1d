// Volumes for run -v, as docker has them. A host directory reaches a
// container through the 9p shares the VM was booted with: the host path is
// found in a share and named by where the guest mounts it (a path in no
// share is refused, naming the shares: QEMU cannot add a 9p device to a
// running machine through QMP). A named volume is a directory in the VM's
// state directory, which every boot shares with the guest; it outlives the
// containers that use it and the VM's reboots.
import fs from "node:fs";
import path from "node:path";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import { GUEST_VOLUMES } from "./qemu.js";
import { listNames, readRecord, stateRoot, tpmDir, VOLUMES, volumesDir, type VmRecord } from "./state.js";

export type VolumeSpec =
  | { kind: "host"; hostPath: string; destination: string; readonly: boolean }
  | { kind: "named"; name: string; destination: string; readonly: boolean };

export interface GuestBind {
  source: string;
  destination: string;
  readonly: boolean;
}

const NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/;

const bad = (why: string) => new FractalError(ErrorCode.INVALID_ARGUMENT, why);

/** -v SRC:DST[:ro|rw]: SRC a host path (absolute, or ./ ../ relative) or a volume name. */
export function parseVolume(spec: string): VolumeSpec {
  const parts = spec.split(":");
  const mode = parts.length === 3 ? parts[2] : "rw";
  const [src, dst] = parts;
  if (parts.length < 2 || parts.length > 3 || !src || !dst || (mode !== "ro" && mode !== "rw")) throw bad(`-v ${spec}: expected HOSTPATH:CONTAINERPATH[:ro] or NAME:CONTAINERPATH[:ro]`);
  if (!dst.startsWith("/") || dst.split("/").includes("..")) throw bad(`-v ${spec}: the container path must be absolute, without ".."`);
  const readonly = mode === "ro";
  if (src.startsWith("/") || src.startsWith("./") || src.startsWith("../") || src === "." || src === "..") return { kind: "host", hostPath: path.resolve(src), destination: dst, readonly };
  checkName(src);
  return { kind: "named", name: src, destination: dst, readonly };
}

function checkName(name: string): void {
  if (!NAME.test(name)) throw bad(`bad volume name "${name}": use letters, digits, '_', '.' and '-' (a host path starts with / or ./)`);
}

/** The guest binds for these volumes in VM `vm`; named volumes are made when missing. */
export function guestBinds(vm: VmRecord, specs: VolumeSpec[]): GuestBind[] {
  return specs.map((v) => {
    if (v.kind === "named") {
      fs.mkdirSync(path.join(volumesDir(vm.name), v.name), { recursive: true });
      return { source: guestVolumePath(v.name), destination: v.destination, readonly: v.readonly };
    }
    const { guestPath, readonly } = inShare(vm, v.hostPath);
    return { source: guestPath, destination: v.destination, readonly: v.readonly || readonly };
  });
}

/** Where the guest sees host path `p`: through the share with the longest matching host directory. */
export function inShare(vm: VmRecord, p: string): { guestPath: string; readonly: boolean } {
  let real: string;
  try {
    real = fs.realpathSync(p);
  } catch {
    throw new FractalError(ErrorCode.NOT_FOUND, `-v ${p}: no such file or directory on the host`);
  }
  const shares = (vm.mounts ?? []).filter((m) => m.guestPath !== GUEST_VOLUMES);
  let best: { guestPath: string; readonly: boolean; len: number } | undefined;
  for (const m of shares) {
    const dir = realQuiet(m.hostDir);
    if (real !== dir && !real.startsWith(dir === "/" ? "/" : `${dir}/`)) continue;
    if (best && best.len >= dir.length) continue;
    best = { guestPath: path.posix.join(m.guestPath, path.relative(dir, real)), readonly: m.readonly, len: dir.length };
  }
  if (!best) {
    const list = shares.map((m) => `${m.hostDir}${m.guestPath !== m.hostDir ? ` at ${m.guestPath}` : ""}${m.readonly ? " (ro)" : ""}`).join(", ") || "none";
    throw bad(`-v ${p}: VM ${vm.name} does not share that host directory (its shares: ${list}); boot it with --share ${real}:TAG or --host-root-rw`);
  }
  return { guestPath: best.guestPath, readonly: best.readonly };
}

function realQuiet(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return p;
  }
}

export interface VolumeInfo {
  vm: string;
  name: string;
  hostPath: string;
  createdMs: number;
}

/** Named volumes of VM `vm`, or of every VM (powered off ones too: their volumes stay). */
export function listVolumes(vm?: string): VolumeInfo[] {
  const vms = vm ? [vm] : allVmDirs();
  return vms.flatMap((name) => {
    const dir = volumesDir(name);
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return [];
    }
    return entries.filter((e) => e.isDirectory()).map((e) => {
      const hostPath = path.join(dir, e.name);
      const st = fs.statSync(hostPath);
      return { vm: name, name: e.name, hostPath, createdMs: st.birthtimeMs || st.mtimeMs };
    });
  });
}

/** VM directories, with or without a running VM. */
function allVmDirs(): string[] {
  try {
    return fs.readdirSync(stateRoot(), { withFileTypes: true }).filter((e) => e.isDirectory() && fs.existsSync(path.join(stateRoot(), e.name, VOLUMES))).map((e) => e.name).sort();
  } catch {
    return listNames();
  }
}

/** The one VM holding volume `name` (or VM `vm`'s, if given): a clear error when none or several do. */
export function findVolume(name: string, vm?: string): VolumeInfo {
  checkName(name);
  const found = listVolumes(vm).filter((v) => v.name === name);
  if (found.length === 0) throw new FractalError(ErrorCode.NOT_FOUND, `no volume named ${name}${vm ? ` in VM ${vm}` : ""} (see fractal-host volume ls)`);
  if (found.length > 1) throw bad(`volume ${name} exists in VMs ${found.map((v) => v.vm).join(", ")}: give --vm`);
  return found[0]!;
}

/** Creates volume `name` of VM `vm` (the VM need not be running). */
export function createVolume(vm: string, name: string): VolumeInfo {
  checkName(name);
  const dir = path.join(volumesDir(vm), name);
  fs.mkdirSync(dir, { recursive: true });
  return { vm, name, hostPath: dir, createdMs: Date.now() };
}

export function removeVolume(v: VolumeInfo): void {
  fs.rmSync(v.hostPath, { recursive: true, force: true });
  // A VM that is gone and has no volume (nor TPM) left leaves nothing behind.
  const dir = volumesDir(v.vm);
  if (fs.readdirSync(dir).length === 0 && !readRecord(v.vm)) {
    if (fs.existsSync(tpmDir(v.vm))) fs.rmdirSync(dir);
    else fs.rmSync(path.dirname(dir), { recursive: true, force: true });
  }
}

/** The guest path of a named volume, as container mounts name it. */
export function guestVolumePath(name: string): string {
  return `${GUEST_VOLUMES}/${name}`;
}
