// The agent's serving loop: listeners in, sessions out. An error on one
// connection is logged and ends that connection only.
import { formatEndpoint, parseEndpoint } from "../proto/endpoint.js";
import { listen, type ListenOptions, type Listener } from "../proto/listen.js";
import type { Link } from "../proto/link.js";
import { encodeFrame } from "../proto/frame.js";
import { ErrorCode } from "../proto/errors.js";
import { Session, type Authenticator } from "../proto/session.js";
import type { AuthGate } from "./auth/authenticator.js";
import { connectionHandler, type AgentContext } from "./handlers/index.js";
import { log } from "./log.js";
import { AGENT_VERSION } from "./version.js";

export interface Agent {
  listeners: Listener[];
  close(): Promise<void>;
}

/** Protocol errors logged per connection. */
const MAX_LOGGED_ERRORS = 3;
/** Connections one network address may hold open at once, over all listeners (QEMU's user-net puts every host client at one address). */
export const MAX_CONNECTIONS_PER_ADDRESS = 128;

/** Per-connection bounds (see proto/session.ts); unset means the defaults there. */
export interface ConnectionLimits {
  frameTimeoutMs?: number;
  idleTimeoutMs?: number;
  maxConnectionsPerAddress?: number;
}

/** Serves one connection. */
function serveLink(link: Link, authenticator: Authenticator | undefined, opts: ServeOptions): Session {
  let session!: Session;
  let protocolErrors = 0;
  session = Session.accept(link, {
    name: `fractal-agent ${AGENT_VERSION}`,
    authenticator,
    frameTimeoutMs: opts.limits?.frameTimeoutMs,
    idleTimeoutMs: opts.limits?.idleTimeoutMs,
    onRequest: (req, s) => handler(req, s),
    onProtocolError: (err, fromPeer) => {
      // A hostile peer can make errors as fast as it can send: a few tell
      // the story, the rest would only flood the console and the log file.
      if (++protocolErrors > MAX_LOGGED_ERRORS) return;
      const more = protocolErrors === MAX_LOGGED_ERRORS ? " (further protocol errors on this connection are not logged)" : "";
      log("warn", `${link.description}: ${fromPeer ? "peer reported a protocol error" : "bad input from peer"}: ${err.message.slice(0, 200)}${more}`);
    },
  });
  // Built after accept so the handler can hook the session's close.
  const handler = connectionHandler(session, opts.agent);
  // A serial port reopened while no host is attached yields sessions that
  // never shook hands; logging each would flood the console.
  session.onClose((err) => {
    // A connection that shook hands may have left work's garbage behind.
    if (session.version > 0) opts.agent.idle.touch();
    if (session.version > 0 || !link.resync) log("debug", `${link.description}: closed (${err.message})`);
  });
  return session;
}

export interface ServeOptions {
  listen: string[];
  /** Which connections must authenticate, and with which keys. */
  gate: AuthGate;
  /** Certificate and key for tls:// and wss:// listeners. */
  tls?: ListenOptions["tls"];
  /** Guest mode: a listener that fails is logged and skipped, never fatal. */
  tolerant?: boolean;
  limits?: ConnectionLimits;
  agent: AgentContext;
}

export async function serve(opts: ServeOptions): Promise<Agent> {
  const listeners: Listener[] = [];
  // One count for the whole agent: a cap per listener would let an address
  // hold that many on TCP, as many again on WebSocket, and so on.
  const perAddress = new AddressCounter(opts.limits?.maxConnectionsPerAddress ?? MAX_CONNECTIONS_PER_ADDRESS);
  for (const url of opts.listen) {
    try {
      listeners.push(await listenOne(url, opts, perAddress));
    } catch (err) {
      if (!opts.tolerant) throw err;
      log("error", `cannot serve ${url}: ${(err as Error).message}`);
    }
  }
  return {
    listeners,
    close: async () => {
      await Promise.all(listeners.map((l) => l.close()));
    },
  };
}

async function listenOne(url: string, opts: ServeOptions, perAddress: AddressCounter): Promise<Listener> {
  const ep = parseEndpoint(url);
  const l = await listen(
    ep,
    (link) => {
      if (link.peer !== undefined && !perAddress.admit(link)) return;
      // A serial line starts a link per host session, most of them never
      // used (a port reopened with no host there): only real ones are logged.
      if (!link.resync) log("debug", `${link.description}: connected`);
      serveLink(link, opts.gate.forConnection(ep.kind, link.peer ?? "", link.description), opts);
    },
    { tls: opts.tls, report: (message) => log("warn", `${formatEndpoint(ep)}: ${message}`) },
  );
  log("info", `listening on ${formatEndpoint(l.endpoint)}`);
  return l;
}

/** Open connections per network address, with a cap. */
class AddressCounter {
  private readonly open = new Map<string, number>();
  /** Addresses whose refusal was logged since they were last under the cap. */
  private readonly logged = new Set<string>();

  constructor(private readonly max: number) {}

  /** Counts the link in, or refuses it (a fatal ProtocolError, then close) when its address is at the cap. */
  admit(link: Link): boolean {
    const peer = link.peer ?? "";
    const n = this.open.get(peer) ?? 0;
    if (n >= this.max) {
      const message = `too many connections from ${peer} (at most ${this.max} at once)`;
      if (!this.logged.has(peer)) log("warn", `${link.description}: refused: ${message}`);
      this.logged.add(peer);
      // Said before Hello: the client reports it instead of a bare hang-up.
      link.write([encodeFrame({ protocolError: { code: ErrorCode.RESOURCE_EXHAUSTED, message, fatal: true } })]);
      link.close();
      return false;
    }
    this.open.set(peer, n + 1);
    link.onClose(() => {
      const left = (this.open.get(peer) ?? 1) - 1;
      if (left > 0) this.open.set(peer, left);
      else this.open.delete(peer);
      if (left < this.max) this.logged.delete(peer);
    });
    return true;
  }
}
