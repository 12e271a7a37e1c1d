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
   * Serial links: a Hello arrived on a session that already shook hands, so
   * the peer restarted without a hang-up we could see. The link ends this
   * session and starts a new one from that Hello.
   */
  readonly rehello?: (hello: import("./wire.js").Hello) => void;
}

/** Adapts a node:net socket (TCP, unix, or one made from a vsock fd). */
export function socketLink(sock: Socket, description: string, initial?: Uint8Array): Link {
  sock.setNoDelay?.(true);
  let closed = false;
  const closeCbs: ((err?: Error) => void)[] = [];
  let lastError: Error | undefined;
  sock.on("error", (err) => {
    lastError = err;
  });
  sock.on("close", () => {
    if (closed) return;
    closed = true;
    for (const cb of closeCbs) cb(lastError);
  });
  return {
    description,
    write(chunks) {
      if (closed || sock.destroyed) return true;
      // No cork(): corking makes node:net concatenate the chunks, a copy of
      // every data payload that cost a quarter of the agent's CPU time.
      let ok = true;
      for (const c of chunks) ok = sock.write(c);
      return ok;
    },
    close() {
      sock.end();
      // A peer that never reads must not keep the socket forever.
      setTimeout(() => sock.destroy(), 5000).unref();
    },
    onData(cb) {
      // Bytes read before the link existed (a handshake's tail) come first.
      if (initial && initial.length > 0) cb(initial);
      sock.on("data", (b: Buffer) => cb(b));
    },
    pause: () => void sock.pause(),
    resume: () => void sock.resume(),
    onDrain(cb) {
      sock.on("drain", cb);
    },
    onClose(cb) {
      closeCbs.push(cb);
    },
  };
}
