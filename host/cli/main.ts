// fractal-host: parses the global flags and the command word, then runs the
// command from the table in commands.ts. Errors print one line and map to an
// exit status (proto/errors.ts: 127/126 only for a command that could not be
// found or run, 125 for every failure of fractal's own).
import { ErrorCode, FractalError, exitStatusFor } from "../../proto/errors.js";
import type { Signer } from "../../proto/auth.js";
import type { AgentClient } from "../client.js";
import { flag, parseFlags, usageError, value } from "./args.js";
import { commandList, findCommand, type Context } from "./commands.js";
import { mark, report } from "./timing.js";

const help = () => `usage: fractal-host [--connect URL | --vm NAME] COMMAND [ARGS...]

Talks to a fractal agent without ssh.

Global options:
  --connect URL   the agent: tcp://HOST:PORT, unix:///PATH, ws://HOST:PORT,
                  vsock://CID:PORT, hvsock:///PATH.sock:PORT or
                  serial:///PATH[?baud=RATE] (default: $FRACTAL_CONNECT)
                  (tls://HOST:PORT and wss:// for TLS)
  --vm NAME       the agent of a VM started by boot
  --key FILE      the key for agents that ask for one
                  (default: $FRACTAL_KEY or ~/.config/fractal/key)
  --tls-ca FILE   PEM certificates to trust for tls:// and wss:// (an agent's
                  self-signed one; default: $FRACTAL_TLS_CA, else the system's)
  -h, --help      this text

${commandList()}
Run \`fractal-host COMMAND --help\` for a command's options.

Environment:
  FRACTAL_CONNECT   the agent, when neither --connect nor --vm is given
  FRACTAL_KEY       the key, when --key is not given
  FRACTAL_TLS_CA    the CA certificates, when --tls-ca is not given
  FRACTAL_STATE     where VMs keep their state (default ~/.local/state/fractal/vms)
  FRACTAL_KERNEL, FRACTAL_INITRD
                    boot's default kernel and initramfs
  FRACTAL_ACCEL     kvm, tcg or hvf instead of probing; FRACTAL_QEMU: the QEMU binary
  FRACTAL_PASST     the passt binary boot runs for a VM's network (default: passt)
  FRACTAL_TIMING    print how long each stage took (load, connect, handshake,
                    spawn, run, exit) on stderr at exit
`;

const globalSpecs = [
  { long: "connect", value: true },
  { long: "vm", value: true },
  { long: "key", value: true },
  { long: "tls-ca", value: true },
  { long: "help", short: "h" },
];

interface Target {
  url?: string;
  vm?: string;
  keyFile?: string;
  tlsCaFile?: string;
}

async function connect(t: Target, command: string): Promise<AgentClient> {
  const { url, vm } = t;
  if (url && vm) throw usageError("fractal-host", "give --connect or --vm, not both");
  // Loaded when a command connects: the CLI's start stays small (commands.ts).
  const { dial } = await import("../../proto/dial.js");
  let target = url ?? process.env.FRACTAL_CONNECT;
  if (vm) {
    const { requireVm, vmEndpoint } = await import("../vm/manager.js");
    target = vmEndpoint(requireVm(vm));
  }
  if (!target) {
    const more = command === "stop" ? " (stop stops containers; to power a VM off, use `fractal-host vm stop NAME`)" : "";
    throw usageError(command, `no agent given: use --vm NAME, --connect URL or set FRACTAL_CONNECT${more}`);
  }
  let tlsCa: string | undefined;
  try {
    tlsCa = t.tlsCaFile ? (await import("node:fs")).readFileSync(t.tlsCaFile, "utf8") : undefined;
  } catch (err) {
    throw new FractalError(ErrorCode.INVALID_ARGUMENT, `cannot read --tls-ca ${t.tlsCaFile}: ${(err as Error).message}`);
  }
  // The connection is made while the client's modules load: through a
  // user-mode network the guest accepts several ms after the host's connect
  // returns, time the CLI would otherwise spend waiting after its load.
  const linked = dial(target, { tlsCa });
  linked.catch(() => {});
  const [{ AgentClient }, { ticketSlot }, { loadSigner, defaultKeyPath }] = await Promise.all([import("../client.js"), import("../tickets.js"), import("../keys.js")]);
  mark("load");
  const link = await linked;
  mark("connect");
  // The key is loaded when needed: for a challenge, or to sign the next
  // ticket while the request runs. A Hello with a signed ticket needs none.
  let key: Promise<Signer | undefined> | undefined;
  const signer = () => (key ??= loadSigner(t.keyFile));
  // Serial lines need no key (and would spend a ticket on a repeated Hello).
  const slot = link.resync ? undefined : ticketSlot(link.description, t.keyFile ?? defaultKeyPath());
  const onTicket = (next: Uint8Array, refused: boolean) => {
    if (slot) ticketsKept.push(slot.keep(next, signer(), refused));
  };
  const client = await AgentClient.over(link, { signer, ticket: slot?.proof, onTicket });
  mark("handshake");
  return client;
}

async function main(argv: string[]): Promise<number> {
  mark("start");
  const g = parseFlags(argv, globalSpecs, "fractal-host");
  const [name, ...args] = g.rest;
  if (flag(g, "help") || name === undefined || name === "help") {
    // console.log, not process.stdout: Bun builds the stream on first use,
    // which would double the CLI's start (bench-exec measures --help).
    console.log(help().replace(/\n$/, ""));
    return name === undefined && !flag(g, "help") ? 2 : 0;
  }
  const command = findCommand(name);
  if (!command) throw usageError("fractal-host", `unknown command "${name}"`);
  // Flags first, then their documented environment variables.
  const url = value(g, "connect");
  const keyFile = value(g, "key") ?? (process.env.FRACTAL_KEY || undefined);
  const tlsCaFile = value(g, "tls-ca") ?? (process.env.FRACTAL_TLS_CA || undefined);
  const gvm = value(g, "vm");
  const ctx: Context = { vm: gvm, keyFile, connect: (vm) => connect({ url, vm: vm ?? gvm, keyFile, tlsCaFile }, name) };
  return command.run(args, ctx);
}

/** Next tickets being signed and written (host/tickets.ts): the CLI waits for them before it exits, briefly. */
const ticketsKept: Promise<void>[] = [];
const TICKET_WAIT_MS = 200;

function ticketsSettled(): Promise<unknown> | undefined {
  if (ticketsKept.length === 0) return undefined;
  return Promise.race([Promise.all(ticketsKept), new Promise((r) => setTimeout(r, TICKET_WAIT_MS))]);
}

// The binary starts with JavaScriptCore's tier-up thresholds raised
// (--compile-jit-policy, Makefile): a command's start runs its functions a
// few times each, which compiling does not pay back (the CLI used about 10 ms
// less CPU per exec with no JIT at all). A command still running after this
// long is a long one (a transfer, the console, a VM's supervisor) and gets
// the normal JIT.
const NORMAL_JIT_AFTER_MS = 100;
setTimeout(() => Bun.unsafe.setJITPolicy(1), NORMAL_JIT_AFTER_MS).unref();

main(process.argv.slice(2)).then(
  async (code) => {
    await ticketsSettled();
    mark("exit");
    report();
    process.exit(code);
  },
  async (err: unknown) => {
    const msg = err instanceof Error ? err.message : String(err);
    process.stderr.write(`fractal-host: ${msg}\n`);
    await ticketsSettled();
    process.exit(exitStatusFor(err));
  },
);
