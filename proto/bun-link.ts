// Adapts a Bun-native socket (Bun.connect: TCP, a unix socket, or an fd such
// as a vsock connection) to a Link. Bun's socket write() may take only part
// of the bytes; the rest waits here, in order, until the socket's drain
// callback. The CLI dials TCP and unix sockets this way: node:net's stream
// layer cost every start a few milliseconds to load.
import { coalesceSmall, LinkEvents, type Link } from "./link.js";

const HIGH_WATER = 4 << 20;

interface BunSocket {
  write(data: Uint8Array): number;
  end(): void;
  setNoDelay?(noDelay?: boolean): boolean;
}

/** Where Bun.connect goes: an open fd, a TCP address or a unix socket path. */
export type BunTarget = { fd: number } | { hostname: string; port: number } | { unix: string };

/** Connects a Bun socket and returns it as a Link; rejects with the system's error when the connection fails. */
export async function bunSocketLink(target: BunTarget, description: string): Promise<Link> {
  const events = new LinkEvents();
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  let blocked = false;
  let ending = false;
  let sock!: BunSocket;
  const flush = () => {
    while (pending.length > 0) {
      const head = pending[0]!;
      const n = sock.write(head);
      if (n < 0) return;
      pendingBytes -= n;
      if (n < head.length) {
        pending[0] = head.subarray(n);
        return;
      }
      pending.shift();
    }
    // close() waited for what was queued here, as node:net's end() does.
    if (ending) return sock.end();
    if (blocked && pendingBytes < HIGH_WATER / 2) {
      blocked = false;
      events.drain();
    }
  };
  const onClose = () => events.close();
  sock = (await Bun.connect({
    ...target,
    socket: {
      data(_s: unknown, d: Uint8Array) {
        events.data(d);
      },
      drain: () => flush(),
      close: onClose,
      end: onClose,
      error(_s: unknown, err: Error) {
        events.lastError = err;
      },
    },
  } as unknown as Parameters<typeof Bun.connect>[0])) as unknown as BunSocket; // Bun's types lack the fd form
  // Frames are written whole (coalesceSmall): Nagle would only hold a
  // keystroke back.
  if ("hostname" in target) sock.setNoDelay?.(true);
  return {
    description,
    ...events.register,
    write(chunks) {
      if (events.closed || ending) return true;
      for (const c of coalesceSmall(chunks)) {
        if (pending.length === 0) {
          const n = sock.write(c);
          if (n === c.length) continue;
          const rest = c.subarray(Math.max(n, 0));
          // Copy: the caller may reuse its buffer once write() returns.
          pending.push(rest.slice());
          pendingBytes += rest.length;
        } else {
          pending.push(c.slice());
          pendingBytes += c.length;
        }
      }
      if (pendingBytes > HIGH_WATER) blocked = true;
      return !blocked;
    },
    close() {
      if (ending) return;
      ending = true;
      if (pending.length === 0) sock.end();
    },
  };
}
