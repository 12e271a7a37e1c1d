// A container's output: every chunk is appended to a log file and passed
// to the clients attached right now. Records are [stream byte][u32 length]
// [bytes], so stdout and stderr replay apart.
//
// Two kinds of reader. A client that feeds the container's stdin (attach
// or run with -i, as in docker) is live and paces it: a slow one holds the
// container back. Every other reader — logs, logs -f, attach without stdin,
// run's own client without -i — reads the file at the pace of its own
// stream's credit, from the start or from now, and follows it as it grows
// (like tail -f): however slow or stopped such a reader is, the container
// never waits for it (a key that may only read logs cannot stall a
// container), nothing is lost, and the agent holds one read buffer for it,
// not the log.
import fs from "node:fs";

export type OutKind = 1 | 2;

export interface OutputSink {
  stdout(chunk: Uint8Array): Promise<void>;
  stderr(chunk: Uint8Array): Promise<void>;
  end(): void;
}

const HEAD = 5;
/** Bytes a log reader takes from the file at a time. */
const READ_CHUNK = 64 << 10;
/**
 * Bytes a log reader may have handed to its stream and not yet seen sent:
 * enough that the next read overlaps the sending of the last, little
 * enough that a stalled reader holds next to nothing.
 */
const READ_AHEAD = 256 << 10;

export class OutputLog {
  private readonly fd: number;
  private readonly sinks = new Set<OutputSink>();
  private ended = false;
  /** Bytes in the file: where the next record goes. */
  private size: number;
  /** Wakes followers waiting at the end of the file. */
  private grew: { wait: Promise<void>; wake: () => void } | undefined;

  constructor(readonly file: string) {
    this.fd = fs.openSync(file, "a+");
    this.size = fs.fstatSync(this.fd).size;
  }

  /** Appends and forwards one chunk; resolves once attached clients took it (which paces the container). */
  async write(kind: OutKind, chunk: Uint8Array): Promise<void> {
    const head = Buffer.alloc(HEAD);
    head[0] = kind;
    head.writeUInt32BE(chunk.length, 1);
    fs.writeSync(this.fd, head);
    fs.writeSync(this.fd, chunk);
    this.size += HEAD + chunk.length;
    this.wakeFollowers();
    if (this.sinks.size === 0) return;
    const sends = [...this.sinks].map((s) => (kind === 1 ? s.stdout(chunk) : s.stderr(chunk)).catch(() => this.sinks.delete(s)));
    await Promise.all(sends);
  }

  /**
   * Connects a client. A pacing one sees live output until the container
   * exits and holds it back while slow. Any other reads the log file from
   * its start (`fromStart`) or from now, and with `follow` goes on until
   * the container exited and it read everything.
   */
  attach(sink: OutputSink, o: { pace: boolean; fromStart: boolean; follow: boolean }): void {
    if (!o.pace) {
      void this.replay(sink, o.fromStart ? 0 : this.size, o.follow);
      return;
    }
    if (o.follow && !this.ended) this.sinks.add(sink);
    else sink.end();
  }

  /** The container exited and its output is complete. */
  close(): void {
    if (this.ended) return;
    this.ended = true;
    for (const s of this.sinks) s.end();
    this.sinks.clear();
    fs.closeSync(this.fd);
    this.wakeFollowers();
  }

  /** Streams the file's records to the sink, each write awaited: the sink's credit is the pace. */
  private async replay(sink: OutputSink, from: number, follow: boolean): Promise<void> {
    let fd: number;
    try {
      fd = fs.openSync(this.file, "r");
    } catch {
      sink.end();
      return;
    }
    let offset = from;
    let carry = Buffer.alloc(0);
    const sending: { done: Promise<void>; n: number }[] = [];
    let queued = 0;
    const send = async (kind: number, chunk: Uint8Array) => {
      const done = kind === 1 ? sink.stdout(chunk) : sink.stderr(chunk);
      done.catch(() => {}); // awaited below; a failure ends the replay there
      sending.push({ done, n: chunk.length });
      queued += chunk.length;
      while (queued > READ_AHEAD) {
        const oldest = sending.shift()!; // queued > 0 means something is in flight
        await oldest.done;
        queued -= oldest.n;
      }
    };
    try {
      for (;;) {
        // A fresh buffer per read: the stream may still hold the last one's bytes.
        const buf = Buffer.allocUnsafe(READ_CHUNK);
        const n = await readAt(fd, buf, offset);
        if (n === 0) {
          if (!follow || (this.ended && offset >= this.size)) break;
          // The end of what was written so far: wait for more, or the exit.
          if (offset >= this.size && !this.ended) await this.nextGrowth();
          continue;
        }
        offset += n;
        let data = carry.length > 0 ? Buffer.concat([carry, buf.subarray(0, n)]) : buf.subarray(0, n);
        // Records are appended in two writes: a reader can see a head whose bytes are not there yet.
        // Neighbouring records of one stream go out as one chunk: a FIFO
        // hands the agent a page at a time, and a frame per page would cost
        // more than the bytes.
        let run: Uint8Array[] = [];
        let runKind = 0;
        let runBytes = 0;
        const flush = async () => {
          if (run.length > 0) await send(runKind, run.length === 1 ? run[0]! : Buffer.concat(run));
          run = [];
          runBytes = 0;
        };
        while (data.length >= HEAD && data.length >= HEAD + data.readUInt32BE(1)) {
          const len = data.readUInt32BE(1);
          if (data[0] !== runKind || runBytes + len > READ_CHUNK) await flush();
          runKind = data[0]!;
          run.push(data.subarray(HEAD, HEAD + len));
          runBytes += len;
          data = data.subarray(HEAD + len);
        }
        await flush();
        carry = data;
      }
      for (const s of sending) await s.done;
    } catch {
      // The client went away (its stream was reset or the connection closed).
    } finally {
      fs.closeSync(fd);
      sink.end();
    }
  }

  private nextGrowth(): Promise<void> {
    if (!this.grew) {
      let wake!: () => void;
      const wait = new Promise<void>((r) => (wake = r));
      this.grew = { wait, wake };
    }
    return this.grew.wait;
  }

  private wakeFollowers(): void {
    const g = this.grew;
    this.grew = undefined;
    g?.wake();
  }
}

function readAt(fd: number, buf: Buffer, position: number): Promise<number> {
  return new Promise((resolve, reject) => fs.read(fd, buf, 0, buf.length, position, (err, n) => (err ? reject(err) : resolve(n))));
}
