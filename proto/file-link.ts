// A Link over a character device (a UART, a virtio-serial port, a host tty):
// reads and writes on one file descriptor. Such links can tear, so they are
// marked for resynchronisation.
//
// Bun-only: Bun.file(fd) streams poll pollable descriptors (ttys, ports)
// instead of parking a thread-pool thread in a blocking read(2). With
// node:fs streams, two idle ports held both pool threads and the agent's
// own writes starved.
import fs from "node:fs";
import { LinkEvents, type Link } from "./link.js";

export interface FileLinkOptions {
  /**
   * virtio-serial ports read EOF while no host is attached, and may be open
   * only once (a reopen fails with EBUSY while anything still holds them).
   * With onEof the fd stays open: each EOF is reported, and reading resumes
   * on the same fd after `rearmMs`.
   */
  onEof?: () => void;
  rearmMs?: number;
  /**
   * Asked `rearmMs` after an EOF, before onEof: is the peer really gone?
   * A virtio-serial port can read EOF for an instant while a new host
   * attaches (its bytes arrive before the port-open message is handled);
   * that session goes on, and onEof is not called.
   */
  stillGone?: () => boolean;
  /**
   * After onEof, resolves once the peer may be back (or `abort` fired);
   * reading resumes then. Without it, reading resumes at once and the next
   * EOF is reported `rearmMs` later, for as long as the peer stays away.
   */
  untilPeer?: (abort: AbortSignal) => Promise<void>;
  /**
   * The pause after an EOF, before stillGone is asked: a wait that may end
   * early, when the device signals that a peer came (default: `ms` of sleep).
   */
  pause?: (ms: number, abort: AbortSignal) => Promise<unknown>;
  /** Runs once, just before the fd is closed (a host tty gets its settings back). */
  beforeClose?: () => void;
}

export function fileLink(fd: number, description: string, opts: FileLinkOptions = {}): Link {
  const events = new LinkEvents();
  let flushing = 0;
  let reader = Bun.file(fd).stream().getReader();
  /** Set while paused: the read loop waits on it before its next read. */
  let paused: { wait: Promise<void>; go: () => void } | undefined;
  const writer = Bun.file(fd).writer();
  const closing = new AbortController();
  const finish = () => {
    if (events.closed) return;
    closing.abort();
    paused?.go();
    void reader.cancel().catch(() => {});
    try {
      opts.beforeClose?.();
    } catch {
      // the device went away: nothing to restore
    }
    try {
      fs.closeSync(fd);
    } catch {
      // already closed
    }
    events.close();
  };
  void (async () => {
    try {
      for (;;) {
        if (paused) await paused.wait;
        const { value, done } = await reader.read();
        if (!done) {
          events.data(value);
          continue;
        }
        // EOF: on a virtio-serial port it means the host side disconnected.
        if (!opts.onEof || events.closed) break;
        const rearmMs = opts.rearmMs ?? 100;
        await (opts.pause ? opts.pause(rearmMs, closing.signal) : new Promise((r) => setTimeout(r, rearmMs)));
        if (events.closed) break;
        if (opts.stillGone?.() ?? true) {
          opts.onEof();
          await opts.untilPeer?.(closing.signal);
          if (events.closed) break;
        }
        reader = Bun.file(fd).stream().getReader();
      }
    } catch (err) {
      events.lastError = err as Error;
    }
    finish();
  })();
  return {
    description,
    resync: true,
    ...events.register,
    write(chunks) {
      if (events.closed) return true;
      for (const c of chunks) writer.write(c);
      flushing++;
      Promise.resolve(writer.flush())
        .then(() => {
          if (--flushing === 0) events.drain();
        })
        .catch((err: Error) => {
          events.lastError = err;
          finish();
        });
      // Report backpressure while earlier flushes are still pending.
      return flushing <= 1;
    },
    pause() {
      if (paused) return;
      let go!: () => void;
      const wait = new Promise<void>((r) => (go = r));
      paused = { wait, go };
    },
    resume() {
      const p = paused;
      paused = undefined;
      p?.go();
    },
    close: finish,
  };
}
