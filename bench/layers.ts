// make bench-layers: in one VM run, a three-layer image (busybox, ~500
// files, a small top layer)
//  (a) stacked into a running container with `layer add`, against
//  (b) `run --rm IMAGE true` of the same image,
// interleaved, both with the image's layers already unpacked in the guest,
// on one connection. Also reported: `layer rm`. Target: add < 2x run.
import { gunzipSync } from "node:zlib";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import tar from "tar-stream";
import { AgentClient, exitStatusOf } from "../host/client.js";
import { writeImage } from "../host/image/oci-layout.js";
import { preferAgentImage } from "../host/vm/kernel.js";
import { bootVm, stopVm } from "../host/vm/manager.js";
import { imageStoreShare } from "../host/vm/qemu.js";
import { ImageStore } from "../oci/store.js";
import { compared, env as benchEnv, median, record } from "./report.js";

const ROOT = path.resolve(import.meta.dir, "..");
const BUILD = path.join(ROOT, "build");
const RUNS = Number(process.env.BENCH_RUNS ?? 10);
process.env.FRACTAL_STATE = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-bench-layers-"));
const store = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-bench-layers-store-"));

/** A tar of `n` small files under usr/share/tool/. */
async function filesLayer(n: number, tag: string): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on("data", (c: unknown) => void chunks.push(c as Buffer)); // tar-stream emits Buffers
  const done = new Promise<void>((r) => pack.on("end", () => r()));
  const mtime = new Date(0);
  pack.entry({ name: `usr/share/${tag}/`, type: "directory", mode: 0o755, mtime });
  for (let i = 0; i < n; i++) pack.entry({ name: `usr/share/${tag}/f${i}`, mode: 0o644, mtime }, Buffer.alloc(512 + (i % 7) * 1024, i));
  pack.entry({ name: `usr/local/bin/${tag}`, mode: 0o755, mtime }, Buffer.from(`#!/bin/sh\necho ${tag}\n`));
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

async function main(): Promise<void> {
  fs.cpSync(path.join(BUILD, "images"), store, { recursive: true });
  const bb = new ImageStore(store).resolve("busybox");
  const busyboxTar = gunzipSync(fs.readFileSync(bb.layers[0]!.source.file));
  writeImage(store, { ref: "three:v1", layers: [busyboxTar, await filesLayer(500, "kit"), await filesLayer(20, "top")], config: { Cmd: ["sh"] } });

  const rec = await bootVm({
    name: "bench-layers",
    kernel: path.join(BUILD, "kernel/vmlinux"),
    ...preferAgentImage(path.join(BUILD, "initramfs.cpio")),
    memMiB: 1024,
    cpus: 2,
    tcp: "none",
    shares: [imageStoreShare(store)],
    virtiofs: [],
  });
  const c = await AgentClient.connect(rec.endpoints.serial);
  try {
    await c.unpackImage("busybox");
    await c.unpackImage("three:v1");
    await c.run({ image: "busybox", command: ["sleep", "100000"], name: "app", detach: true });
    const runOnce = async () => {
      const t0 = performance.now();
      const r = await c.run({ image: "three:v1", command: ["true"], remove: true });
      if (exitStatusOf(await r.proc!.wait()) !== 0) throw new Error("run --rm three:v1 true failed");
      return performance.now() - t0;
    };
    const addOnce = async () => {
      const t0 = performance.now();
      const l = await c.layerAdd("app", "three:v1");
      const add = performance.now() - t0;
      const t1 = performance.now();
      await c.layerRemove("app", l.id);
      return { add, rm: performance.now() - t1 };
    };
    await runOnce();
    await addOnce();
    const runs: number[] = [];
    const adds: number[] = [];
    const rms: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      runs.push(await runOnce());
      const a = await addOnce();
      adds.push(a.add);
      rms.push(a.rm);
    }
    const v = await c.version();
    const ratio = median(adds) / median(runs);
    console.log(`bench-layers (accel=${rec.accel}, 2 vCPUs, 1 GiB guest, kernel ${v.kernel}, ${os.cpus().length} host CPUs, transport virtio-serial; medians of ${RUNS}, layers unpacked)`);
    console.log(`  run --rm three:v1 true (3 layers)        ${median(runs).toFixed(0)} ms`);
    console.log(`  layer add three:v1 into a running one    ${median(adds).toFixed(0)} ms   ratio ${ratio.toFixed(2)}x (target < 2x)`);
    console.log(`  layer rm of it                           ${median(rms).toFixed(0)} ms`);
    console.log(`RESULT add_over_run=${ratio.toFixed(2)}`);
    record("layers", [compared("layer add of a 3-layer image", "ms", median(adds), "run --rm of that image", median(runs), true, benchEnv(rec.accel, "virtio-serial", v.kernel), "time < 2x run's")]);
  } finally {
    c.close();
    await stopVm("bench-layers");
    fs.rmSync(store, { recursive: true, force: true });
    fs.rmSync(process.env.FRACTAL_STATE!, { recursive: true, force: true });
  }
}

await main();
