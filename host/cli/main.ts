// fractal-host: parses the global flags and the command word, then calls the
// command's library function. Errors print one line and map to an exit status.
import { exitStatusFor, FractalError, ErrorCode } from "../../proto/errors.js";
import fs from "node:fs";
import { AgentClient } from "../client.js";
import { runKeygen } from "./keys.js";
import { flag, parseFlags, usageError, value } from "./args.js";
import { execHelp, parseExec, runExec } from "./exec.js";
import { bootHelp, lsHelp, parseBoot, runBoot, runLs, runShell, runStop, stopHelp } from "./vm.js";
import { requireVm, vmEndpoint } from "../vm/manager.js";
import { containerHelp, parseRun, parseSimple, runHelp, runRun, runSimple } from "./containers.js";
import { imagesHelp, localImages, parseImages, remoteImages, runImageCommand } from "./images.js";

const help = `usage: fractal-host [--connect URL] COMMAND [ARGS...]

Talks to a fractal agent without ssh.

Global options:
  --connect URL   the agent: tcp://HOST:PORT, unix:///PATH, ws://HOST:PORT,
                  vsock://CID:PORT, hvsock:///PATH.sock:PORT or
                  serial:///PATH (default: $FRACTAL_CONNECT)
                  (tls://HOST:PORT and wss:// for TLS)
  --vm NAME       the agent of a VM started by boot
  --key FILE      the key for agents that ask for one
                  (default: $FRACTAL_KEY or ~/.config/fractal/key)
  --tls-ca FILE   PEM certificates to trust for tls:// and wss:// (an agent's
                  self-signed one; default: $FRACTAL_TLS_CA, else the system's)
  -h, --help      this text

Commands:
  boot      start a VM and wait for its agent (see boot --help)
  shell     a shell in a VM with the host's root backmounted (fractal-linux)
  ls        list VMs
  stop      power a VM off (stop NAME), or stop a container (stop --vm NAME CONTAINER)
  exec      run a command in the guest or in a container (see exec --help)
  images    list the images in a VM's store, or in a store directory
  image     image unpack STORE|--vm NAME IMAGE: unpack layers ahead of a run
  run       run a container (see run --help)
  ps        list containers
  logs      show a container's output
  attach    connect to a running container
  kill      signal a container
  rm        delete containers
  wait      wait for containers to exit
  ping      check that the agent answers, and how fast
  keygen    make a key for connecting to agents
  version   show the agent's version and machine
`;

const globalSpecs = [
  { long: "connect", value: true },
  { long: "vm", value: true },
  { long: "key", value: true },
  { long: "tls-ca", value: true },
  { long: "help", short: "h" },
];

async function connect(url: string | undefined, vm: string | undefined): Promise<AgentClient> {
  if (url && vm) throw usageError("fractal-host", "give --connect or --vm, not both");
  const target = vm ? vmEndpoint(requireVm(vm)) : (url ?? process.env.FRACTAL_CONNECT);
  if (!target) throw usageError("fractal-host", "no agent given: use --vm NAME, --connect URL or set FRACTAL_CONNECT");
  const ca = process.env.FRACTAL_TLS_CA;
  let tlsCa: string | undefined;
  try {
    tlsCa = ca ? fs.readFileSync(ca, "utf8") : undefined;
  } catch (err) {
    throw new FractalError(ErrorCode.INVALID_ARGUMENT, `cannot read --tls-ca ${ca}: ${(err as Error).message}`);
  }
  return AgentClient.connect(target, { dial: { tlsCa } });
}

const wantsHelp = (args: string[]) => args.includes("--help") || args.includes("-h");

/** --vm after the command word, for ping and version. */
function vmFlag(args: string[], command: string): string | undefined {
  const p = parseFlags(args, [{ long: "vm", value: true }, { long: "help", short: "h" }], command);
  if (p.rest.length > 0) throw usageError(command, `unexpected argument "${p.rest[0]}"`);
  return value(p, "vm");
}

