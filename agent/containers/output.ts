// A container's output: every chunk is appended to a log file (for `logs`
// and late `attach`) and passed to the clients attached right now. Records
// are [stream byte][u32 length][bytes], so stdout and stderr replay apart.
import fs from "node:fs";

export type OutKind = 1 | 2;

export interface OutputSink {
  stdout(chunk: Uint8Array): Promise<void>;
  stderr(chunk: Uint8Array): Promise<void>;
  end(): void;
}

export class OutputLog {
  private readonly fd: number;
  private readonly sinks = new Set<OutputSink>();
  private ended = false;

  constructor(readonly file: string) {
    this.fd = fs.openSync(file, "a+");
  }

  /** Appends and forwards one chunk; resolves once attached clients took it (which paces the container). */
  async write(kind: OutKind, chunk: Uint8Array): Promise<void> {
    const head = Buffer.alloc(5);
    head[0] = kind;
    head.writeUInt32BE(chunk.length, 1);
    fs.writeSync(this.fd, head);
    fs.writeSync(this.fd, chunk);
    const sends = [...this.sinks].map((s) => (kind === 1 ? s.stdout(chunk) : s.stderr(chunk)).catch(() => this.sinks.delete(s)));
    await Promise.all(sends);
  }

  /**
   * Connects a client: first what was logged (when `logs`), then live output
   * until the container exits (when `follow`). Reading the file and joining
   * the live set happen in one turn of the event loop, so nothing is missed
   * or sent twice.
   */
  attach(sink: OutputSink, logs: boolean, follow: boolean): void {
    if (logs) {
      const data = fs.readFileSync(this.file);
      for (let i = 0; i + 5 <= data.length; ) {
        const len = data.readUInt32BE(i + 1);
        const chunk = data.subarray(i + 5, i + 5 + len);
        void (data[i] === 1 ? sink.stdout(chunk) : sink.stderr(chunk)).catch(() => {});
        i += 5 + len;
      }
    }
    if (follow && !this.ended) this.sinks.add(sink);
    else sink.end();
  }

  detach(sink: OutputSink): void {
    this.sinks.delete(sink);
  }

  /** The container exited and its output is complete. */
  close(): void {
    if (this.ended) return;
    this.ended = true;
    for (const s of this.sinks) s.end();
    this.sinks.clear();
    fs.closeSync(this.fd);
  }
}
