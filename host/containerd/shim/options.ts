// The shim's settings: a JSON file named by containerd's runtime options
// (CRI's `options = { ConfigPath = "..." }`, the runtimeoptions.v1.Options
// containerd hands the shim on start's stdin and in Create), else by
// $FRACTAL_SHIM_CONFIG, else /etc/fractal/containerd-shim.json; missing
// keys take the defaults below. A bad file is an error naming the file and
// the key, never a silent default.
import fs from "node:fs";
import path from "node:path";
import { google, runtimeoptions } from "../gen/containerd.js";
import { Code, TtrpcError } from "../ttrpc.js";
import { preferAgentImage, preferUnpacked } from "../../vm/kernel.js";

/** How containers that are not in a CRI pod share VMs: one VM per containerd namespace, or one each. */
export type Grouping = "namespace" | "container";

export interface ShimOptions {
  grouping: Grouping;
  memMiB: number;
  cpus: number;
  kernel: string;
  initrd: string;
  /** The agent's disk when `initrd` lacks the agent: the build's, unless the config names an initrd. */
  agentImage?: string;
  /** Debian's virtiofsd (qemu-system-common), which shares the snapshots with the VM. */
  virtiofsd: string;
  /** Where the VMs' state directories go; default: beside containerd's socket. */
  stateDir: string;
  bootTimeoutS: number;
}

export const SYSTEM_CONFIG = "/etc/fractal/containerd-shim.json";

/** A build artifact beside the shim binary (build/). */
function besideShim(rel: string): string {
  return path.join(path.dirname(process.execPath), rel);
}

export function defaults(): ShimOptions {
  return {
    grouping: "namespace",
    memMiB: 1024,
    cpus: 2,
    kernel: process.env.FRACTAL_KERNEL || preferUnpacked(besideShim("kernel/vmlinuz")),
    // $FRACTAL_INITRD names a self-contained archive, as for boot.
    ...(process.env.FRACTAL_INITRD ? { initrd: process.env.FRACTAL_INITRD } : preferAgentImage(besideShim("initramfs.cpio"))),
    virtiofsd: "/usr/lib/qemu/virtiofsd",
    stateDir: "",
    bootTimeoutS: 300,
  };
}

/** The config path inside containerd's runtime options (an Any), if it carries one. */
export function configPathOf(any: google.protobuf.IAny | null | undefined): string {
  if (!any?.value || !any.type_url?.endsWith("runtimeoptions.v1.Options")) return "";
  try {
    return runtimeoptions.v1.Options.decode(any.value).configPath ?? "";
  } catch {
    return "";
  }
}

export function loadOptions(configPath: string): ShimOptions {
  const file = configPath || process.env.FRACTAL_SHIM_CONFIG || (fs.existsSync(SYSTEM_CONFIG) ? SYSTEM_CONFIG : "");
  const o = defaults();
  if (!file) return o;
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (err) {
    throw new TtrpcError(Code.INVALID_ARGUMENT, `fractal shim config ${file}: ${(err as Error).message}`);
  }
  if (typeof raw !== "object" || raw === null) throw new TtrpcError(Code.INVALID_ARGUMENT, `fractal shim config ${file}: not a JSON object`);
  const bad = (key: string, want: string) => new TtrpcError(Code.INVALID_ARGUMENT, `fractal shim config ${file}: "${key}" must be ${want}`);
  for (const [key, v] of Object.entries(raw)) {
    switch (key) {
      case "grouping":
        if (v !== "namespace" && v !== "container") throw bad(key, `"namespace" or "container"`);
        o.grouping = v;
        break;
      case "memMiB":
      case "cpus":
      case "bootTimeoutS":
        if (typeof v !== "number" || !Number.isInteger(v) || v < 1) throw bad(key, "a positive integer");
        o[key] = v;
        break;
      case "kernel":
      case "initrd":
      case "virtiofsd":
      case "stateDir":
        if (typeof v !== "string" || !v.startsWith("/")) throw bad(key, "an absolute path");
        o[key] = v;
        if (key === "initrd") delete o.agentImage; // the named initrd carries its agent
        break;
      default:
        throw new TtrpcError(Code.INVALID_ARGUMENT, `fractal shim config ${file}: unknown key "${key}"`);
    }
  }
  return o;
}
