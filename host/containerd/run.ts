// `fractal-host run --containerd`: a container from the host containerd's
// images, in a fractal VM that shares containerd's snapshotter directory
// (booted on first use, then kept running like any `boot -d` VM, named
// after that directory). The image config applies as `run` applies a
// store image's: Entrypoint and Cmd, Env, WorkingDir, User.
import { createHash } from "node:crypto";
import type { AgentClient, RunOptions } from "../client.js";
import { processArgs } from "../../oci/store.js";
import { stateRoot } from "../vm/state.js";
import { containerdImageRoot } from "./image-root.js";
import { GuestVm } from "./shim/guest.js";
import { defaults } from "./shim/options.js";
import { envMap } from "./shim/translate.js";

export const DEFAULT_ADDRESS = "/run/containerd/containerd.sock";

export interface ContainerdRun {
  client: AgentClient;
  options: RunOptions;
  vmName: string;
  /** Gives the writable snapshot back to containerd; call once the container is gone. */
  release(): Promise<void>;
}

export async function prepareContainerdRun(o: RunOptions, address: string, namespace: string, keyFile: string | undefined, log: (m: string) => void): Promise<ContainerdRun> {
  const root = await containerdImageRoot(address, namespace, o.image);
  try {
    const vmName = `ctrd-${createHash("sha256").update(root.shareRoot).digest("hex").slice(0, 12)}`;
    const vm = new GuestVm({ vmName, stateDir: stateRoot() }, defaults(), log, keyFile);
    const client = await vm.agent(root.shareRoot);
    const cfg = root.config;
    const command = o.command ?? [];
    const args = processArgs(cfg, command, o.entrypoint);
    const env = envMap(cfg.Env);
    const options: RunOptions = {
      ...o,
      image: root.name,
      command: args,
      entrypoint: undefined,
      env: { ...env, ...o.env },
      cwd: o.cwd || cfg.WorkingDir || "/",
      user: o.user || cfg.User || "",
      prepared: { root: root.root },
    };
    return { client, options, vmName, release: root.release };
  } catch (err) {
    await root.release();
    throw err;
  }
}
