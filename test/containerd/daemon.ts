// A containerd of the test's own (Debian's package): config, root, state
// and sockets in a temporary directory, never the system's. Its PATH has
// build/ first, where it finds containerd-shim-fractal-v1. Images come in
// with `ctr image import` from tarballs made here (the build's busybox
// layout, and a pause image umoci derives from it) — no registry.
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

export const ROOT = path.resolve(import.meta.dirname, "../..");
export const BUILD = path.join(ROOT, "build");
export const RUNTIME = "io.containerd.fractal.v1";
export const CRICTL = path.join(BUILD, "tools", "crictl");
export const PAUSE_IMAGE = "docker.io/library/pause:fractal";

export interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function tarOf(dir: string, out: string): string {
  execFileSync("tar", ["-C", dir, "-cf", out, "."]);
  return out;
}

/**
 * The build's busybox image; a pause image (busybox sleeping until TERM) and
 * a two-layer image (busybox plus /layer2.txt, so its snapshot is named by a
 * real ChainID), both made by umoci.
 */
export function imageTarballs(dir: string): { busybox: string; pause: string; twoLayers: string } {
  const busybox = tarOf(path.join(BUILD, "images"), path.join(dir, "busybox.tar"));
  const layout = path.join(dir, "pause-layout");
  fs.cpSync(path.join(BUILD, "images"), layout, { recursive: true });
  const umoci = (...args: string[]) => execFileSync("umoci", args, { stdio: "pipe" });
  umoci("config", "--image", `${layout}:busybox:latest`, "--tag", "fractal", "--clear=config.cmd",
    "--config.entrypoint", "/bin/sh", "--config.entrypoint", "-c",
    "--config.entrypoint", 'trap "exit 0" TERM INT; while :; do sleep 3600 & wait $!; done');
  umoci("rm", "--image", `${layout}:busybox:latest`);
  const pause = tarOf(layout, path.join(dir, "pause.tar"));
  const two = path.join(dir, "two-layout");
  fs.cpSync(path.join(BUILD, "images"), two, { recursive: true });
  const bundle = path.join(dir, "two-bundle");
  umoci("unpack", "--image", `${two}:busybox:latest`, bundle);
  fs.writeFileSync(path.join(bundle, "rootfs", "layer2.txt"), "from the second layer\n");
  umoci("repack", "--image", `${two}:latest`, bundle);
  umoci("rm", "--image", `${two}:busybox:latest`);
  fs.rmSync(bundle, { recursive: true, force: true });
  const twoLayers = tarOf(two, path.join(dir, "two.tar"));
  return { busybox, pause, twoLayers };
}

export class Containerd {
  readonly dir: string;
  readonly address: string;
  private proc?: ChildProcess;
  private readonly config: string;

  constructor() {
    // Short: the shims' socket paths live under it and must fit sun_path.
    this.dir = fs.mkdtempSync("/tmp/fctrd-");
    this.address = path.join(this.dir, "c.sock");
    this.config = path.join(this.dir, "config.toml");
    const d = this.dir;
    fs.mkdirSync(path.join(d, "cni"));
    fs.writeFileSync(
      this.config,
      `version = 2
root = "${d}/root"
state = "${d}/state"
[grpc]
  address = "${d}/c.sock"
[ttrpc]
  address = "${d}/c.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "${d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${PAUSE_IMAGE}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.fractal]
      runtime_type = "${RUNTIME}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${d}/cni"
`,
    );
  }

  get stateDir(): string {
    return path.join(this.dir, "fractal-vms");
  }

  async start(): Promise<void> {
    const log = fs.openSync(path.join(this.dir, "containerd.log"), "a");
    this.proc = spawn("containerd", ["--config", this.config], {
      stdio: ["ignore", log, log],
      env: { ...process.env, PATH: `${BUILD}:${process.env.PATH}` },
    });
    fs.closeSync(log);
    const deadline = Date.now() + 30_000;
    while (this.ctr("version").code !== 0) {
      if (Date.now() > deadline) throw new Error(`containerd did not start: ${this.log().slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Kills containerd (SIGKILL, as a crash) and waits for it to be gone; shims stay. */
  async kill(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null) return;
    const gone = new Promise((r) => p.once("exit", r));
    p.kill("SIGKILL");
    await gone;
  }

  log(): string {
    return fs.readFileSync(path.join(this.dir, "containerd.log"), "utf8");
  }

  ctr(...args: string[]): Result {
    return this.run("ctr", ["-a", this.address, ...args]);
  }

  crictl(...args: string[]): Result {
    const ep = `unix://${this.address}`;
    return this.run(CRICTL, ["--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "300s", ...args], { CRI_CONFIG_FILE: "/dev/null" });
  }

  private run(cmd: string, args: string[], env: Record<string, string> = {}): Result {
    const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 600_000, env: { ...process.env, ...env } });
    return { code: r.status ?? -1, stdout: r.stdout ?? "", stderr: r.stderr ?? String(r.error ?? "") };
  }

  /** The shim processes serving this containerd (their command line names its address). */
  shimPids(): number[] {
    return pgrep(`containerd-shim-fractal-v1 .*-address ${this.address} .*serve`);
  }

  /** QEMU processes of this containerd's VMs (their state lives under its directory). */
  qemuPids(): number[] {
    return pgrep(`qemu-system.*${this.stateDir}`);
  }

  /** Stops everything: shims (which power their VMs off), any VM left, containerd; removes the directory. */
  async destroy(): Promise<void> {
    for (const pid of this.shimPids()) signal(pid, "SIGTERM");
    const deadline = Date.now() + 20_000;
    while (this.shimPids().length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    for (const pid of [...this.shimPids(), ...this.qemuPids()]) signal(pid, "SIGKILL");
    await this.kill();
    spawnSync("umount", ["-R", path.join(this.dir, "root")], { stdio: "ignore" });
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

function pgrep(pattern: string): number[] {
  const r = spawnSync("pgrep", ["-f", pattern], { encoding: "utf8" });
  return r.stdout.split("\n").filter((l) => l.trim() !== "").map(Number);
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // gone already
  }
}

/** Polls fn until it gives something; on timeout the error carries what `explain` says (a daemon's log, say). */
export async function until<T>(what: string, fn: () => T | undefined | false, ms = 60_000, explain?: () => string): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${explain ? `\n${explain()}` : ""}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export const tmpdir = () => fs.mkdtempSync(path.join(os.tmpdir(), "fractal-ctrd-"));
