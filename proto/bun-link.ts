// Adapts Bun-native sockets (Bun.connect, Bun.listen: TCP, a unix socket, or
// an fd such as a vsock connection) to Links. Bun's socket write() may take
// only part of the bytes; the rest waits here, in order, until the socket's
// drain callback. The CLI dials TCP and unix with these and the agent serves
// them with these: node:net's stream layer cost every CLI start a few
// milliseconds to load, and the agent's profile under TCG was led by its
// per-connection and per-chunk work (Socket and Duplex construction,
// readable-state bookkeeping, event emission).
import { coalesceSmall, LinkEvents, type Link } from "./link.js";

const HIGH_WATER = 4 << 20;
/** After close(), how long a peer that never reads may keep the socket. */
const CLOSE_GRACE_MS = 5000;

/** The part of Bun's Socket the link uses. */
interface BunSocket {
  write(data: Uint8Array): number;
  end(): void;
  terminate(): void;
  pause(): void;
  resume(): void;
  setNoDelay?(noDelay?: boolean): boolean;
  readonly remoteAddress: string;
  readonly remotePort: number;
  data: SocketLink | undefined;
}

/** Where Bun.connect goes: an open fd, a TCP address or a unix socket path. */
export type BunTarget = { fd: number } | { hostname: string; port: number } | { unix: string };

/** Where Bun.listen binds: a TCP address or a unix socket path. */
export type BunListenTarget = { hostname: string; port: number } | { unix: string };

/** One socket's Link: its events and the bytes the socket has not taken yet. */
class SocketLink {
  readonly events = new LinkEvents();
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private blocked = false;
  private ending = false;

  constructor(private readonly sock: BunSocket) {}

  link(description: string, peer?: string): Link {
    const sock = this.sock;
    return {
      description,
      ...(peer !== undefined ? { peer } : {}),
      ...this.events.register,
      write: (chunks) => this.write(chunks),
      close: () => {
        if (this.ending) return;
        this.ending = true;
        if (this.pending.length === 0) sock.end();
        setTimeout(() => {
          if (!this.events.closed) sock.terminate();
        }, CLOSE_GRACE_MS).unref();
      },
      pause: () => sock.pause(),
      resume: () => sock.resume(),
    };
  }

  /** The socket can take more: writes what waited, in order. */
  flush(): void {
    while (this.pending.length > 0) {
      const head = this.pending[0]!;
      const n = this.sock.write(head);
      if (n < 0) return;
      this.pendingBytes -= n;
      if (n < head.length) {
        this.pending[0] = head.subarray(n);
        return;
      }
      this.pending.shift();
    }
    // close() waited for what was queued here, as node:net's end() does.
    if (this.ending) return this.sock.end();
    if (this.blocked && this.pendingBytes < HIGH_WATER / 2) {
      this.blocked = false;
      this.events.drain();
    }
  }

  private write(chunks: readonly Uint8Array[]): boolean {
    if (this.events.closed || this.ending) return true;
    for (const c of coalesceSmall(chunks)) {
      if (this.pending.length === 0) {
        const n = this.sock.write(c);
        if (n === c.length) continue;
        const rest = c.subarray(Math.max(n, 0));
        // Copy: the caller may reuse its buffer once write() returns.
        this.pending.push(rest.slice());
        this.pendingBytes += rest.length;
      } else {
        this.pending.push(c.slice());
        this.pendingBytes += c.length;
      }
    }
    if (this.pendingBytes > HIGH_WATER) this.blocked = true;
    return !this.blocked;
  }
}

/** Handlers shared by every socket: each finds its own link in socket.data. */
const handlers = {
  data(s: BunSocket, d: Uint8Array) {
    s.data?.events.data(d);
  },
  drain(s: BunSocket) {
    s.data?.flush();
  },
  close(s: BunSocket) {
    s.data?.events.close();
  },
  end(s: BunSocket) {
    s.data?.events.close();
  },
  error(s: BunSocket, err: Error) {
    if (s.data) s.data.events.lastError = err;
  },
};

/** Connects a Bun socket and returns it as a Link; rejects with the system's error when the connection fails. */
export async function bunSocketLink(target: BunTarget, description: string): Promise<Link> {
  let state: SocketLink | undefined;
  const sock = (await Bun.connect({
    ...target,
    socket: {
      ...handlers,
      // Bytes may arrive before connect() resolves: the state exists from open.
      open(s: BunSocket) {
        s.data = state = new SocketLink(s);
      },
    },
  } as unknown as Parameters<typeof Bun.connect>[0])) as unknown as BunSocket; // Bun's types lack the fd form
  // Frames are written whole (coalesceSmall): Nagle would only hold a
  // keystroke back.
  if ("hostname" in target) sock.setNoDelay?.(true);
  return (state ?? (sock.data = new SocketLink(sock))).link(description);
}

/**
 * Listens with Bun's sockets; each connection becomes a Link carrying its
 * peer's address (TCP). Throws the system's error (with its code) when the
 * address cannot be bound.
 */
export function bunListen(target: BunListenTarget, onLink: (link: Link) => void, describe: (peer: string, port: number) => string): { port: number; stop(): void } {
  const tcp = "hostname" in target;
  const server = Bun.listen({
    ...target,
    socket: {
      ...handlers,
      open(s: BunSocket) {
        const state = new SocketLink(s);
        s.data = state;
        if (tcp) s.setNoDelay?.(true);
        onLink(state.link(describe(s.remoteAddress, s.remotePort), tcp ? s.remoteAddress : undefined));
      },
    },
  } as unknown as Parameters<typeof Bun.listen>[0]) as unknown as { port: number; stop(closeActive?: boolean): void };
  return { port: tcp ? server.port : 0, stop: () => server.stop(false) };
}
