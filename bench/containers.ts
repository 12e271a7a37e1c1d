// make bench-containers: in one VM run,
//  (a) start-to-exit of `run --rm busybox true` against crun run directly on
//      an already prepared bundle (same client, same connection);
//  (b) guest-unpack of one gzip layer against busybox tar extracting the
//      same blob in the guest;
//  (c) guest memory per extra idle container, with 20 running;
//  (d) the agent's resident set, idle after all of the above, against a Bun hello-world's compiled the same way, in the
//      same guest, and against a floor: a Bun program that uses the runtime features the agent does
//      (bench/runtime-floor.ts), none of fractal's code.
// Prints the figures, the ratios and the targets.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import tar from "tar-stream";
import { hex } from "../oci/digest.js";
import { ImageStore } from "../oci/store.js";
import { IDLE_WORKER_MS } from "../oci/blob-stream.js";
import { AgentClient, exitStatusOf } from "../host/client.js";
import { writeImage } from "../host/image/oci-layout.js";
import { preferAgentImage } from "../host/vm/kernel.js";
import { bootVm, stopVm } from "../host/vm/manager.js";
import { imageStoreShare } from "../host/vm/qemu.js";
import { IMAGE_STORE, NS_HELPER } from "../proto/guest.js";
import { compared, env as benchEnv, median, record } from "./report.js";

const ROOT = path.resolve(import.meta.dir, "..");
const BUILD = path.join(ROOT, "build");
const RUNS = Number(process.env.BENCH_RUNS ?? 10);
const UNPACK_RUNS = Number(process.env.BENCH_UNPACK_RUNS ?? 3);
const GUEST_STORE = IMAGE_STORE;
process.env.FRACTAL_STATE = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-bench-ctr-"));
const store = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-bench-store-"));


/** A layer shaped like a real one: ~2000 files of log-spread sizes (half random, half zeros), dirs, symlinks. */
async function benchLayer(): Promise<{ tar: Buffer; files: number; bytes: number }> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on("data", (c: unknown) => void chunks.push(c as Buffer)); // tar-stream emits Buffers
  const done = new Promise<void>((r) => pack.on("end", () => r()));
  let seed = 42;
  // Math.imul: a float product drops the low bits, and the sequence fell
  // into a 419-value cycle that made the "random" half compress 90:1.
  const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  let bytes = 0;
  let files = 0;
  const mtime = new Date(0);
  for (let d = 0; d < 40; d++) {
    pack.entry({ name: `usr/share/bench/d${d}/`, type: "directory", mode: 0o755, mtime });
    for (let f = 0; f < 50; f++) {
      const size = Math.floor(64 * Math.pow(2, rand() * 13)); // 64 B .. 512 KiB
      const data = Buffer.alloc(size);
      for (let i = 0; i < size / 2; i += 4) data.writeUInt32LE((rand() * 2 ** 32) >>> 0, i & ~3);
      pack.entry({ name: `usr/share/bench/d${d}/f${f}`, mode: 0o644, mtime }, data);
      bytes += size;
      files++;
    }
    pack.entry({ name: `usr/share/bench/l${d}`, type: "symlink", linkname: `d${d}/f0`, mtime });
  }
  pack.finalize();
  await done;
  return { tar: Buffer.concat(chunks), files, bytes };
}

