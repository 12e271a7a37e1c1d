// bench-containers' second baseline for the agent's memory: a Bun program
// that uses, once each, the runtime features the agent serves with, and none
// of fractal's code. A Bun binary is one mapped file, and every feature a
// process runs faults in that feature's share of the runtime's native code;
// the hello-world touches the least of it. Between hello-world and this floor
// lies what Bun costs a program that does the agent's work; above the floor,
// what the agent's own code and heap add.
// The features, and what in the agent uses them:
//   node:net server and client, unix socket   listeners, the shim's socket
//   Bun.listen / Bun.connect                  proto/bun-link.ts
//   Bun.spawn (stdin a FileSink)              commands
//   node:child_process                        helpers (crun, fractal-ns)
//   node:crypto: ed25519 verify, sha256       keys; digests
//   bun:ffi on libc                           pipe2 and other calls Bun lacks
//   DecompressionStream (gzip)                layer unpack
//   node:stream                               tar-stream's pipelines
//   a Worker                                  sha256 off the main thread
// Like hello-idle.ts, it then settles and prints /proc/self/status.
// (No top-level await: --bytecode builds CommonJS.)
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { dlopen, FFIType } from "bun:ffi";

async function useEach(dir: string): Promise<void> {
  const keys = crypto.generateKeyPairSync("ed25519");
  const signature = crypto.sign(null, Buffer.from("challenge"), keys.privateKey);
  if (!crypto.verify(null, Buffer.from("challenge"), keys.publicKey, signature)) throw new Error("ed25519 verify failed");
  crypto.createHash("sha256").update("x").digest("hex");

  const libc = dlopen("libc.so.6", { getpid: { args: [], returns: FFIType.i32 } });
  if (libc.symbols.getpid() !== process.pid) throw new Error("ffi getpid disagrees");

  const gz = Bun.gzipSync(new Uint8Array(1 << 16));
  const plain = new Blob([gz]).stream().pipeThrough(new DecompressionStream("gzip"));
  let n = 0;
  for await (const chunk of plain) n += chunk.length;
  if (n !== 1 << 16) throw new Error(`gunzip gave ${n} bytes`);

  const child = Bun.spawn(["cat"], { stdin: "pipe", stdout: "pipe", stderr: "inherit" });
  child.stdin.write("through cat\n");
  await child.stdin.end();
  await new Response(child.stdout).text();
  await child.exited;
  await new Promise<void>((resolve, reject) => spawn("true", { stdio: "ignore" }).on("exit", () => resolve()).on("error", reject));
  await new Promise<void>((resolve) => Readable.from(["a", "b"]).on("data", () => {}).on("end", resolve));

  await new Promise<void>((resolve) => {
    const worker = new Worker(URL.createObjectURL(new Blob(["postMessage(1)"])));
    worker.onmessage = () => (worker.terminate(), resolve());
  });

  const nodeSock = path.join(dir, "node.sock");
  const server = net.createServer((s) => s.pipe(s));
  await new Promise<void>((resolve) => server.listen(nodeSock, resolve));
  await new Promise<void>((resolve) => {
    const c = net.connect(nodeSock, () => c.write("x"));
    c.on("data", () => (c.end(), resolve()));
  });
  server.close();

  const bunSock = path.join(dir, "bun.sock");
  const listener = Bun.listen({ unix: bunSock, socket: { data: (s, b) => void s.write(b) } });
  await new Promise<void>((resolve) => {
    void Bun.connect({ unix: bunSock, socket: { open: (s) => void s.write("x"), data: (s) => (s.end(), resolve()) } });
  });
  listener.stop(true);
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "runtime-floor-"));
useEach(dir)
  .then(() => {
    fs.rmSync(dir, { recursive: true, force: true });
    // As hello-idle.ts: settle, then report.
    setTimeout(() => console.log(fs.readFileSync("/proc/self/status", "utf8")), 2000);
  })
  .catch((err: Error) => {
    console.error(`runtime-floor: ${err.message}`);
    process.exit(1);
  });
