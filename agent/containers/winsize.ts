// Resizing a container's terminal. The runtime (crun run/exec -t without a
// console socket) owns the PTY master and copies bytes, but does not pass
// window-size changes on; so the agent sets the size on the slave end, which
// it reaches as the container process's stdio through /proc/PID/fd. The
// process's pid comes from the runtime's --pid-file.
import fs from "node:fs";
import { setWindowSize } from "../../proto/libc.js";

export function resizeByPidFile(pidFile: string, cols: number, rows: number): void {
  let pid: number;
  try {
    pid = Number(fs.readFileSync(pidFile, "utf8").trim());
  } catch {
    return; // not started yet: the size it starts with is the one requested
  }
  for (const n of [0, 1, 2]) {
    let fd: number;
    try {
      fd = fs.openSync(`/proc/${pid}/fd/${n}`, fs.constants.O_RDWR | fs.constants.O_NOCTTY);
    } catch {
      continue;
    }
    try {
      setWindowSize(fd, cols, rows);
      return;
    } catch {
      // not a terminal (redirected); try the next one
    } finally {
      fs.closeSync(fd);
    }
  }
}
