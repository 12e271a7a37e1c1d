// Container commands with docker's conventions: run, ps, logs, attach, kill,
// stop, rm, wait. Each parses its flags and calls the client; exit statuses
// propagate (128+N for a container killed by signal N, 137 for an OOM kill).
import { spawn } from "node:child_process";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import { exitStatusOf, type AgentClient, type ContainerSummary, type RunOptions } from "../client.js";
import { DEFAULT_ADDRESS, prepareContainerdRun } from "../containerd/run.js";
import { parseSignal } from "../../proto/signals.js";
import { parseSize, envFlags, flag, parseFlags, usageError, value, values } from "./args.js";
import { followProcess } from "./exec.js";
import { listenForwards, parsePortSpec } from "./ports.js";
import { parseVolume, type VolumeSpec } from "../vm/volumes.js";
import { containerDetail, containerJson } from "../api/shapes.js";
import { table } from "./table.js";
import { fdWriter, windowSize } from "./terminal.js";

export const runHelp = `usage: fractal-host run [OPTIONS] IMAGE [CMD [ARG...]]

Creates a container from IMAGE (in the store the VM was booted with
--images) and starts it. Unless -d, its output shows here and the command
exits with the container's status.

  -d, --detach        start it and print its id; output is kept for logs/attach
  -i, --interactive   keep stdin open (and forward ours)
  -t, --tty           run it on a terminal (local terminal goes raw)
      --rm            delete the container when it exits
      --name NAME     container name (default: derived from its id)
  -e, --env K=V       set a variable (K alone copies it from here); repeatable
  -w, --workdir DIR   working directory inside the container
      --entrypoint CMD
                      replace the image's ENTRYPOINT (and drop its CMD);
                      "" clears it
  -u, --user U[:G]    user (and group), by name or number
      --memory SIZE   memory limit, e.g. 64M or 1G (cgroup memory.max)
      --cpus N        CPU limit, e.g. 0.5 (cgroup cpu.max)
      --pids N        process limit (cgroup pids.max)
  -v, --volume SRC:PATH[:ro]
                      bind SRC into the container at PATH: a host directory
                      (absolute, or ./ relative) found in one of the VM's
                      shares (boot --share, --host-root-rw; a path outside
                      every share is refused, naming them), or the named
                      volume SRC, a directory kept in the VM's state
                      directory through container removals and VM reboots
                      (see volume ls); needs --vm
      --layer IMAGE[:PATH]
                      stack IMAGE over the container's image at start, at
                      PATH (default /, over its root; e.g. a debugging
                      toolbox); later ones on top. At a PATH, layer rm can
                      take it away again (see layer --help)
  -p, --publish [HOSTPORT:]PORT
                      carry 127.0.0.1:HOSTPORT to the container's PORT over the
                      agent link (as port-forward). This command holds the
                      host port while attached; with -d a background
                      \`fractal-host port-forward\` process does, and ends
                      when the container exits (-d -p needs --vm or
                      $FRACTAL_CONNECT, which that process connects by)
      --vm NAME       the VM to run in
      --attested      refuse unless the VM passed attestation since its boot
                      (boot --attest, or fractal-host attest), saying which
                      measurement differed
      --containerd    take IMAGE from the host containerd's image store: its
                      snapshots are the root (shared into a VM of their own,
                      booted on first use); the container is removed on exit
      --namespace NS  containerd namespace (default: default)
      --containerd-address SOCK
                      containerd's socket (default: $CONTAINERD_ADDRESS, else
                      /run/containerd/containerd.sock)
  -h, --help          this text
`;

const runSpecs = [
  { long: "attested" },
  { long: "publish", short: "p", value: true, repeat: true },
  { long: "volume", short: "v", value: true, repeat: true },
  { long: "layer", value: true, repeat: true },
  { long: "containerd" },
  { long: "namespace", value: true },
  { long: "containerd-address", value: true },
  { long: "detach", short: "d" },
  { long: "interactive", short: "i" },
  { long: "tty", short: "t" },
  { long: "rm" },
  { long: "name", value: true },
  { long: "env", short: "e", value: true, repeat: true },
  { long: "workdir", short: "w", value: true },
  { long: "entrypoint", value: true },
  { long: "user", short: "u", value: true },
  { long: "memory", short: "m", value: true },
  { long: "cpus", value: true },
  { long: "pids", value: true },
  { long: "vm", value: true },
  { long: "help", short: "h" },
];

