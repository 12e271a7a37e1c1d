// One direction of one multiplexed stream, with its credit accounting.
// Streams are created and scheduled by proto/session.ts; this file holds only
// the per-stream state so the session's frame loop stays readable.
import { ErrorCode, FractalError } from "./errors.js";

/** Where received bytes go. Call `done` once the chunk is consumed: that returns credit. */
export interface StreamSink {
  data(chunk: Uint8Array, done: () => void): void;
  /** The sender finished; every byte was delivered before this. */
  end(): void;
  /** The stream will never finish (connection lost, reset). */
  abort?(err: FractalError): void;
}

interface PendingWrite {
  buf: Uint8Array;
  resolve: () => void;
  reject: (err: FractalError) => void;
}

/** Callbacks from a stream back into its session. */
export interface StreamHost {
  schedule(stream: OutStream): void;
  sendCredit(stream: number, credit: number): void;
  sendReset(stream: number, reason: string): void;
  forget(stream: number): void;
}

/** Receiving side: buffers until a sink attaches, returns credit as the sink consumes. */
export class InStream {
  /** Bytes the peer may still send before it must wait for credit. */
  remoteCredit: number;
  private consumed = 0;
  private sink: StreamSink | undefined;
  private early: Uint8Array[] = [];
  private ended = false;
  private finished = false;
  private abortErr: FractalError | undefined;
  /** Chunks handed to the sink whose done() has not been called yet. */
  private inFlight = 0;

  constructor(
    readonly id: number,
    private readonly window: number,
    private readonly host: StreamHost,
  ) {
    this.remoteCredit = window;
  }

  /** Attach the consumer; bytes that arrived before it are delivered now. */
  pipeTo(sink: StreamSink): void {
    this.sink = sink;
    // Aborted before anyone read it: the reader learns of it now.
    if (this.abortErr) {
      sink.abort?.(this.abortErr);
      return;
    }
    const early = this.early;
    this.early = [];
    for (const c of early) this.deliver(c);
    this.maybeFinish();
  }

  /** Session side: the peer sent bytes (already checked against remoteCredit). */
  receive(chunk: Uint8Array): void {
    this.remoteCredit -= chunk.length;
    if (this.sink) this.deliver(chunk);
    else this.early.push(chunk);
  }

  /** Session side: the peer sent StreamEnd. */
  receiveEnd(): void {
    this.ended = true;
    this.maybeFinish();
  }

  /** Consumer no longer wants bytes: tell the peer and drop the stream. */
  reset(reason: string): void {
    if (this.finished) return;
    this.finished = true;
    this.early = [];
    this.host.sendReset(this.id, reason);
    this.host.forget(this.id);
  }

  /** Session side: the connection is gone. */
  abort(err: FractalError): void {
    if (this.finished) return;
    this.finished = true;
    this.abortErr = err;
    this.early = [];
    this.sink?.abort?.(err);
  }

  private deliver(chunk: Uint8Array): void {
    let once = false;
    this.inFlight++;
    this.sink!.data(chunk, () => {
      if (once || this.finished) return;
      once = true;
      this.inFlight--;
      this.consumed += chunk.length;
      // Batch credit: one update per quarter window keeps control traffic
      // small without ever letting the sender idle on a full window. After
      // the peer's StreamEnd no more bytes come, so no credit is owed.
      if (!this.ended && this.consumed >= this.window / 4) {
        const credit = this.consumed;
        this.consumed = 0;
        this.remoteCredit += credit;
        this.host.sendCredit(this.id, credit);
      }
      this.maybeFinish();
    });
  }

  /** end() reaches the sink only after it consumed every chunk. */
  private maybeFinish(): void {
    if (this.ended && this.sink && this.early.length === 0 && this.inFlight === 0) this.finish();
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.host.forget(this.id);
    this.sink!.end();
  }
}

