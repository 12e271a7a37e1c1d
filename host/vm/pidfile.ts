// Helper daemons a VM owns (swtpm, passt) are found by their pid files.
import fs from "node:fs";

/** The pid a helper wrote, or undefined while there is none yet. */
export function pidIn(file: string): number | undefined {
  try {
    const pid = Number(fs.readFileSync(file, "utf8").trim());
    return pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Sends SIGTERM to the pid in `file` if that process is still `program` (a pid reused since is left alone). */
export function stopByPidFile(file: string, program: string): void {
  const pid = pidIn(file);
  try {
    if (pid !== undefined && fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(program)) process.kill(pid, "SIGTERM");
  } catch {
    // gone already
  }
}
