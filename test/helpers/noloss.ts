// No-loss check: N bytes of seeded random data into `exec -i -- cat` through
// the compiled CLI, read back with random pauses on the reading side (so
// credit runs out and flow control has to hold bytes, not drop them), and
// the SHA-256 of what went in compared with what came out.
import { spawn } from "node:child_process";
import { createCipheriv, createHash } from "node:crypto";
import { HOST_BIN } from "./agent.js";

export interface NoLossResult {
  sent: string;
  received: string;
  bytes: number;
  pauses: number;
  code: number | null;
  stderr: string;
  seconds: number;
}

/** A fast seeded byte stream: AES-CTR over zeros. */
function keystream(seed: number): (n: number) => Buffer {
  const key = createHash("sha256").update(`noloss-${seed}`).digest();
  const c = createCipheriv("aes-256-ctr", key, Buffer.alloc(16));
  return (n) => c.update(Buffer.alloc(n));
}

export function catThrough(connectArgs: string[], bytes: number, seed = 1, env: Record<string, string> = {}): Promise<NoLossResult> {
  const t0 = performance.now();
  const gen = keystream(seed);
  const pauseRng = keystream(seed + 1);
  const inHash = createHash("sha256");
  const outHash = createHash("sha256");
  let got = 0;
  let pauses = 0;
  let stderr = "";
  const proc = spawn(HOST_BIN, [...connectArgs, "exec", "-i", "--", "cat"], { stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, ...env } });
  proc.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
  proc.stdout.on("data", (b: Buffer) => {
    outHash.update(b);
    got += b.length;
    const r = pauseRng(2);
    // About one chunk in 64 stops the reader for 0-255 ms.
    if (r[0]! < 4) {
      pauses++;
      proc.stdout.pause();
      setTimeout(() => proc.stdout.resume(), r[1]!);
    }
  });
  const writer = (async () => {
    const CHUNK = 1 << 20;
    for (let left = bytes; left > 0; ) {
      const piece = gen(Math.min(CHUNK, left));
      left -= piece.length;
      inHash.update(piece);
      if (!proc.stdin.write(piece)) await new Promise<void>((r) => proc.stdin.once("drain", () => r()));
    }
    proc.stdin.end();
  })();
  proc.stdin.on("error", () => {});
  return new Promise((resolve, reject) => {
    proc.on("error", reject);
    proc.on("close", async (code) => {
      await writer.catch(() => {});
      resolve({ sent: inHash.digest("hex"), received: outHash.digest("hex"), bytes: got, pauses, code, stderr, seconds: (performance.now() - t0) / 1000 });
    });
  });
}