export interface RunCommand {
  options: RunOptions;
  vm?: string;
  /** --containerd: the image comes from this containerd. */
  containerd?: { address: string; namespace: string };
  /** -p: host ports carried to the container's. */
  publish: { host: number; guest: number }[];
  /** -v: mapped to guest paths once the VM is known. */
  volumes: VolumeSpec[];
  /** --attested: the VM must have passed attestation since its boot. */
  attested: boolean;
}

/** --layer IMAGE[:PATH]: the path starts at the last ":/" (an image reference has colons of its own). */
export function parseLayerSpec(spec: string): { image: string; at: string } {
  const i = spec.lastIndexOf(":/");
  const [image, at] = i > 0 ? [spec.slice(0, i), spec.slice(i + 1)] : [spec, "/"];
  if (!image) throw usageError("run", `--layer ${spec}: no image given`);
  return { image, at };
}

export function parseRun(args: string[], localEnv: NodeJS.ProcessEnv): RunCommand | "help" {
  const p = parseFlags(args, runSpecs, "run");
  if (flag(p, "help")) return "help";
  const [image, ...command] = p.rest;
  if (!image) throw usageError("run", "no image given");
  const env = envFlags(values(p, "env"), localEnv, "run");
  const num = (name: string, ok: (n: number) => boolean) => {
    const v = value(p, name);
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isFinite(n) || !ok(n)) throw usageError("run", `bad --${name} "${v}"`);
    return n;
  };
  const memory = value(p, "memory");
  const entrypoint = value(p, "entrypoint");
  const options: RunOptions = {
    image,
    command,
    entrypoint: entrypoint === undefined ? undefined : entrypoint === "" ? [] : [entrypoint],
    name: value(p, "name"),
    env,
    cwd: value(p, "workdir"),
    user: value(p, "user"),
    interactive: flag(p, "interactive"),
    detach: flag(p, "detach"),
    remove: flag(p, "rm"),
    // The kernel refuses a container less than 4 MiB.
    memoryBytes: memory === undefined ? undefined : parseSize(memory, "--memory", "run", 4 << 20, "4M"),
    cpus: num("cpus", (n) => n > 0 && n <= 1024),
    pids: num("pids", (n) => Number.isInteger(n) && n > 0),
    layers: values(p, "layer").map(parseLayerSpec),
  };
  if (options.detach && options.remove && options.interactive) throw usageError("run", "-d with -i and --rm leaves nothing to attach to");
  if (flag(p, "tty")) options.tty = { ...windowSize(), term: localEnv.TERM || "xterm-256color" };
  let containerd: RunCommand["containerd"];
  if (flag(p, "containerd")) {
    if (options.detach) throw usageError("run", "--containerd runs attached and removes the container on exit (for containers containerd keeps, use ctr run -d --runtime io.containerd.fractal.v1)");
    if (value(p, "vm")) throw usageError("run", "--containerd picks its own VM (the one sharing containerd's snapshots); drop --vm");
    if (values(p, "volume").length > 0 || values(p, "layer").length > 0) throw usageError("run", "-v and --layer do not go with --containerd (its snapshot is the whole root)");
    containerd = { address: value(p, "containerd-address") ?? (localEnv.CONTAINERD_ADDRESS || DEFAULT_ADDRESS), namespace: value(p, "namespace") ?? "default" };
    options.remove = true;
  } else if (value(p, "namespace") !== undefined || value(p, "containerd-address") !== undefined) {
    throw usageError("run", "--namespace and --containerd-address go with --containerd");
  }
  const publish = values(p, "publish").map((spec) => parsePortSpec(spec, "run"));
  if (publish.length > 0 && options.detach && !value(p, "vm") && !localEnv.FRACTAL_CONNECT) {
    throw usageError("run", "-d with -p needs --vm NAME or $FRACTAL_CONNECT: the background port-forward process connects by it");
  }
  let volumes: VolumeSpec[];
  try {
    volumes = values(p, "volume").map(parseVolume);
  } catch (err) {
    throw usageError("run", (err as Error).message);
  }
  if (flag(p, "attested") && containerd) throw usageError("run", "--attested does not go with --containerd");
  return { options, vm: value(p, "vm"), containerd, publish, volumes, attested: flag(p, "attested") };
}

