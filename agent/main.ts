// fractal-agent: parses flags and serves. As a guest's init task it must never
// exit on an error, so failures are logged and serving goes on.
// First: it marks the moment before the other modules are evaluated.
import "./boot/clock.js";
import { parseArgs } from "node:util";
import { exitStatusFor } from "../proto/errors.js";
import { authGate, tlsIdentity, type AuthFlags } from "./auth/config.js";
import { log } from "./log.js";
import { serve, type ConnectionLimits } from "./server.js";
import { ContainerManager } from "./containers/manager.js";
import { IdleCollector } from "./idle-gc.js";
import type { AgentContext } from "./handlers/index.js";
import { AGENT_VERSION } from "./version.js";
import { AGENT_PORT, SERIAL_PORT_NAME } from "../proto/guest.js";

const usage = `usage: fractal-agent [--init] --listen URL [--listen URL]...

Serves the fractal protocol on every URL given:
  tcp://HOST:PORT          TCP (e.g. tcp://127.0.0.1:5000)
  tls://HOST:PORT          TCP over TLS (needs --tls-cert and --tls-key)
  unix:///PATH             unix-domain socket
  ws://HOST:PORT[/P]       WebSocket (wss:// over TLS)
  vsock://:PORT            vsock, any CID
  virtio-serial://NAME     a virtio-serial port by name
  serial:///dev/ttyS1      a UART, put in raw mode

  --init         run as the guest's init task (u-root's uinit): mount the
                 basics, load modules, bring up the network, mount shares,
                 and read more settings from the kernel command line
                 (fractal.listen=URL, fractal.share=TAG:/path, ...)
  --listen URL   a listener (repeatable)
  --auth MODE    which connections must prove a key: network (TCP,
                 WebSocket, TLS, vsock; the default), all, or none
  --authorized-keys FILE
                 keys that may connect, one per line:
                 [allow=TYPE,...] ssh-ed25519 BASE64 [comment]
                 (guest init: /etc/fractal/authorized_keys and
                 fractal.key=[ALLOW:]BASE64 on the kernel command line)
  --tls-cert FILE, --tls-key FILE
                 PEM certificate chain and key for tls:// and wss://
  --idle-timeout SECONDS
                 close a connection with nothing in flight and nothing
                 heard for this long (default 900; 0: never)
  --frame-timeout SECONDS
                 close a connection whose frame stays incomplete this long
                 (default 30; serial lines never)
  --max-connections-per-address N
                 network connections one address may hold (default 128)
  --version      print the version and exit
  --help         this text
`;

/** Listeners of a guest when the kernel command line names none. */
const GUEST_DEFAULT_LISTEN = [`virtio-serial://${SERIAL_PORT_NAME}`, `vsock://:${AGENT_PORT}`];

async function main(): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        listen: { type: "string", multiple: true, default: [] },
        auth: { type: "string" },
        "authorized-keys": { type: "string" },
        "tls-cert": { type: "string" },
        "tls-key": { type: "string" },
        "idle-timeout": { type: "string" },
        "frame-timeout": { type: "string" },
        "max-connections-per-address": { type: "string" },
        init: { type: "boolean" },
        version: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
    }));
  } catch (err) {
    process.stderr.write(`fractal-agent: ${(err as Error).message}\n${usage}`);
    process.exit(2);
  }
  if (values.help) return void process.stdout.write(usage);
  if (values.version) return void process.stdout.write(`fractal-agent ${AGENT_VERSION}\n`);
  if (values.listen.length === 0 && !values.init) {
    process.stderr.write(`fractal-agent: at least one --listen URL is needed\n${usage}`);
    process.exit(2);
  }
  let limits: ConnectionLimits;
  try {
    limits = {
      idleTimeoutMs: seconds(values["idle-timeout"], "--idle-timeout"),
      frameTimeoutMs: seconds(values["frame-timeout"], "--frame-timeout"),
      maxConnectionsPerAddress: count(values["max-connections-per-address"], "--max-connections-per-address"),
    };
  } catch (err) {
    process.stderr.write(`fractal-agent: ${(err as Error).message}\n`);
    process.exit(2);
  }
  process.on("uncaughtException", (err) => log("error", `uncaught: ${err.stack ?? err.message}`));
  process.on("unhandledRejection", (err) => log("error", `unhandled rejection: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`));
  // Losing a client mid-write must not kill the agent.
  process.on("SIGPIPE", () => {});
  // Bun dups fd 1 the first time anything touches process.stdout, which
  // some error paths do: done now, the descriptor count stays flat while
  // serving (the fuzz test holds the agent to that).
  void process.stdout;
  const agent: AgentContext = { containers: new ContainerManager(), isInit: values.init === true, idle: new IdleCollector() };
  if (values.init) {
    // As the guest's init task nothing may end this process: every failure
    // is logged and the agent keeps serving whatever still works.
    const { boot, startNetwork } = await import("./boot/init.js");
    const cfg = await boot();
    const listen = [...values.listen, ...cfg.listen];
    const flags: AuthFlags = { ...authFlags(values), init: { keys: cfg.keys, auth: cfg.auth } };
    let gate;
    let tls;
    try {
      gate = authGate(flags);
      tls = tlsIdentity(flags);
    } catch (err) {
      // A broken key file must not leave the guest unreachable over its
      // host-only channels: refuse every network login instead.
      log("error", `${(err as Error).message}; network connections will be refused`);
      gate = authGate({ auth: "network" });
    }
    // Containers a killed predecessor left running are ours again, before
    // the first client can ask for them.
    agent.containers.adoptAll();
    await serve({ listen: listen.length > 0 ? listen : GUEST_DEFAULT_LISTEN, tolerant: true, gate, tls, limits, agent });
    // Started with raised JIT thresholds (Makefile, START_BUILD): the boot's
    // run-once code stays interpreted, and serving gets the normal JIT.
    Bun.unsafe.setJITPolicy(1);
    await startNetwork(cfg);
    return;
  }
  try {
    const flags = authFlags(values);
    // A daemon the user started ends cleanly when told to (as sshd does), so
    // whatever runs at exit runs: Bun's --cpu-prof writes its profile then.
    // As init, SIGTERM is the kernel's or the supervisor's business: not here.
    // Set before serving: a signal sent as soon as "listening" is printed
    // must find the handler there.
    for (const sig of ["SIGTERM", "SIGINT"] as const) {
      process.once(sig, () => {
        log("info", `${sig}: exiting`);
        process.exit(0);
      });
    }
    await serve({ listen: values.listen, gate: authGate(flags), tls: tlsIdentity(flags), limits, agent });
    Bun.unsafe.setJITPolicy(1);
  } catch (err) {
    process.stderr.write(`fractal-agent: ${(err as Error).message}\n`);
    process.exit(exitStatusFor(err));
  }
}

function seconds(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n) || n < 0) throw new Error(`${flag} ${v}: expected a number of seconds (0: never)`);
  return n * 1000;
}

function count(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${flag} ${v}: expected a whole number of at least 1`);
  return n;
}

function authFlags(v: { auth?: string; "authorized-keys"?: string; "tls-cert"?: string; "tls-key"?: string }): AuthFlags {
  return { auth: v.auth, authorizedKeys: v["authorized-keys"], tlsCert: v["tls-cert"], tlsKey: v["tls-key"] };
}

void main();
