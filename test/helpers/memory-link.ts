// An in-process Link pair for unit tests: bytes arrive asynchronously, and a
// writer past the high-water mark sees backpressure until the peer drained.
import type { Link } from "../../proto/link.js";

export interface MemoryLink extends Link {
  /** Bytes this side wrote, for assertions. */
  written: number;
  /** Inject raw bytes as if the peer sent them. */
  inject(bytes: Uint8Array): void;
}

export function memoryLinkPair(highWater = 1 << 20): [MemoryLink, MemoryLink] {
  const a = makeEnd(highWater);
  const b = makeEnd(highWater);
  a.peer = b;
  b.peer = a;
  return [a.link, b.link];
}

interface End {
  link: MemoryLink;
  peer?: End;
  dataCbs: ((c: Uint8Array) => void)[];
  closeCbs: ((err?: Error) => void)[];
  drainCbs: (() => void)[];
  queued: number;
  blocked: boolean;
  closed: boolean;
  closeNow(): void;
}

function makeEnd(highWater: number): End {
  const end: End = {
    dataCbs: [],
    closeCbs: [],
    drainCbs: [],
    queued: 0,
    blocked: false,
    closed: false,
    closeNow() {
      if (end.closed) return;
      end.closed = true;
      for (const cb of end.closeCbs) cb();
    },
    link: undefined as unknown as MemoryLink, // set just below
  };
  const deliver = (to: End, bytes: Uint8Array) => {
    end.queued += bytes.length;
    setImmediate(() => {
      end.queued -= bytes.length;
      if (!to.closed) for (const cb of to.dataCbs) cb(bytes);
      if (end.blocked && end.queued < highWater / 2) {
        end.blocked = false;
        for (const cb of end.drainCbs) cb();
      }
    });
  };
  end.link = {
    description: "memory",
    written: 0,
    write(chunks) {
      if (end.closed || !end.peer) return true;
      for (const c of chunks) {
        // Copy: the sender may reuse its buffer once write() returns.
        const copy = c.slice();
        end.link.written += copy.length;
        deliver(end.peer, copy);
      }
      if (end.queued > highWater) end.blocked = true;
      return !end.blocked;
    },
    close() {
      setImmediate(() => {
        end.closeNow();
        end.peer?.closeNow();
      });
    },
    onData(cb) {
      end.dataCbs.push(cb);
    },
    onDrain(cb) {
      end.drainCbs.push(cb);
    },
    onClose(cb) {
      end.closeCbs.push(cb);
    },
    inject(bytes) {
      setImmediate(() => {
        for (const cb of end.dataCbs) cb(bytes);
      });
    },
  };
  return end;
}