/** run --containerd: the image and root from containerd, the VM sharing its snapshots; the snapshot goes back when the container is gone. */
export async function runContainerdRun(cmd: RunCommand, keyFile?: string): Promise<number> {
  const c = cmd.containerd!; // the caller checked
  const r = await prepareContainerdRun(cmd.options, c.address, c.namespace, keyFile, (m) => process.stderr.write(`${m}\n`));
  try {
    return await runRun(r.client, { options: r.options, publish: cmd.publish, volumes: [], attested: false });
  } finally {
    r.client.close();
    await r.release();
  }
}

export async function runRun(client: AgentClient, cmd: RunCommand): Promise<number> {
  const o = cmd.options;
  const showProgress = process.stderr.isTTY;
  let progressShown = false;
  const r = await client.run({
    ...o,
    onProgress: showProgress
      ? (line) => {
          progressShown = true;
          process.stderr.write(`\r\x1b[K${line}`);
        }
      : undefined,
  });
  if (progressShown) process.stderr.write("\r\x1b[K");
  if (!r.proc) {
    process.stdout.write(`${r.id}\n`);
    if (cmd.publish.length > 0) publishInBackground(r.name, cmd);
    return 0;
  }
  const servers = cmd.publish.length > 0 ? await listenForwards(client, { address: "127.0.0.1", container: r.name, ports: cmd.publish }, (l) => void process.stderr.write(`${l}\n`)) : [];
  try {
    return await followProcess(r.proc, o.tty !== undefined, o.interactive ?? false);
  } finally {
    for (const s of servers) s.close();
  }
}

/** run -d -p: a detached port-forward process holds the host ports until the container exits. */
function publishInBackground(container: string, cmd: RunCommand): void {
  const args = [...(cmd.vm ? ["--vm", cmd.vm] : []), "port-forward", container, ...cmd.publish.map((p) => `${p.host}:${p.guest}`)];
  const child = spawn(process.execPath, args, { detached: true, stdio: "ignore" });
  child.unref();
  process.stderr.write(`port-forward for ${container} runs as pid ${child.pid} (${cmd.publish.map((p) => `127.0.0.1:${p.host} -> ${p.guest}`).join(", ")})\n`);
}

const containerSpecs = (extra: { long: string; short?: string; value?: boolean }[]) => [...extra, { long: "vm", value: true }, { long: "help", short: "h" }];

export interface SimpleCommand {
  vm?: string;
  names: string[];
  flags: ReturnType<typeof parseFlags>;
}

export const containerHelp: Record<string, string> = {
  ps: "usage: fractal-host ps [-a] [--json] [--vm NAME]\n\nLists running containers; -a includes exited ones. --json prints the REST\nAPI's ContainerList.\n",
  inspect: "usage: fractal-host inspect [--vm NAME] CONTAINER...\n\nPrints each container and its stack of images as JSON (the REST API's\nContainerDetail), one array for all of them, as docker inspect does.\n",
  logs: "usage: fractal-host logs [-f] [--vm NAME] CONTAINER\n\nPrints a container's output so far; -f keeps following it until it exits.\n",
  attach: "usage: fractal-host attach [--no-stdin] [--vm NAME] CONTAINER\n\nConnects to a running container's output (and input, if it runs with -i)\nuntil it exits; exits with its status.\n",
  kill: "usage: fractal-host kill [-s SIGNAL] [--vm NAME] CONTAINER...\n\nSends SIGNAL (default KILL) to each container's main process: a name\n(TERM, SIGUSR1, rtmin+2) or a Linux signal number (1-64).\n",
  stop: "usage: fractal-host stop [-t SECONDS] [--vm NAME] CONTAINER...\n\nSends SIGTERM, then SIGKILL after SECONDS (default 10). The agent comes from\n--vm, --connect or $FRACTAL_CONNECT; to power a VM off, use `vm stop NAME`.\n",
  rm: "usage: fractal-host rm [-f] [--vm NAME] CONTAINER...\n\nDeletes containers; -f kills running ones first.\n",
  wait: "usage: fractal-host wait [--vm NAME] CONTAINER...\n\nWaits for each container to exit and prints its exit status.\n",
};

const simpleSpecs: Record<string, { long: string; short?: string; value?: boolean }[]> = {
  ps: [{ long: "all", short: "a" }, { long: "json" }],
  inspect: [],
  logs: [{ long: "follow", short: "f" }],
  attach: [{ long: "no-stdin" }],
  kill: [{ long: "signal", short: "s", value: true }],
  stop: [{ long: "time", short: "t", value: true }],
  rm: [{ long: "force", short: "f" }],
  wait: [],
};

