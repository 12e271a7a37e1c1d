// A Link over a character device (a UART, a virtio-serial port, a host tty):
// reads and writes on one file descriptor. Such links can tear, so they are
// marked for resynchronisation.
import fs from "node:fs";
import type { Link } from "./link.js";

export function fileLink(fd: number, description: string): Link {
  const closeCbs: ((err?: Error) => void)[] = [];
  const drainCbs: (() => void)[] = [];
  let closed = false;
  let lastError: Error | undefined;
  const input = fs.createReadStream("", { fd, autoClose: false, highWaterMark: 64 * 1024 });
  const output = fs.createWriteStream("", { fd, autoClose: false });
  const finish = () => {
    if (closed) return;
    closed = true;
    input.destroy();
    output.destroy();
    try {
      fs.closeSync(fd);
    } catch {
      // already closed
    }
    for (const cb of closeCbs) cb(lastError);
  };
  input.on("error", (e) => {
    lastError = e;
    finish();
  });
  output.on("error", (e) => {
    lastError = e;
    finish();
  });
  // EOF: on a virtio-serial port it means the host side disconnected.
  input.on("end", finish);
  output.on("drain", () => {
    for (const cb of drainCbs) cb();
  });
  return {
    description,
    resync: true,
    write(chunks) {
      if (closed) return true;
      let ok = true;
      for (const c of chunks) ok = output.write(c);
      return ok;
    },
    close: finish,
    onData: (cb) => void input.on("data", (b) => cb(b as Buffer)),
    onDrain: (cb) => void drainCbs.push(cb),
    onClose: (cb) => void closeCbs.push(cb),
  };
}
