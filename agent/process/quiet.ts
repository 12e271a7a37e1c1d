// A short helper command (crun kill/delete, fractal-ns -dirs/-graft) run to
// completion: its exit code and what it said on stderr, for the caller's
// error message.
import { spawn } from "node:child_process";

export function runQuiet(file: string, args: string[]): Promise<{ code: number; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(file, args, { stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    p.stderr.on("data", (b: Buffer) => (err += b.toString()));
    p.on("error", (e) => resolve({ code: -1, err: e.message }));
    p.on("exit", (code) => resolve({ code: code ?? -1, err: err.trim() }));
  });
}
