// A process's stdio through the FIFOs containerd's client made (ctr, CRI):
// the shim reads stdin from one and writes stdout and stderr into the
// others. Every FIFO is opened read-write, so opening never waits for the
// other side and a client that goes away and comes back (ctr attach, a
// containerd restart) finds the same pipe; stdin's end-of-file is the
// client's CloseIO, not the FIFO's. Writes wait for room (Bun's FileSink on
// a pipe), so a client that stops reading holds its own container back
// through flow control, never the shim.
import fs from "node:fs";
import type { RemoteProcess } from "../../client.js";

type Sink = ReturnType<ReturnType<typeof Bun.file>["writer"]>;

const OPEN = fs.constants.O_RDWR | fs.constants.O_NONBLOCK;

export interface StdioPaths {
  stdin: string;
  stdout: string;
  stderr: string;
}

function openFifo(p: string): number {
  return p === "" ? -1 : fs.openSync(p, OPEN);
}

export class ProcessIo {
  private readonly fds: number[] = [];
  private readonly sinks: Sink[] = [];
  private stdinReader?: { read(): Promise<{ done: boolean; value?: Uint8Array }>; cancel(): Promise<void> };
  private stdinDone?: Promise<void>;
  private lastInput = 0;

  /** Connects the process: its output into the FIFOs, the stdin FIFO into it. */
  constructor(
    paths: StdioPaths,
    private readonly proc: RemoteProcess,
    terminal: boolean,
  ) {
    proc.onStdout(this.writer(paths.stdout));
    if (!terminal) proc.onStderr(this.writer(paths.stderr));
    if (paths.stdin === "") return;
    const fd = openFifo(paths.stdin);
    this.fds.push(fd);
    const reader = Bun.file(fd).stream().getReader();
    this.stdinReader = reader;
    this.stdinDone = (async () => {
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done || !value) break;
          this.lastInput = Date.now();
          await proc.write(value);
        }
      } catch {
        // cancelled by CloseIO, or the process is gone
      }
    })();
  }

  private writer(p: string): (chunk: Uint8Array) => void | Promise<void> {
    if (p === "") return () => {};
    const fd = openFifo(p);
    this.fds.push(fd);
    const sink: Sink = Bun.file(fd).writer();
    this.sinks.push(sink);
    return async (chunk) => {
      sink.write(chunk);
      await sink.flush();
    };
  }

  /**
   * CloseIO: the client wrote everything and closed its end. What it wrote
   * last may still sit in the pipe, so reading goes on until the pipe has
   * been quiet for a moment, then the process's stdin is closed.
   */
  async closeStdin(): Promise<void> {
    if (!this.stdinReader) return;
    const reader = this.stdinReader;
    this.stdinReader = undefined;
    while (Date.now() - this.lastInput < 100) await new Promise((r) => setTimeout(r, 50));
    await new Promise((r) => setTimeout(r, 50));
    await reader.cancel().catch(() => {});
    await this.stdinDone;
    this.proc.closeStdin();
  }

  /** Ends the pumps and closes the FIFOs (Bun's streams leave descriptors they were given open). */
  close(): void {
    void this.stdinReader?.cancel().catch(() => {});
    for (const s of this.sinks.splice(0)) void Promise.resolve(s.end()).catch(() => {});
    for (const fd of this.fds.splice(0)) {
      try {
        fs.closeSync(fd);
      } catch {
        // already closed
      }
    }
  }
}
