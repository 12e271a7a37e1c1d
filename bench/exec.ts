// make bench-exec: side-by-side, in one run, on this machine.
//  (a) `fractal-host exec -- true` round trip vs spawning `true` locally,
//      plus the protocol's own round trip on an open connection (library);
//  (b) stdout throughput of `exec -- head -c 1G /dev/zero` vs the same bytes
//      (head's stdout) over a plain loopback TCP socket;
//  (c) exec and wait on an open connection through a relay that holds every
//      chunk 10 ms each way (a link 20 ms away): the wait sent with the exec
//      (what the CLI does) against the wait sent once the exec is answered.
// Run with bun. Prints medians and ratios; absolute times mean little here.
import net from "node:net";
import path from "node:path";
import { AgentClient } from "../host/client.js";
import "../test/helpers/test-key.js";
import { compared, env as benchEnv, median, record } from "./report.js";

const ROOT = path.resolve(import.meta.dir, "..");
const AGENT = path.join(ROOT, "build/fractal-agent");
const HOST = path.join(ROOT, "build/fractal-host");
const GIB = 1 << 30;
const RUNS = Number(process.env.BENCH_RUNS ?? 40);
const HELLO = path.join(ROOT, "build/bench/hello");
/** (c): each way's delay, so the round trip is twice this. */
const RELAY_MS = 10;
const FAR_RUNS = 20;