export function parseSimple(command: string, args: string[]): SimpleCommand | "help" {
  const p = parseFlags(args, containerSpecs(simpleSpecs[command]!), command); // callers pass a known command
  if (flag(p, "help")) return "help";
  if (command === "ps" && p.rest.length > 0) throw usageError(command, `unexpected argument "${p.rest[0]}"`);
  if (command !== "ps" && p.rest.length === 0) throw usageError(command, "no container given");
  if ((command === "logs" || command === "attach") && p.rest.length > 1) throw usageError(command, "give exactly one container");
  return { vm: value(p, "vm"), names: p.rest, flags: p };
}

function ago(ms: number): string {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} seconds`;
  if (s < 3600) return `${Math.round(s / 60)} minutes`;
  return `${Math.round(s / 3600)} hours`;
}

export function statusText(c: ContainerSummary): string {
  if (c.running) return `Up ${ago(c.createdMs)}`;
  const e = c.exit;
  if (!e) return "Created";
  const code = exitStatusOf(e);
  return `Exited (${code}) ${ago(c.finishedMs)} ago${e.oomKilled ? ", OOM killed" : ""}`;
}

export async function runSimple(client: AgentClient, command: string, cmd: SimpleCommand): Promise<number> {
  const f = cmd.flags;
  switch (command) {
    case "ps": {
      const list = await client.containers(flag(f, "all"));
      if (flag(f, "json")) {
        process.stdout.write(`${JSON.stringify({ containers: list.map(containerJson) }, null, 2)}\n`);
        return 0;
      }
      const rows = [["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES"]];
      for (const c of list) {
        const command = c.command.join(" ");
        rows.push([c.id.slice(0, 12), c.image, JSON.stringify(command.length > 20 ? `${command.slice(0, 19)}…` : command), `${ago(c.createdMs)} ago`, statusText(c), c.name]);
      }
      process.stdout.write(table(rows, 3));
      return 0;
    }
    case "inspect": {
      const all = await client.containers(true);
      const out: unknown[] = [];
      for (const ref of cmd.names) out.push(await containerDetail(client, ref, all));
      process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
      return 0;
    }
    case "logs": {
      const proc = await client.attach(cmd.names[0]!, { logs: true, follow: flag(f, "follow") }); // parseSimple checked
      const out = fdWriter(1);
      const err = fdWriter(2);
      proc.onStdout(out.write);
      proc.onStderr(err.write);
      await proc.outputEnded();
      await Promise.all([out.close(), err.close()]);
      return 0;
    }
    case "attach": {
      const name = cmd.names[0]!; // parseSimple checked
      const info = (await client.containers(true)).find((c) => c.name === name || c.id.startsWith(name));
      if (!info) throw new FractalError(ErrorCode.CONTAINER_NOT_FOUND, `no such container: ${name}`);
      if (!info.running) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `container ${info.name} is not running (use logs to see its output)`);
      const stdin = info.interactive && !flag(f, "no-stdin");
      const proc = await client.attach(info.id, { stdin, follow: true });
      return followProcess(proc, info.tty, stdin);
    }
    case "kill": {
      const sig = parseSignal(value(f, "signal") ?? "KILL");
      for (const n of cmd.names) {
        await client.kill(n, sig);
        process.stdout.write(`${n}\n`);
      }
      return 0;
    }
    case "stop": {
      const t = Number(value(f, "time") ?? 10);
      if (!Number.isInteger(t) || t < 0) throw usageError("stop", `bad --time "${value(f, "time")}"`);
      for (const n of cmd.names) {
        await client.stop(n, t || 1);
        process.stdout.write(`${n}\n`);
      }
      return 0;
    }
    case "rm": {
      for (const n of cmd.names) {
        await client.remove(n, flag(f, "force"));
        process.stdout.write(`${n}\n`);
      }
      return 0;
    }
    case "wait": {
      let last = 0;
      for (const n of cmd.names) {
        const e = await client.containerWait(n);
        last = exitStatusOf(e);
        process.stdout.write(`${last}${e.oomKilled ? " (OOM killed)" : ""}\n`);
      }
      return last;
    }
    default:
      throw new FractalError(ErrorCode.INVALID_ARGUMENT, `unknown command "${command}"`);
  }
}