async function main(argv: string[]): Promise<number> {
  const g = parseFlags(argv, globalSpecs, "fractal-host");
  const [command, ...args] = g.rest;
  if (flag(g, "help") || command === undefined || command === "help") {
    process.stdout.write(help);
    return command === undefined && !flag(g, "help") ? 2 : 0;
  }
  const url = value(g, "connect");
  // Global key and CA flags reach the library (and boot) as its environment.
  if (value(g, "key") !== undefined) process.env.FRACTAL_KEY = value(g, "key");
  if (value(g, "tls-ca") !== undefined) process.env.FRACTAL_TLS_CA = value(g, "tls-ca");
  const gvm = value(g, "vm");
  switch (command) {
    case "boot": {
      const b = parseBoot(args);
      if (b === "help") return void process.stdout.write(bootHelp), 0;
      return runBoot(b.opts, b.detach, b.authorize);
    }
    case "shell":
      return runShell(args, (vm) => connect(url, vm));
    case "keygen":
      return runKeygen(args);
    case "ls":
      if (wantsHelp(args)) return void process.stdout.write(lsHelp), 0;
      return runLs();
    case "stop": {
      // `stop NAME` powers a VM off; with an agent named (--vm/--connect) it
      // stops containers in it, as docker stop does.
      const containerStop = gvm !== undefined || url !== undefined || args.includes("--vm") || args.some((a) => a.startsWith("--vm="));
      if (!containerStop) {
        if (wantsHelp(args)) return void process.stdout.write(stopHelp + "\n" + containerHelp.stop), 0;
        return runStop(args);
      }
      const cmd = parseSimple("stop", args);
      if (cmd === "help") return void process.stdout.write(containerHelp.stop!), 0;
      return runSimple(await connect(url, cmd.vm ?? gvm), "stop", cmd);
    }
    case "ps":
    case "logs":
    case "attach":
    case "kill":
    case "rm":
    case "wait": {
      const cmd = parseSimple(command, args);
      if (cmd === "help") return void process.stdout.write(containerHelp[command]!), 0;
      return runSimple(await connect(url, cmd.vm ?? gvm), command, cmd);
    }
    case "run": {
      const cmd = parseRun(args, process.env);
      if (cmd === "help") return void process.stdout.write(runHelp), 0;
      return runRun(await connect(url, cmd.vm ?? gvm), cmd);
    }
    case "images": {
      const cmd = parseImages(args);
      if (cmd === "help") return void process.stdout.write(imagesHelp), 0;
      if (cmd.store !== undefined) return localImages(cmd.store);
      return remoteImages(await connect(url, cmd.vm ?? gvm));
    }
    case "image":
      return runImageCommand(args, (vm) => connect(url, vm), gvm);
    case "exec": {
      const cmd = parseExec(args, process.env);
      if (cmd === "help") return void process.stdout.write(execHelp), 0;
      return runExec(await connect(url, cmd.vm ?? gvm), cmd);
    }
    case "ping": {
      if (wantsHelp(args)) return void process.stdout.write("usage: fractal-host [--connect URL] ping [--vm NAME]\n\nSends one ping and prints the round-trip time.\n"), 0;
      const client = await connect(url, vmFlag(args, "ping") ?? gvm);
      const ms = await client.ping();
      process.stdout.write(`pong from ${client.session.peerName} in ${ms.toFixed(2)} ms\n`);
      client.close();
      return 0;
    }
    case "version": {
      if (wantsHelp(args)) return void process.stdout.write("usage: fractal-host [--connect URL] version [--vm NAME]\n\nPrints the agent's version and machine.\n"), 0;
      const client = await connect(url, vmFlag(args, "version") ?? gvm);
      const v = await client.version();
      process.stdout.write(
        `agent:    ${v.agentVersion}\nprotocol: ${v.protocolVersion}\nruntime:  ${v.runtime}\nkernel:   ${v.kernel}\nhostname: ${v.hostname}\narch:     ${v.arch}\n`,
      );
      client.close();
      return 0;
    }
    default:
      throw new FractalError(ErrorCode.INVALID_ARGUMENT, `unknown command "${command}" (see fractal-host --help)`);
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    const msg = err instanceof Error ? err.message : String(err);
    process.stderr.write(`fractal-host: ${msg}\n`);
    process.exit(exitStatusFor(err));
  },
);