async function main(): Promise<void> {
  fs.cpSync(path.join(BUILD, "images"), store, { recursive: true });
  const layer = await benchLayer();
  writeImage(store, { ref: "bench:layer", layers: [layer.tar], config: { Cmd: ["sh"] } });
  const hostStore = new ImageStore(store);
  const benchImg = hostStore.resolve("bench:layer");
  const bbImg = hostStore.resolve("busybox");
  const blobInGuest = `${GUEST_STORE}/blobs/sha256/${hex(benchImg.layers[0]!.digest!)}`;
  const cacheDir = `/run/fractal/layers/${hex(benchImg.layers[0]!.diffId)}`;
  const busybox = `/run/fractal/layers/${hex(bbImg.layers[0]!.diffId)}/bin/busybox`;

  // (d)'s baselines, compiled by the Makefile as the agent is (same flags, same target).
  const baselines = path.join(BUILD, "baselines");

  const rec = await bootVm({
    name: "bench-ctr",
    kernel: path.join(BUILD, "kernel/vmlinux"),
    ...preferAgentImage(path.join(BUILD, "initramfs.cpio")),
    memMiB: 1024,
    cpus: 2,
    tcp: "none",
    shares: [imageStoreShare(store), { hostDir: baselines, tag: "baselines", readonly: true, guestPath: "/run/bench-baselines" }],
    virtiofs: [],
  });
  const c = await AgentClient.connect(rec.endpoints.serial);
  const guest = async (argv: string[]): Promise<{ ms: number; out: string; code: number }> => {
    const t0 = performance.now();
    const p = await c.exec({ argv });
    let out = "";
    p.onStdout((b) => void (out += Buffer.from(b).toString()));
    const code = exitStatusOf(await p.wait());
    return { ms: performance.now() - t0, out, code };
  };
  const must = async (argv: string[]) => {
    const r = await guest(argv);
    if (r.code !== 0) throw new Error(`${argv.join(" ")} exited ${r.code}`);
    return r;
  };
  try {
    await c.unpackImage("busybox");
    // (a) A prepared bundle: a finished container's config and mounted rootfs.
    const proto = await c.run({ image: "busybox", command: ["true"], name: "proto" });
    await proto.proc!.wait();
    const bundle = `/run/fractal/containers/${proto.id}`;
    const runOurs = async () => {
      const t0 = performance.now();
      const r = await c.run({ image: "busybox", command: ["true"], remove: true });
      const st = await r.proc!.wait();
      if (exitStatusOf(st) !== 0) throw new Error("run --rm busybox true failed");
      return performance.now() - t0;
    };
    let n = 0;
    const runCrun = async () => (await must([NS_HELPER, "-pivotable", "--", "/bin/crun", "run", "--bundle", bundle, `direct${n++}`])).ms;
    for (let i = 0; i < 2; i++) {
      await runOurs();
      await runCrun();
    }
    const ours: number[] = [];
    const direct: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      ours.push(await runOurs());
      direct.push(await runCrun());
    }
    await c.remove("proto");

    // (b) The same blob, ours then busybox tar, alternating; the cache is
    // emptied before each of ours so every run really unpacks.
    const unpackOurs: number[] = [];
    const unpackTar: number[] = [];
    await must(["cat", blobInGuest]); // into the guest's page cache for both
    for (let i = 0; i < UNPACK_RUNS; i++) {
      await must(["rm", "-rf", cacheDir]);
      const t0 = performance.now();
      await c.unpackImage("bench:layer");
      unpackOurs.push(performance.now() - t0);
      await must(["mkdir", "-p", "/run/bench-tar"]);
      unpackTar.push((await must([busybox, "tar", "-xzf", blobInGuest, "-C", "/run/bench-tar"])).ms);
      await must(["rm", "-rf", "/run/bench-tar"]);
    }

    // (c) Memory per idle container.
    const avail = async () => Number(/MemAvailable:\s+(\d+)/.exec((await must(["cat", "/proc/meminfo"])).out)![1]) / 1024;
    const before = await avail();
    for (let i = 0; i < 20; i++) await c.run({ image: "busybox", command: ["sleep", "100000"], name: `idle${i}`, detach: true });
    await new Promise((r) => setTimeout(r, 2000));
    const after = await avail();
    const running = (await c.containers(false)).length;
    for (let i = 0; i < 20; i++) await c.remove(`idle${i}`, true);

    // (d) The agent idle (after every request above, past the time its
    // unpack workers wait for more work), then the hello-world beside it.
    await new Promise((r) => setTimeout(r, IDLE_WORKER_MS + 2000));
    /** A field of a /proc/PID/status text, in MiB. */
    const mibOf = (status: string) => (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+)`, "m").exec(status)?.[1]) / 1024;
    const agentMiB = mibOf((await must(["sh", "-c", "cat /proc/$(pidof fractal-agent)/status"])).out);
    const agentRss = agentMiB("VmRSS");
    const helloMiB = mibOf((await must(["/run/bench-baselines/hello-idle"])).out);
    const helloRss = helloMiB("VmRSS");
    const floorMiB = mibOf((await must(["/run/bench-baselines/runtime-floor"])).out);
    const floorRss = floorMiB("VmRSS");

    const v = await c.version();
    const mb = layer.bytes / 1e6;
    const ratioRun = median(ours) / median(direct);
    const ratioUnpack = median(unpackTar) / median(unpackOurs);
    const perCtr = (before - after) / 20;
    console.log(`bench-containers (accel=${rec.accel}, 2 vCPUs, 1 GiB guest, kernel ${v.kernel}, ${os.cpus().length} host CPUs, transport virtio-serial; medians)`);
    console.log(`(a) start to exit of \`true\` (${RUNS} runs each)`);
    console.log(`  crun run on a prepared bundle        ${median(direct).toFixed(0)} ms`);
    console.log(`  fractal run --rm busybox true        ${median(ours).toFixed(0)} ms   ratio ${ratioRun.toFixed(2)}x (target <= 1.2x)`);
    console.log(`(b) unpacking one gzip layer (${layer.files} files, ${mb.toFixed(1)} MB, ${(benchImg.layers[0]!.size / 1e6).toFixed(1)} MB gzipped, ${UNPACK_RUNS} runs each)`);
    console.log(`  busybox tar -xzf                     ${median(unpackTar).toFixed(0)} ms  ${(mb / (median(unpackTar) / 1000)).toFixed(1)} MB/s`);
    console.log(`  fractal guest-unpack (tar-stream)    ${median(unpackOurs).toFixed(0)} ms  ${(mb / (median(unpackOurs) / 1000)).toFixed(1)} MB/s   ratio ${ratioUnpack.toFixed(2)}x of tar's throughput (target >= 0.7x)`);
    console.log(`(c) memory per idle container (${running} running busybox sleep)`);
    console.log(`  MemAvailable ${before.toFixed(0)} MiB -> ${after.toFixed(0)} MiB: ${perCtr.toFixed(2)} MiB each (target <= 3 MiB)`);
    console.log("(d) resident memory, idle, same guest (the agent after (a) to (c))");
    // The binary's own pages count too: the agent's sit in the initramfs
    // (shmem), the hello-world's come over 9p (file); anonymous memory is
    // what each process adds.
    const parts = (k: (f: string) => number) => `anonymous ${k("RssAnon").toFixed(1)}, file ${k("RssFile").toFixed(1)}, shmem ${k("RssShmem").toFixed(1)} MiB`;
    console.log(`  Bun hello-world                      ${helloRss.toFixed(1)} MiB   (${parts(helloMiB)})`);
    console.log(`  fractal-agent                        ${agentRss.toFixed(1)} MiB   (${parts(agentMiB)})   ratio ${(agentRss / helloRss).toFixed(2)}x (target <= 1.5x); anonymous only ${(agentMiB("RssAnon") / helloMiB("RssAnon")).toFixed(2)}x`);
    console.log(`  Bun runtime floor (agent's features) ${floorRss.toFixed(1)} MiB   (${parts(floorMiB)})   agent ${(agentRss / floorRss).toFixed(2)}x the floor, the floor ${(floorRss / helloRss).toFixed(2)}x hello-world`);
    console.log(`RESULT run_ratio=${ratioRun.toFixed(2)} unpack_ratio=${ratioUnpack.toFixed(2)} mib_per_container=${perCtr.toFixed(2)} rss_ratio=${(agentRss / helloRss).toFixed(2)}`);
    const e = benchEnv(rec.accel, "virtio-serial", v.kernel);
    record("containers", [
      compared("run --rm busybox true", "ms", median(ours), "crun run, prepared bundle", median(direct), true, e, "time <= 1.2x crun's"),
      compared("unpack a 128 MB gzip layer", "ms", median(unpackOurs), "busybox tar -xzf", median(unpackTar), true, e, "advantage >= 0.7x"),
      { figure: "memory per idle container", unit: "MiB", fractal: perCtr, lowerIsBetter: true, target: "<= 3 MiB", env: e },
      compared("agent resident set, idle", "MiB", agentRss, "Bun hello-world, same guest", helloRss, true, e, "<= 1.5x hello-world's"),
      compared("agent resident set, idle", "MiB", agentRss, "Bun program using the agent's runtime features (floor)", floorRss, true, e),
    ]);
  } finally {
    c.close();
    await stopVm("bench-ctr");
    fs.rmSync(store, { recursive: true, force: true });
    fs.rmSync(process.env.FRACTAL_STATE!, { recursive: true, force: true });
  }
}

await main();