/** A Bun hello-world compiled as fractal-host is (Makefile: --compile --bytecode, same target): the floor of a Bun CLI's start. */
function buildHello(): void {
  const r = Bun.spawnSync([process.execPath, "build", "--compile", "--bytecode", "--target=bun-linux-x64-baseline", path.join(ROOT, "bench/hello.ts"), "--outfile", HELLO], { stdout: "ignore", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`building the hello-world baseline failed: ${r.stderr.toString()}`);
}

/**
 * Drops a binary's pages from the page cache (coreutils dd: posix_fadvise
 * DONTNEED over the whole file). A file just written stays cached as it was
 * written, in large folios, and starts ~1.5 ms faster than the same bytes read
 * back on demand: the hello-world, built afresh each run, beat a CLI built an
 * hour before by that alone (1.46x, against 1.19x with both fresh). Evicting
 * both puts them where an installed binary is: read back by page faults.
 */
function evictFromPageCache(file: string): void {
  const r = Bun.spawnSync(["dd", `if=${file}`, "iflag=nocache", "count=0"], { stdout: "ignore", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`dropping ${file} from the page cache failed: ${r.stderr.toString()}`);
}

if (process.argv[2] === "raw-client") {
  // Child mode: read a TCP stream to the end and discard it, like the CLI writing to /dev/null.
  const sock = net.connect(Number(process.argv[3]), "127.0.0.1");
  let n = 0;
  sock.on("data", (b) => (n += b.length));
  sock.on("end", () => process.exit(n === GIB ? 0 : 1));
} else {
  await main();
}

async function time(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

async function startAgent(): Promise<{ url: string; kill: () => void }> {
  // TCP wants a key: the run's test key (FRACTAL_KEY, set by test-key.js),
  // so the figures include authentication as a user would pay it.
  const p = Bun.spawn([AGENT, "--listen", "tcp://127.0.0.1:0", "--authorized-keys", `${process.env.FRACTAL_KEY}.pub`], { stderr: "pipe", stdout: "ignore" });
  const reader = p.stderr.getReader();
  let log = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`agent exited: ${log}`);
    log += new TextDecoder().decode(value);
    const m = /listening on (\S+)/.exec(log);
    if (m) {
      void (async () => {
        while (!(await reader.read()).done);
      })();
      return { url: m[1]!, kill: () => p.kill(9) };
    }
  }
}

async function rawServer(): Promise<{ port: number; close: () => void }> {
  const srv = net.createServer(async (s) => {
    const p = Bun.spawn(["head", "-c", String(GIB), "/dev/zero"], { stdout: "pipe" });
    const r = p.stdout.getReader();
    for (;;) {
      const { value, done } = await r.read();
      if (done) break;
      if (!s.write(value)) await new Promise((res) => s.once("drain", res));
    }
    s.end();
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  return { port: (srv.address() as net.AddressInfo).port, close: () => srv.close() }; // TCP: AddressInfo
}

/** Relays TCP to `port`, holding each chunk `ms` in each direction, in order: a distant link. */
async function delayingRelay(port: number, ms: number): Promise<{ url: string; close: () => void }> {
  const srv = net.createServer((c) => {
    const u = net.connect(port, "127.0.0.1");
    for (const s of [c, u]) {
      s.setNoDelay(true);
      s.on("error", () => {});
    }
    c.on("data", (b) => void setTimeout(() => u.write(b), ms));
    u.on("data", (b) => void setTimeout(() => c.write(b), ms));
    c.on("close", () => void setTimeout(() => u.destroy(), ms));
    u.on("close", () => void setTimeout(() => c.destroy(), ms));
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  return { url: `tcp://127.0.0.1:${(srv.address() as net.AddressInfo).port}`, close: () => srv.close() }; // TCP: AddressInfo
}

async function run(argv: string[]): Promise<void> {
  const p = Bun.spawn(argv, { stdout: "ignore", stderr: "inherit", env: process.env });
  const code = await p.exited;
  if (code !== 0) throw new Error(`${argv.join(" ")} exited ${code}`);
}

async function main(): Promise<void> {
  buildHello();
  evictFromPageCache(HELLO);
  evictFromPageCache(HOST);
  const agent = await startAgent();
  const raw = await rawServer();
  try {
    const client = await AgentClient.connect(agent.url);
    const local: number[] = [];
    const lib: number[] = [];
    const cli: number[] = [];
    const cliStart: number[] = [];
    const hello: number[] = [];
    // Interleave so drift on a noisy machine hits every column alike.
    for (let i = 0; i < RUNS; i++) {
      local.push(await time(() => run(["true"])));
      lib.push(
        await time(async () => {
          const p = await client.exec({ argv: ["true"] });
          await p.wait();
        }),
      );
      cli.push(await time(() => run([HOST, "--connect", agent.url, "exec", "--", "true"])));
      cliStart.push(await time(() => run([HOST, "--help"])));
      hello.push(await time(() => run([HELLO])));
    }
    client.close();

    const ours: number[] = [];
    const base: number[] = [];
    for (let i = 0; i < 3; i++) {
      ours.push(await time(() => run([HOST, "--connect", agent.url, "exec", "--", "head", "-c", String(GIB), "/dev/zero"])));
      base.push(await time(() => run([process.execPath, import.meta.path, "raw-client", String(raw.port)])));
    }
    const relay = await delayingRelay(Number(new URL(agent.url).port), RELAY_MS);
    const far = await AgentClient.connect(relay.url);
    const ahead: number[] = [];
    const after: number[] = [];
    for (let i = 0; i < FAR_RUNS; i++) {
      for (const [waitAhead, xs] of [[true, ahead], [false, after]] as const) {
        xs.push(
          await time(async () => {
            const p = await far.exec({ argv: ["true"], waitAhead });
            await p.wait();
          }),
        );
      }
    }
    far.close();
    relay.close();

    const mbps = (ms: number) => GIB / (ms / 1000) / 1e6;
    const best = (xs: number[]) => Math.min(...xs);

    const m = { local: median(local), lib: median(lib), cli: median(cli), cliStart: median(cliStart), hello: median(hello) };
    console.log(`bench-exec (${RUNS} runs each, medians; accel=none, agent on loopback)`);
    console.log("(a) round trip of `true`");
    console.log(`  local spawn of true                  ${m.local.toFixed(2)} ms`);
    console.log(`  exec via library, open connection    ${m.lib.toFixed(2)} ms   overhead ${(m.lib - m.local).toFixed(2)} ms  ratio ${(m.lib / m.local).toFixed(2)}x`);
    console.log(`  fractal-host exec -- true (CLI)      ${m.cli.toFixed(2)} ms   overhead ${(m.cli - m.local).toFixed(2)} ms  ratio ${(m.cli / m.local).toFixed(2)}x`);
    console.log(`    of which CLI start (--help alone)  ${m.cliStart.toFixed(2)} ms; connect+exec+wait ${(m.cli - m.cliStart).toFixed(2)} ms`);
    console.log(`  Bun hello-world binary               ${m.hello.toFixed(2)} ms   CLI start ratio ${(m.cliStart / m.hello).toFixed(2)}x (target <= 1.3x)`);
    console.log("(b) stdout throughput, 1 GiB of head -c /dev/zero (best of 3)");
    console.log(`  plain loopback TCP socket            ${mbps(best(base)).toFixed(0)} MB/s`);
    console.log(`  fractal-host exec > /dev/null        ${mbps(best(ours)).toFixed(0)} MB/s   ratio ${(best(base) / best(ours)).toFixed(2)}x of raw`);
    console.log(`(c) exec -- true and its exit on an open connection, ${2 * RELAY_MS} ms round trip away (${FAR_RUNS} runs each)`);
    console.log(`  wait sent once the exec is answered  ${median(after).toFixed(2)} ms`);
    console.log(`  wait sent with the exec              ${median(ahead).toFixed(2)} ms   ratio ${(median(after) / median(ahead)).toFixed(2)}x faster`);
    console.log(`RESULT exec_overhead_ms=${(m.lib - m.local).toFixed(2)} cli_overhead_ms=${(m.cli - m.local).toFixed(2)} throughput_ratio=${(best(base) / best(ours)).toFixed(2)}`);
    const e = benchEnv("none (agent on the host)", "loopback TCP");
    record("exec", [
      compared("exec -- true via the CLI", "ms", m.cli, "local spawn of true", m.local, true, e),
      compared("exec -- true, open connection", "ms", m.lib, "local spawn of true", m.local, true, e),
      compared("CLI start (--help)", "ms", m.cliStart, "Bun hello-world binary", m.hello, true, e, "time <= 1.3x hello-world's"),
      compared("stdout throughput, 1 GiB", "MB/s", mbps(best(ours)), "plain TCP socket", mbps(best(base)), false, e),
      compared("exec -- true, open connection, wait sent with the exec", "ms", median(ahead), "wait sent once the exec is answered", median(after), true, benchEnv("none (agent on the host)", `loopback TCP through a relay holding each chunk ${RELAY_MS} ms each way`)),
    ]);
  } finally {
    agent.kill();
    raw.close();
  }
}
