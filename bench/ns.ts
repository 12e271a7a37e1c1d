// make bench-ns: in one VM run, compare a host tool started in the guest
// through the backmount of the host's root (exec --namespace) with the same
// tool started on the host (start-up latency), and reading a 256 MiB host
// file through the backmount with reading it on the host (throughput).
// Prints the ratios and the 9p mount options in use.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { AgentClient } from "../host/client.js";
import { preferAgentImage } from "../host/vm/kernel.js";
import { bootVm, stopVm } from "../host/vm/manager.js";
import { hostRootShare } from "../host/vm/qemu.js";
import { compared, env as benchEnv, median, record } from "./report.js";

const ROOT = path.resolve(import.meta.dir, "..");
const BUILD = path.join(ROOT, "build");
const RUNS = Number(process.env.BENCH_RUNS ?? 15);
const SIZE = 256 << 20;
process.env.FRACTAL_STATE = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-bench-ns-"));
const dataDir = fs.mkdtempSync(path.join(os.homedir(), ".fractal-bench-ns-"));
const file = path.join(dataDir, "big.bin");
const NS = ["/usr", "/lib", "/lib64", "/bin", "/etc"].map((p) => ({ local: p, remote: p }));


async function hostRun(argv: string[]): Promise<number> {
  const t0 = performance.now();
  const p = Bun.spawn(argv, { stdout: "ignore", stderr: "ignore" });
  await p.exited;
  return performance.now() - t0;
}

async function main(): Promise<void> {
  // Random bytes, written once: the guest cannot shortcut zero pages.
  const chunk = new Uint8Array(1 << 20);
  const fd = fs.openSync(file, "w");
  for (let i = 0; i < SIZE / chunk.length; i++) {
    crypto.getRandomValues(chunk.subarray(0, 65536));
    chunk.copyWithin(65536, 0, 65536 * 15);
    fs.writeSync(fd, chunk);
  }
  fs.closeSync(fd);
  const rec = await bootVm({
    name: "bench-ns",
    kernel: path.join(BUILD, "kernel/vmlinux"),
    ...preferAgentImage(path.join(BUILD, "initramfs.cpio")),
    memMiB: 1024,
    cpus: 2,
    tcp: "none",
    shares: [hostRootShare(true)],
    virtiofs: [],
  });
  const c = await AgentClient.connect(rec.endpoints.serial);
  // ns null: run in the guest's own root, no namespace.
  const guest = async (argv: string[], ns: typeof NS | null = NS): Promise<{ ms: number; out: string; code: number }> => {
    const t0 = performance.now();
    const p = await c.exec({ argv, namespace: ns ?? undefined });
    let out = "";
    p.onStdout((b) => void (out += Buffer.from(b).toString()));
    const st = await p.wait();
    return { ms: performance.now() - t0, out, code: st.kind === "exited" ? st.code : 128 + st.signal };
  };
  try {
    const tool = ["sha256sum", "/etc/hostname"];
    await guest(tool); // first run pulls the binary and libraries into the guest's page cache
    const g: number[] = [];
    const h: number[] = [];
    const trueInGuest: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      g.push((await guest(tool)).ms);
      h.push(await hostRun(tool));
      trueInGuest.push((await guest(["true"])).ms);
    }
    const ns = [...NS, { local: "/data", remote: dataDir }];
    const dd = ["dd", "if=/data/big.bin", "of=/dev/null", "bs=1M"];
    const cold = await guest(["sh", "-c", `echo 3 > /proc/sys/vm/drop_caches; exec ${dd.join(" ")}`], ns);
    const warm = await guest(dd, ns);
    const hostRead: number[] = [];
    for (let i = 0; i < 3; i++) hostRead.push(await hostRun(["dd", `if=${file}`, "of=/dev/null", "bs=1M"]));
    const mounts = (await guest(["cat", "/proc/mounts"], null)).out;
    const opts = mounts.split("\n").find((l) => l.split(" ")[1] === "/host") ?? "(not found)";
    const mbps = (ms: number) => (SIZE / 1e6 / (ms / 1000)).toFixed(0);
    console.log(`bench-ns (accel=${rec.accel}, ${os.cpus().length} host CPUs, ${RUNS} runs, medians)`);
    console.log("(a) start-up latency of a host tool (sha256sum /etc/hostname)");
    console.log(`  on the host                           ${median(h).toFixed(1)} ms`);
    console.log(`  in the guest via --namespace          ${median(g).toFixed(1)} ms   ratio ${(median(g) / median(h)).toFixed(1)}x`);
    console.log(`    \`true\` in the same namespace        ${median(trueInGuest).toFixed(1)} ms (exec round trip, helper, namespace set-up, dynamic loading)`);
    console.log("(b) reading a 256 MiB host file");
    console.log(`  on the host (page cache)              ${mbps(median(hostRead))} MB/s`);
    console.log(`  in the guest, cold (9p)               ${mbps(cold.ms)} MB/s   ratio ${(median(hostRead) / cold.ms).toFixed(2)}x`);
    console.log(`  in the guest, warm (guest page cache) ${mbps(warm.ms)} MB/s   ratio ${(median(hostRead) / warm.ms).toFixed(2)}x`);
    console.log(`  9p mount: ${opts}`);
    console.log(`RESULT startup_ratio=${(median(g) / median(h)).toFixed(1)} read_cold_ratio=${(median(hostRead) / cold.ms).toFixed(2)} read_warm_ratio=${(median(hostRead) / warm.ms).toFixed(2)}`);
    const e = benchEnv(rec.accel, "virtio-serial + 9p");
    record("ns", [
      compared("host tool start-up via --namespace", "ms", median(g), "same tool on the host", median(h), true, e),
      compared("read 256 MiB host file, cold", "ms", cold.ms, "on the host", median(hostRead), true, e),
      compared("read 256 MiB host file, warm", "ms", warm.ms, "on the host", median(hostRead), true, e),
    ]);
  } finally {
    c.close();
    await stopVm("bench-ns");
    fs.rmSync(dataDir, { recursive: true, force: true });
    fs.rmSync(process.env.FRACTAL_STATE!, { recursive: true, force: true });
  }
}

await main();
