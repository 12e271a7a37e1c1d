// make bench-api: in one VM run, `true` exec'd
//  (a) through the REST API of a real `fractal-host serve` (POST /exec, a
//      kept-alive HTTP connection), against the same exec through the
//      client library on one open connection to the same agent endpoint,
//      interleaved, one at a time;
//  (b) 100 at once, both ways;
// and the server's RSS before and after. Prints the figures and ratios.
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
// The run's key (build/test-key), never the user's: boot would make one in ~/.config.
import "../test/helpers/test-key.js";
import { AgentClient, exitStatusOf } from "../host/client.js";
import { guestKeyArgs } from "../host/cli/keys.js";
import { preferAgentImage } from "../host/vm/kernel.js";
import { bootVm, stopVm, vmEndpoint } from "../host/vm/manager.js";
import { compared, env as benchEnv, median, record } from "./report.js";

const ROOT = path.resolve(import.meta.dir, "..");
const BUILD = path.join(ROOT, "build");
const RUNS = Number(process.env.BENCH_RUNS ?? 40);
const CONCURRENT = 100;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-bench-api-"));
process.env.FRACTAL_STATE = path.join(dir, "vms");

const rssMiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))![1]) / 1024;

async function main(): Promise<void> {
  const keyFile = process.env.FRACTAL_KEY || undefined;
  const rec = await bootVm({
    name: "bench-api",
    kernel: path.join(BUILD, "kernel/vmlinux"),
    ...preferAgentImage(path.join(BUILD, "initramfs.cpio")),
    memMiB: 1024,
    cpus: 2,
    tcp: 0,
    shares: [],
    virtiofs: [],
    append: await guestKeyArgs([], keyFile),
    keyFile,
  });
  const server = spawn(path.join(BUILD, "fractal-host"), ["serve", "--listen", "127.0.0.1:0", "--token-file", path.join(dir, "token")], { stdio: ["ignore", "pipe", "inherit"] });
  let printed = "";
  server.stdout!.on("data", (b: Buffer) => (printed += b.toString()));
  while (!/console: (\S+)\/login\?token=(\S+)/.test(printed)) await new Promise((r) => setTimeout(r, 50));
  const [, base, token] = /console: (\S+)\/login\?token=(\S+)/.exec(printed)!;
  const lib = await AgentClient.connect(vmEndpoint(rec), { keyFile });
  try {
    const viaLib = async () => {
      const t0 = performance.now();
      const p = await lib.exec({ argv: ["true"] });
      if (exitStatusOf(await p.wait()) !== 0) throw new Error("true failed");
      return performance.now() - t0;
    };
    const viaRest = async () => {
      const t0 = performance.now();
      const r = await fetch(`${base}/v1/vms/bench-api/exec`, { method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: '{"argv":["true"]}' });
      const j = (await r.json()) as { exitCode?: number };
      if (r.status !== 200 || j.exitCode !== 0) throw new Error(`REST exec: ${r.status} ${JSON.stringify(j)}`);
      return performance.now() - t0;
    };
    for (let i = 0; i < 3; i++) {
      await viaLib();
      await viaRest();
    }
    const rssBefore = rssMiB(server.pid!);
    const lib1: number[] = [];
    const rest1: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      lib1.push(await viaLib());
      rest1.push(await viaRest());
    }
    const burst = async (f: () => Promise<number>) => {
      const t0 = performance.now();
      const each = await Promise.all(Array.from({ length: CONCURRENT }, f));
      return { wall: performance.now() - t0, median: median(each) };
    };
    const libN = await burst(viaLib);
    const restN = await burst(viaRest);
    const rssAfter = rssMiB(server.pid!);
    const v = await lib.version();
    const ratio1 = median(rest1) / median(lib1);
    const ratioN = restN.wall / libN.wall;
    console.log(`bench-api (accel=${rec.accel}, 2 vCPUs, kernel ${v.kernel}, ${os.cpus().length} host CPUs; agent over TCP for both; medians of ${RUNS})`);
    console.log(`  exec true, client library, one connection   ${median(lib1).toFixed(1)} ms`);
    console.log(`  exec true, REST POST /exec                  ${median(rest1).toFixed(1)} ms   ratio ${ratio1.toFixed(2)}x`);
    console.log(`  ${CONCURRENT} at once, client library             ${libN.wall.toFixed(0)} ms wall (median ${libN.median.toFixed(0)} ms each)`);
    console.log(`  ${CONCURRENT} at once, REST                       ${restN.wall.toFixed(0)} ms wall (median ${restN.median.toFixed(0)} ms each)   ratio ${ratioN.toFixed(2)}x`);
    console.log(`  server RSS ${rssBefore.toFixed(0)} MiB before, ${rssAfter.toFixed(0)} MiB after`);
    console.log(`RESULT rest_over_lib=${ratio1.toFixed(2)} concurrent_ratio=${ratioN.toFixed(2)} server_rss_mib=${rssAfter.toFixed(0)}`);
    const e = benchEnv(rec.accel, "tcp", v.kernel);
    record("api", [
      compared("exec true through the REST API", "ms", median(rest1), "client library, one connection", median(lib1), true, e),
      compared(`${CONCURRENT} concurrent REST execs (wall)`, "ms", restN.wall, "client library", libN.wall, true, e),
      { figure: "serve RSS after the bursts", unit: "MiB", fractal: rssAfter, lowerIsBetter: true, env: e },
    ]);
  } finally {
    lib.close();
    server.kill("SIGTERM");
    await stopVm("bench-api");
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

await main();
