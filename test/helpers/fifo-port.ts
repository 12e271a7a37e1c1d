// A FIFO standing in for a virtio-serial port: read EOF while no writer (no
// host) is there, reports the hang-up once one has come and gone, and signals
// SIGIO on bytes. For the file-link helpers, run with bun.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

export function fifoPort(): { fd: number; write: (s: string) => void; remove: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-fifo-"));
  const fifo = path.join(dir, "port");
  Bun.spawnSync(["mkfifo", fifo]);
  return {
    fd: fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK),
    // A writer that comes, writes and leaves: a host's short session.
    write: (s) => {
      const w = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
      fs.writeSync(w, s);
      fs.closeSync(w);
    },
    remove: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}
