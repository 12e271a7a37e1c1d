// An in-process Link pair for unit tests: bytes arrive asynchronously, and a
// writer past the high-water mark sees backpressure until the peer drained.
import { LinkEvents, type Link } from "../../proto/link.js";

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
  events: LinkEvents;
  queued: number;
  blocked: boolean;
}

function makeEnd(highWater: number): End {
  const events = new LinkEvents();
  const end: End = {
    events,
    queued: 0,
    blocked: false,
    link: undefined as unknown as MemoryLink, // set just below
  };
  const deliver = (to: End, bytes: Uint8Array) => {
    end.queued += bytes.length;
    setImmediate(() => {
      end.queued -= bytes.length;
      if (!to.events.closed) to.events.data(bytes);
      if (end.blocked && end.queued < highWater / 2) {
        end.blocked = false;
        events.drain();
      }
    });
  };
  end.link = {
    description: "memory",
    written: 0,
    ...events.register,
    write(chunks) {
      if (events.closed || !end.peer) return true;
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
        events.close();
        end.peer?.events.close();
      });
    },
    inject(bytes) {
      setImmediate(() => events.data(bytes));
    },
  };
  return end;
}