/** Sending side: queues writes and releases them as credit arrives. */
export class OutStream {
  /** The connection's end, once it went away under this stream. */
  private lostWith: FractalError | undefined;
  /** Bytes we may still send before the peer grants more. */
  credit: number;
  private queue: PendingWrite[] = [];
  private queuedBytes = 0;
  private ending = false;
  /** Set once StreamEnd went out or the peer reset us; later writes are refused. */
  done = false;
  private resetReason: string | undefined;

  constructor(
    readonly id: number,
    initialCredit: number,
    private readonly host: StreamHost,
  ) {
    this.credit = initialCredit;
  }

  /** Bytes accepted by write() but not yet sent. */
  get backlog(): number {
    return this.queuedBytes;
  }

  /** Resolves once every byte of `buf` has been handed to the link. */
  write(buf: Uint8Array): Promise<void> {
    // The connection went away: say so, not merely "closed".
    if (this.lostWith) return Promise.reject(this.lostWith);
    if (this.done || this.ending) {
      return Promise.reject(
        new FractalError(
          ErrorCode.STREAM_NOT_OPEN,
          this.resetReason ? `stream ${this.id} was reset: ${this.resetReason}` : `stream ${this.id} is closed`,
        ),
      );
    }
    if (buf.length === 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.queue.push({ buf, resolve, reject });
      this.queuedBytes += buf.length;
      this.host.schedule(this);
    });
  }

  /** Sends StreamEnd after everything queued so far. */
  end(): void {
    if (this.done || this.ending) return;
    this.ending = true;
    this.host.schedule(this);
  }

  /** True when the scheduler has something to send now. */
  get sendable(): boolean {
    if (this.done) return false;
    return (this.queuedBytes > 0 && this.credit > 0) || (this.queuedBytes === 0 && this.ending);
  }

  /** Scheduler side: takes up to `max` bytes within credit. Empty when ending. */
  take(max: number): Uint8Array {
    const head = this.queue[0];
    if (!head) return new Uint8Array(0);
    const n = Math.min(max, this.credit, head.buf.length);
    const piece = n === head.buf.length ? head.buf : head.buf.subarray(0, n);
    this.credit -= n;
    this.queuedBytes -= n;
    if (n === head.buf.length) {
      this.queue.shift();
      head.resolve();
    } else {
      head.buf = head.buf.subarray(n);
    }
    return piece;
  }

  /** Scheduler side: true once the queue is empty and end() was called. */
  get readyToEnd(): boolean {
    return this.ending && this.queuedBytes === 0 && !this.done;
  }

  markEnded(): void {
    this.done = true;
    this.host.forget(this.id);
  }

  /** The peer reset the stream, or the connection closed: fail pending writes. */
  fail(err: FractalError, reason?: string): void {
    if (this.done) return;
    this.done = true;
    this.resetReason = reason;
    if (reason === undefined) this.lostWith = err;
    const queue = this.queue;
    this.queue = [];
    this.queuedBytes = 0;
    for (const w of queue) w.reject(err);
    this.host.forget(this.id);
  }
}

/**
 * A receiving stream as an async iterable of its chunks; each chunk's
 * credit goes back as the consumer takes it, so a slow consumer holds the
 * sender back. A stream that aborts (connection lost, `abort` called)
 * throws from the iteration.
 */
export async function* chunksOf(stream: InStream): AsyncGenerator<Uint8Array> {
  const queue: { chunk: Uint8Array; done: () => void }[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  let failed: Error | undefined;
  const poke = () => wake?.();
  stream.pipeTo({
    data: (chunk, done) => (queue.push({ chunk, done }), poke()),
    end: () => ((ended = true), poke()),
    abort: (err) => ((failed = err), poke()),
  });
  for (;;) {
    const next = queue.shift();
    if (next) {
      next.done();
      yield next.chunk;
    } else if (failed) {
      throw failed;
    } else if (ended) {
      return;
    } else {
      await new Promise<void>((r) => (wake = r));
      wake = undefined;
    }
  }
}
