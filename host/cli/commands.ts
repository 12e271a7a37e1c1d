// Every fractal-host command, in one table: the top-level help is printed
// from it and main dispatches through it, so the two cannot disagree.
//
// Names never guess: `stop` always stops containers (as docker's does) in
// the agent named by --vm, --connect or $FRACTAL_CONNECT; a VM is powered
// off by `vm stop NAME`.
//
// Each command's module is imported when the command runs, not before: the
// CLI's start (`--help`, a mistyped word) loads this table and the argument
// parser only, and `exec` never pays for containerd's or the API's code.
import type { AgentClient } from "../client.js";
import { flag, parseFlags, usageError, value } from "./args.js";

/** What a command gets from the global flags. */
export interface Context {
  /** Connects to the agent of VM `vm`, else the global --vm, --connect or $FRACTAL_CONNECT. */
  connect(vm?: string): Promise<AgentClient>;
  /** The global --vm, if given. */
  vm?: string;
  /** --key, else $FRACTAL_KEY, if either is given. */
  keyFile?: string;
}

export interface Command {
  name: string;
  /** One line for the command list. */
  summary: string;
  /** Heading it is listed under. */
  group: "VMs" | "In a VM or agent" | "Agent";
  run(args: string[], ctx: Context): Promise<number>;
  /** Subcommands, for groups such as `vm`. */
  sub?: Command[];
}

const wantsHelp = (args: string[]) => args.includes("--help") || args.includes("-h");
const out = (text: string) => (process.stdout.write(text), 0);

/** A command whose only flag is --vm (ping, version). */
function vmOnly(args: string[], command: string): string | undefined {
  const p = parseFlags(args, [{ long: "vm", value: true }, { long: "help", short: "h" }], command);
  if (p.rest.length > 0) throw usageError(command, `unexpected argument "${p.rest[0]}"`);
  return value(p, "vm");
}

const bootCommand = async (args: string[], ctx: Context) => {
  const { bootHelp, parseBoot, runBoot } = await import("./vm.js");
  const b = parseBoot(args);
  if (b === "help") return out(bootHelp);
  return runBoot(b.opts, b.detach, b.authorize, ctx.keyFile, b.attestExpect);
};
const lsCommand = async (args: string[]) => {
  const { lsHelp, runLs } = await import("./vm.js");
  if (wantsHelp(args)) return out(lsHelp);
  const p = parseFlags(args, [{ long: "json" }], "ls");
  if (p.rest.length > 0) throw usageError("ls", `unexpected argument "${p.rest[0]}"`);
  return runLs(flag(p, "json"));
};

/** Container commands that take a list of containers (or none, for ps). */
function simple(name: string, summary: string): Command {
  return {
    name,
    summary,
    group: "In a VM or agent",
    run: async (args, ctx) => {
      const { containerHelp, parseSimple, runSimple } = await import("./containers.js");
      const cmd = parseSimple(name, args);
      if (cmd === "help") return out(containerHelp[name]!);
      return runSimple(await ctx.connect(cmd.vm), name, cmd);
    },
  };
}

const vmCommands: Command[] = [
  { name: "boot", summary: "start a VM and wait for its agent", group: "VMs", run: bootCommand },
  { name: "ls", summary: "list VMs", group: "VMs", run: lsCommand },
  {
    name: "stop",
    summary: "power VMs off",
    group: "VMs",
    run: async (args) => {
      const { runStop, stopHelp } = await import("./vm.js");
      if (wantsHelp(args)) return out(stopHelp);
      return runStop(args);
    },
  },
];

export const vmGroupHelp = `usage: fractal-host vm COMMAND [ARGS...]

VM lifecycle:
${vmCommands.map((c) => `  vm ${c.name.padEnd(6)} ${c.summary}`).join("\n")}
`;

