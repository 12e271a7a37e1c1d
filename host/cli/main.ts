// fractal-host: parses the global flags and the command word, then calls the
// command's library function. Errors print one line and map to an exit status.
import { exitStatusFor, FractalError, ErrorCode } from "../../proto/errors.js";
import { AgentClient } from "../client.js";
import { flag, parseFlags, usageError, value } from "./args.js";
import { execHelp, parseExec, runExec } from "./exec.js";

const help = `usage: fractal-host [--connect URL] COMMAND [ARGS...]

Talks to a fractal agent without ssh.

Global options:
  --connect URL   the agent: tcp://HOST:PORT, unix:///PATH or ws://HOST:PORT
                  (default: $FRACTAL_CONNECT)
  -h, --help      this text

Commands:
  exec      run a command in the guest (see exec --help)
  ping      check that the agent answers, and how fast
  version   show the agent's version and machine
`;

const globalSpecs = [
  { long: "connect", value: true },
  { long: "help", short: "h" },
];

async function connect(url: string | undefined): Promise<AgentClient> {
  const target = url ?? process.env.FRACTAL_CONNECT;
  if (!target) throw usageError("fractal-host", "no agent given: use --connect URL or set FRACTAL_CONNECT");
  return AgentClient.connect(target);
}

async function main(argv: string[]): Promise<number> {
  const g = parseFlags(argv, globalSpecs, "fractal-host");
  const [command, ...args] = g.rest;
  if (flag(g, "help") || command === undefined || command === "help") {
    process.stdout.write(help);
    return command === undefined && !flag(g, "help") ? 2 : 0;
  }
  const url = value(g, "connect");
  switch (command) {
    case "exec": {
      const cmd = parseExec(args, process.env);
      if (cmd === "help") return void process.stdout.write(execHelp), 0;
      return runExec(await connect(url), cmd);
    }
    case "ping": {
      if (args.includes("--help") || args.includes("-h")) return void process.stdout.write("usage: fractal-host [--connect URL] ping\n\nSends one ping and prints the round-trip time.\n"), 0;
      const client = await connect(url);
      const ms = await client.ping();
      process.stdout.write(`pong from ${client.session.peerName} in ${ms.toFixed(2)} ms\n`);
      client.close();
      return 0;
    }
    case "version": {
      if (args.includes("--help") || args.includes("-h")) return void process.stdout.write("usage: fractal-host [--connect URL] version\n\nPrints the agent's version and machine.\n"), 0;
      const client = await connect(url);
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
