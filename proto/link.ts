// A Link is a transport reduced to a byte stream: the only thing the session
// layer sees. Every transport (TCP, unix, WebSocket, vsock, serial) becomes a
// Link in exactly one place (proto/transports/*), so nothing above branches
// on which one it got.
import type { Socket } from "node:net";

export interface Link {
  /**
   * Queues bytes in order. Returns false when the transport's buffer is over
   * its high-water mark: the caller should hold bulk data until onDrain.
   */
  write(chunks: readonly Uint8Array[]): boolean;
  /** Ends the link after queued bytes are flushed. */
  close(): void;
  onData(cb: (chunk: Uint8Array) => void): void;
  /**
   * Stops reading from the peer until resume(), so the peer meets the
   * transport's own backpressure (a full TCP window) instead of this side
   * buffering without bound. Optional: links that cannot pause never do.
   */
  pause?(): void;
  resume?(): void;
  onDrain(cb: () => void): void;
  /** Called once, when the link is gone for whatever reason. */
  onClose(cb: (err?: Error) => void): void;
  /** For logs: "tcp 127.0.0.1:5000", "unix /run/x.sock", ... */
  readonly description: string;
  /** Network links: the peer's address, which failed logins are counted against. */
  readonly peer?: string;
  /**
   * Serial links can tear (a peer reconnects mid-frame): decoders on them
   * skip junk to the next valid frame instead of failing.
   */
  readonly resync?: boolean;
  /**
   * Serial links: a new host's Hello (another nonce) arrived on a session
   * that already shook hands: the peer changed without a hang-up we could
   * see. The link ends this session and starts a new one from that Hello,
   * followed by `rest`, the bytes read behind it (the new host's requests).
   */
  readonly rehello?: (hello: import("./wire.js").Hello, rest: Uint8Array) => void;
}

/**
 * The callbacks every Link keeps, once: an adapter fires data, drain and
 * close; its session registers through `register`. Close fires once, with
 * the last error the transport reported. What happens before anyone
 * registers is kept for them, in order (a CLI dials while its client code
 * is still loading, and an agent may refuse it in that time): bytes go to
 * the first data callback, a close to every close callback registered late.
 */
export class LinkEvents {
  private readonly dataCbs: ((chunk: Uint8Array) => void)[] = [];
  private readonly drainCbs: (() => void)[] = [];
  private readonly closeCbs: ((err?: Error) => void)[] = [];
  private early: Uint8Array[] = [];
  private done = false;
  /** The transport's last error, reported with the close. */
  lastError: Error | undefined;

  /** The Link methods that register callbacks, to spread into an adapter. */
  readonly register: Pick<Link, "onData" | "onDrain" | "onClose"> = {
    onData: (cb) => {
      this.dataCbs.push(cb);
      if (this.early.length === 0) return;
      const early = this.early;
      this.early = [];
      queueMicrotask(() => {
        for (const chunk of early) cb(chunk);
      });
    },
    onDrain: (cb) => void this.drainCbs.push(cb),
    onClose: (cb) => {
      this.closeCbs.push(cb);
      if (this.done) queueMicrotask(() => cb(this.lastError));
    },
  };

  get closed(): boolean {
    return this.done;
  }

  data(chunk: Uint8Array): void {
    if (this.dataCbs.length === 0) {
      this.early.push(chunk);
      return;
    }
    for (const cb of this.dataCbs) cb(chunk);
  }

  drain(): void {
    for (const cb of this.drainCbs) cb();
  }

  /** Fires the close callbacks, the first time only. */
  close(): void {
    if (this.done) return;
    this.done = true;
    for (const cb of this.closeCbs) cb(this.lastError);
  }
}

/** Frames up to this size go to the socket in one write. */
export const COALESCE_MAX = 16 << 10;

/**
 * A frame's header and payload as one buffer when the frame is small. With
 * Nagle off, each socket write is its own system call and its own TCP
 * segment: a 1-byte keystroke went out as two of each, and the agent's
 * profile under an interactive echo was led by the native socket write.
 * Large payloads keep their own writes: copying them is what bulk output
 * cannot afford.
 */
export function coalesceSmall(chunks: readonly Uint8Array[]): readonly Uint8Array[] {
  if (chunks.length < 2) return chunks;
  let n = 0;
  for (const c of chunks) n += c.length;
  return n <= COALESCE_MAX ? [Buffer.concat(chunks, n)] : chunks;
}

/** Adapts a node:net socket (TCP, unix, or one made from a vsock fd). */
export function socketLink(sock: Socket, description: string, initial?: Uint8Array): Link {
  sock.setNoDelay?.(true);
  const events = new LinkEvents();
  sock.on("error", (err) => {
    events.lastError = err;
  });
  sock.on("close", () => events.close());
  sock.on("drain", () => events.drain());
  return {
    description,
    ...events.register,
    onData(cb) {
      // Bytes read before the link existed (a handshake's tail) come first;
      // the socket flows only once someone takes its bytes.
      if (initial && initial.length > 0) cb(initial);
      sock.on("data", (b: Buffer) => cb(b));
    },
    write(chunks) {
      if (events.closed || sock.destroyed) return true;
      // No cork(): corking makes node:net concatenate the chunks, a copy of
      // every data payload that cost a quarter of the agent's CPU time.
      // Small frames are joined instead (coalesceSmall).
      let ok = true;
      for (const c of coalesceSmall(chunks)) ok = sock.write(c);
      return ok;
    },
    close() {
      sock.end();
      // A peer that never reads must not keep the socket forever.
      setTimeout(() => sock.destroy(), 5000).unref();
    },
    pause: () => void sock.pause(),
    resume: () => void sock.resume(),
  };
}