export const commands: Command[] = [
  { name: "boot", summary: "start a VM and wait for its agent (same as vm boot)", group: "VMs", run: bootCommand },
  { name: "ls", summary: "list VMs (same as vm ls)", group: "VMs", run: lsCommand },
  {
    name: "vm",
    summary: "vm boot | vm ls | vm stop NAME...: VM lifecycle (vm stop powers VMs off)",
    group: "VMs",
    sub: vmCommands,
    run: async (args, ctx) => {
      const [sub, ...rest] = args;
      if (sub === undefined || sub === "--help" || sub === "-h") return sub === undefined ? (process.stdout.write(vmGroupHelp), 2) : out(vmGroupHelp);
      const c = vmCommands.find((x) => x.name === sub);
      if (!c) throw usageError("vm", `unknown command "${sub}" (one of ${vmCommands.map((x) => x.name).join(", ")})`);
      return c.run(rest, ctx);
    },
  },
  {
    name: "attest",
    summary: "prove what a VM (or machine) booted, with its TPM",
    group: "VMs",
    run: async (args, ctx) => {
      const { attestHelp, parseAttest, runAttest } = await import("./attest.js");
      const cmd = parseAttest(args);
      if (cmd === "help") return out(attestHelp);
      return runAttest(cmd, ctx.vm, () => ctx.connect(), ctx.keyFile);
    },
  },
  {
    name: "shell",
    summary: "a shell in a VM with the host's root backmounted (fractal-linux)",
    group: "VMs",
    run: async (args, ctx) => (await import("./vm.js")).runShell(args, (vm) => ctx.connect(vm), ctx.keyFile),
  },
  {
    name: "exec",
    summary: "run a command in the guest, or in a container",
    group: "In a VM or agent",
    run: async (args, ctx) => {
      const { execHelp, parseExec, runExec } = await import("./exec.js");
      const cmd = parseExec(args, process.env);
      if (cmd === "help") return out(execHelp);
      return runExec(await ctx.connect(cmd.vm), cmd);
    },
  },
  {
    name: "run",
    summary: "run a container",
    group: "In a VM or agent",
    run: async (args, ctx) => {
      const { parseRun, runContainerdRun, runHelp, runRun } = await import("./containers.js");
      const cmd = parseRun(args, process.env);
      if (cmd === "help") return out(runHelp);
      if (cmd.containerd) return runContainerdRun(cmd, ctx.keyFile);
      if (cmd.attested) {
        const vm = cmd.vm ?? ctx.vm;
        if (!vm) throw usageError("run", "--attested needs --vm NAME: attestation results are kept per VM");
        (await import("../attest/vm.js")).requireAttested(vm);
      }
      if (cmd.volumes.length > 0) {
        const vm = cmd.vm ?? ctx.vm;
        if (!vm) throw usageError("run", "-v needs --vm NAME: host directories and named volumes reach the guest through the VM's shares");
        const [{ guestBinds }, { requireVm }] = await Promise.all([import("../vm/volumes.js"), import("../vm/manager.js")]);
        cmd.options.binds = guestBinds(requireVm(vm), cmd.volumes);
      }
      return runRun(await ctx.connect(cmd.vm), cmd);
    },
  },
  {
    name: "cp",
    summary: "copy files between the host and a container or the guest",
    group: "In a VM or agent",
    run: async (args, ctx) => {
      const { cpHelp, parseCp, runCp } = await import("./copy.js");
      const cmd = parseCp(args);
      if (cmd === "help") return out(cpHelp);
      return runCp(await ctx.connect(cmd.vm), cmd);
    },
  },
  {
    name: "port-forward",
    summary: "carry a host port to a port in the guest or a container, over the agent link",
    group: "In a VM or agent",
    run: async (args, ctx) => {
      const { parsePortForward, portForwardHelp, runPortForward } = await import("./ports.js");
      const cmd = parsePortForward(args);
      if (cmd === "help") return out(portForwardHelp);
      return runPortForward(await ctx.connect(cmd.vm), cmd);
    },
  },
  {
    name: "layer",
    summary: "layer add|rm|ls: stack images into a running container, live",
    group: "In a VM or agent",
    run: async (args, ctx) => {
      const { layerHelp, parseLayer, runLayer } = await import("./layers.js");
      const cmd = parseLayer(args);
      if (cmd === "help") return args.length === 0 ? (process.stdout.write(layerHelp), 2) : out(layerHelp);
      return runLayer(await ctx.connect(cmd.vm), cmd);
    },
  },
  {
    name: "volume",
    summary: "volume ls|create|rm: named volumes for run -v",
    group: "In a VM or agent",
    run: async (args, ctx) => {
      const { parseVolumeCommand, runVolume, volumeHelp } = await import("./volumes.js");
      const cmd = parseVolumeCommand(args, ctx.vm);
      if (cmd === "help") return args.length === 0 ? (process.stdout.write(volumeHelp), 2) : out(volumeHelp);
      return runVolume(cmd, (vm) => ctx.connect(vm));
    },
  },
  simple("ps", "list containers"),
  simple("inspect", "show containers as JSON"),
  simple("logs", "show a container's output"),
  simple("attach", "connect to a running container"),
  simple("stop", "stop containers (SIGTERM, then SIGKILL)"),
  simple("kill", "signal containers"),
  simple("rm", "delete containers"),
  simple("wait", "wait for containers to exit"),
  {
    name: "images",
    summary: "list the images in a VM's store, or in a store directory",
    group: "In a VM or agent",
    run: async (args, ctx) => {
      const { imagesHelp, localImages, parseImages, remoteImages } = await import("./images.js");
      const cmd = parseImages(args);
      if (cmd === "help") return out(imagesHelp);
      if (cmd.store !== undefined) return localImages(cmd.store, cmd.json);
      return remoteImages(await ctx.connect(cmd.vm), cmd.json);
    },
  },
  {
    name: "image",
    summary: "image unpack STORE|--vm NAME IMAGE: unpack layers ahead of a run",
    group: "In a VM or agent",
    run: async (args, ctx) => (await import("./images.js")).runImageCommand(args, (vm) => ctx.connect(vm), ctx.vm),
  },
  {
    name: "ping",
    summary: "check that the agent answers, and how fast",
    group: "Agent",
    run: async (args, ctx) => {
      if (wantsHelp(args)) return out("usage: fractal-host [--connect URL] ping [--vm NAME]\n\nSends one ping and prints the round-trip time.\n");
      const client = await ctx.connect(vmOnly(args, "ping"));
      const ms = await client.ping();
      process.stdout.write(`pong from ${client.session.peerName} in ${ms.toFixed(2)} ms\n`);
      client.close();
      return 0;
    },
  },
  {
    name: "version",
    summary: "show the agent's version and machine",
    group: "Agent",
    run: async (args, ctx) => {
      if (wantsHelp(args)) return out("usage: fractal-host [--connect URL] version [--vm NAME]\n\nPrints the agent's version and machine.\n");
      const client = await ctx.connect(vmOnly(args, "version"));
      const v = await client.version();
      process.stdout.write(`agent:    ${v.agentVersion}\nprotocol: ${v.protocolVersion}\nruntime:  ${v.runtime}\nkernel:   ${v.kernel}\nhostname: ${v.hostname}\narch:     ${v.arch}\n`);
      client.close();
      return 0;
    },
  },
  {
    name: "serve",
    summary: "serve the REST API and the web console",
    group: "Agent",
    run: async (args, ctx) => {
      const { parseServe, runServe, serveHelp } = await import("./serve.js");
      const cmd = parseServe(args);
      if (cmd === "help") return out(serveHelp);
      return runServe(cmd, ctx.keyFile);
    },
  },
  {
    name: "netboot-serve",
    summary: "serve the kernel and initramfs to machines booting with iPXE",
    group: "VMs",
    run: async (args, ctx) => {
      const { netbootHelp, parseNetboot, runNetboot } = await import("./netboot.js");
      const cmd = parseNetboot(args);
      if (cmd === "help") return out(netbootHelp);
      return runNetboot(cmd, ctx.keyFile);
    },
  },
  { name: "keygen", summary: "make a key for connecting to agents", group: "Agent", run: async (args, ctx) => (await import("./keys.js")).runKeygen(args, ctx.keyFile) },
];

/** The command list of the top-level help, grouped, from the table. */
export function commandList(): string {
  const groups = [...new Set(commands.map((c) => c.group))];
  // Two spaces at least between a name and its summary, as every help text here has them.
  const width = Math.max(...commands.map((c) => c.name.length)) + 1;
  return groups.map((g) => `${g}:\n${commands.filter((c) => c.group === g).map((c) => `  ${c.name.padEnd(width)} ${c.summary}`).join("\n")}\n`).join("\n");
}

export function findCommand(name: string): Command | undefined {
  return commands.find((c) => c.name === name);
}
