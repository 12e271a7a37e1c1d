// Which VM a container goes to, and where that VM's shim listens. containerd
// starts `shim start` for every container; like runc's shim, ours answers
// with the address of an existing shim when the container belongs to a
// group that already has one: the containers of a CRI pod (grouped by the
// sandbox id containerd's CRI plugin annotates), or else those of one
// containerd namespace (or each container alone, by the shim's options).
// One shim per group, one VM per shim.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { ShimOptions } from "./options.js";

export const SANDBOX_ID = "io.kubernetes.cri.sandbox-id";
export const CONTAINER_TYPE = "io.kubernetes.cri.container-type";

/** What the start command leaves in each bundle, for the delete command (which runs when the shim is gone). */
export interface GroupRecord {
  key: string;
  socket: string;
  vmName: string;
  stateDir: string;
}

export const RECORD_FILE = "fractal-shim.json";

export interface OciSpecLike {
  annotations?: Record<string, string>;
}

export function groupKey(namespace: string, id: string, spec: OciSpecLike, o: ShimOptions): string {
  const sandbox = spec.annotations?.[SANDBOX_ID];
  if (sandbox) return `pod-${sandbox}`;
  return o.grouping === "container" ? `ctr-${namespace}-${id}` : `ns-${namespace}`;
}

/**
 * The group's socket: beside containerd's own (in its `s/` directory, as
 * runc's shim uses /run/containerd/s), named by a hash of containerd's
 * address and the group, so two containerds never share a shim.
 */
export function groupRecord(address: string, key: string, o: ShimOptions): GroupRecord {
  const hash = createHash("sha256").update(`${address}\0${key}`).digest("hex");
  const base = path.dirname(address.replace(/^unix:\/\//, ""));
  return {
    key,
    socket: path.join(base, "s", `fractal-${hash.slice(0, 24)}.sock`),
    vmName: `ctrd-${hash.slice(0, 12)}`,
    stateDir: o.stateDir || path.join(base, "fractal-vms"),
  };
}

export function writeGroupRecord(bundle: string, rec: GroupRecord): void {
  fs.writeFileSync(path.join(bundle, RECORD_FILE), JSON.stringify(rec) + "\n");
}

export function readGroupRecord(bundle: string): GroupRecord | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(bundle, RECORD_FILE), "utf8")) as GroupRecord;
  } catch {
    return undefined;
  }
}
