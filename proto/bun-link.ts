// Adapts a Bun-native socket (from Bun.connect({fd}), used for vsock) to a
// Link. Bun's socket write() may take only part of the bytes; the rest waits
// here, in order, until the socket's drain callback.
import { coalesceSmall, LinkEvents, type Link } from "./link.js";

const HIGH_WATER = 4 << 20;

interface BunSocket {
  write(data: Uint8Array): number;
  end(): void;
  terminate?(): void;
}

/** Connects a Bun socket on an existing fd and returns it as a Link. */
export async function bunFdLink(fd: number, description: string): Promise<Link> {
  const events = new LinkEvents();
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  let blocked = false;
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
    if (blocked && pendingBytes < HIGH_WATER / 2) {
      blocked = false;
      events.drain();
    }
  };
  const onClose = () => events.close();
  sock = (await Bun.connect({
    fd,
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
  return {
    description,
    ...events.register,
    write(chunks) {
      if (events.closed) return true;
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
      sock.end();
    },
  };
}
