// make bench-boot: in one run, boot the same kernel with (a) fractal's
// initramfs until the agent answers a ping, the way `boot` does (the archive
// without the agent, the agent on its erofs image) and self-contained, and
// (b) a minimal initramfs whose init only prints a marker; print them and
// the ratios. Both ways QEMU
// can start that kernel are measured: unpacked at its PVH entry (the
// default) and as a bzImage through SeaBIOS. Then say where fractal's extra
// time goes: the compressed variant of the image, and the guest-side
// timeline (kernel to /init, agent start, module loading, ready).
// With swtpm and OVMF installed, also boot --tpm (UEFI firmware measuring the
// boot into a TPM, firmware time included) and time an attestation.
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { AgentClient } from "../host/client.js";
import { attestVm } from "../host/attest/vm.js";
import { cpuFor, machineFor } from "../host/vm/arch.js";
import { preferAgentImage, type GuestImage } from "../host/vm/kernel.js";
import { bootVm, stopVm } from "../host/vm/manager.js";
import { ovmfFiles, qemuBinary, usableAccel } from "../host/vm/qemu.js";
import { stateRoot } from "../host/vm/state.js";
import { compared, env as benchEnv, median, record } from "./report.js";

const ROOT = path.resolve(import.meta.dir, "..");
const BUILD = path.join(ROOT, "build");
const BZIMAGE = path.join(BUILD, "kernel/vmlinuz");
const VMLINUX = path.join(BUILD, "kernel/vmlinux");
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
process.env.FRACTAL_STATE = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-bench-"));

/** Boots the marker initramfs; ms until its line reaches the console. */
function markerBoot(accel: string, kernel: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const q = spawn(qemuBinary(), [
      "-machine", machineFor("x86_64", accel), "-cpu", cpuFor("x86_64", accel), "-m", "1024", "-smp", "2",
      "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
      "-kernel", kernel, "-initrd", path.join(BUILD, "marker.cpio"),
      "-append", "console=ttyS0 quiet panic=-1", "-serial", "stdio",
    ]);
    let out = "";
    q.stdout.on("data", (b: Buffer) => {
      out += b.toString();
      if (out.includes("FRACTAL-MARKER")) {
        resolve(performance.now() - t0);
        q.kill("SIGKILL");
      }
    });
    q.on("exit", () => reject(new Error(`marker guest exited without its marker:\n${out}`)));
  });
}

async function fractalBoot(kernel: string, guest: GuestImage, name: string, tpm = false): Promise<{ ms: number; log: string; dmesg: string; attestMs?: number }> {
  const t0 = performance.now();
  const rec = await bootVm({ name, kernel, ...guest, memMiB: 1024, cpus: 2, tcp: "none", shares: [], virtiofs: [], tpm });
  const ms = performance.now() - t0;
  let attestMs: number | undefined;
  if (tpm) {
    const a0 = performance.now();
    await attestVm(name, path.join(BUILD, "expected-measurements.json"));
    attestMs = performance.now() - a0;
  }
  const c = await AgentClient.connect(rec.endpoints.serial);
  const grab = async (argv: string[]) => {
    const p = await c.exec({ argv });
    let s = "";
    p.onStdout((b) => void (s += Buffer.from(b).toString()));
    await p.wait();
    return s;
  };
  const log = await grab(["cat", "/run/fractal/agent.log"]);
  const dmesg = await grab(["dmesg"]);
  c.close();
  await stopVm(name);
  return { ms, log, dmesg, attestMs };
}

/** Where one boot's time went, by guest uptime: the kernel's log, the supervisor's stages, the agent's. */
function timeline(log: string, dmesg: string): string {
  const at = (re: RegExp, s: string) => {
    const v = s.match(re)?.[1];
    return v === undefined ? undefined : Number(v);
  };
  const span = (a?: number, b?: number) => (a !== undefined && b !== undefined ? (b - a).toFixed(2) : "?");
  const init = at(/\[\s*([\d.]+)\] Run \/init/, dmesg);
  const unpack = at(/\[\s*([\d.]+)\] Trying to unpack rootfs/, dmesg);
  const unpacked = at(/\[\s*([\d.]+)\] Freeing initrd memory/, dmesg);
  const supervisor = at(/supervisor started at ([\d.]+) s/, log);
  const image = at(/agent's image mounted at ([\d.]+) s/, log);
  const exec = at(/agent exec'd at ([\d.]+) s/, log);
  const agent = at(/agent started at uptime ([\d.]+)/, log);
  const runtime = at(/Bun's runtime started at ([\d.]+) s/, log);
  const code = at(/the agent's modules at ([\d.]+) s/, log);
  const mods = log.match(/kernel modules in (\d+) ms/)?.[1] ?? "?";
  const ready = at(/ready at uptime ([\d.]+)/, log);
  return [
    `initramfs unpacked in ${span(unpack, unpacked)} s`,
    `/init at ${init?.toFixed(2) ?? "?"} s`,
    `u-root init to the supervisor ${span(init, supervisor)} s`,
    ...(image !== undefined ? [`agent's image mounted ${span(supervisor, image)} s later`] : []),
    `exec to the agent's first line ${span(exec, agent)} s` +
      (runtime !== undefined ? ` (exec to Bun's clock ${span(exec, runtime)} s, Bun's start to the agent's first module ${span(runtime, code)} s, the agent's modules evaluated in ${span(code, agent)} s)` : ""),
    `modules ${mods} ms beside it`,
    `ready at ${ready?.toFixed(2) ?? "?"} s (guest uptime)`,
  ].join("; ");
}

const accel = usableAccel(path.dirname(stateRoot()));
const raw = path.join(BUILD, "initramfs.cpio");
const lite = preferAgentImage(raw);
if (!lite.agentImage) throw new Error("bench-boot: build/initramfs-lite.cpio and build/agent.erofs are missing (make build)");
const gz = path.join(os.tmpdir(), "fractal-initramfs.cpio.gz");
const gzStart = performance.now();
const z = Bun.spawnSync(["gzip", "-6", "-n", "-c", raw], { stdout: Bun.file(gz) });
if (z.exitCode !== 0) throw new Error("gzip failed");
const gzipMs = performance.now() - gzStart;

const marker: number[] = [];
const fractal: number[] = [];
const whole: number[] = [];
const markerBz: number[] = [];
const fractalBz: number[] = [];
const fractalGz: number[] = [];
const withTpm: number[] = [];
const attests: number[] = [];
const tpmReady = fs.existsSync(ovmfFiles().code) && Bun.which("swtpm") !== null && Bun.which("swtpm_setup") !== null;
let last = { log: "", dmesg: "" };
let lastWhole = { log: "", dmesg: "" };
for (let i = 0; i < RUNS; i++) {
  marker.push(await markerBoot(accel, VMLINUX));
  const f = await fractalBoot(VMLINUX, lite, `bench${i}`);
  fractal.push(f.ms);
  last = f;
  const w = await fractalBoot(VMLINUX, { initrd: raw }, `benchwhole${i}`);
  whole.push(w.ms);
  lastWhole = w;
  markerBz.push(await markerBoot(accel, BZIMAGE));
  fractalBz.push((await fractalBoot(BZIMAGE, { initrd: raw }, `benchbz${i}`)).ms);
  fractalGz.push((await fractalBoot(VMLINUX, { initrd: gz }, `benchgz${i}`)).ms);
  if (tpmReady) {
    // One VM name: its TPM is made at the first boot and kept, as for a user's VM.
    const t = await fractalBoot(BZIMAGE, { initrd: raw }, "benchtpm", true);
    withTpm.push(t.ms);
    attests.push(t.attestMs!);
  }
}
const mb = (f: string) => (fs.statSync(f).size / 1e6).toFixed(1);
const m = median(marker);
const f = median(fractal);
const wh = median(whole);
const g = median(fractalGz);
const mBz = median(markerBz);
const fBz = median(fractalBz);
console.log(`bench-boot (accel=${accel}, ${os.cpus().length} host CPUs, ${RUNS} runs each, medians)`);
console.log(`  unpacked kernel (${mb(VMLINUX)} MB), entered at its PVH entry:`);
console.log(`  minimal initramfs, marker on console      ${(m / 1000).toFixed(2)} s   (${mb(path.join(BUILD, "marker.cpio"))} MB)`);
console.log(`  fractal, agent on its erofs image, answers ${(f / 1000).toFixed(2)} s   (${mb(lite.initrd)} MB initramfs + ${mb(lite.agentImage)} MB image, virtio-pmem on x86)   ratio ${(f / m).toFixed(2)}x`);
console.log(`  fractal, self-contained initramfs         ${(wh / 1000).toFixed(2)} s   (${mb(raw)} MB uncompressed)   ratio ${(wh / m).toFixed(2)}x`);
console.log(`  same, gzip-compressed initramfs           ${(g / 1000).toFixed(2)} s   (${mb(gz)} MB, gzip took ${(gzipMs / 1000).toFixed(1)} s on the host)   ratio ${(g / m).toFixed(2)}x`);
console.log(`  bzImage (${mb(BZIMAGE)} MB) through SeaBIOS and the kernel's decompressor:`);
console.log(`  minimal initramfs, marker on console      ${(mBz / 1000).toFixed(2)} s   (${(mBz / m).toFixed(2)}x the unpacked kernel's)`);
console.log(`  fractal, self-contained, answers ping     ${(fBz / 1000).toFixed(2)} s   (${(fBz / wh).toFixed(2)}x the unpacked kernel's)   ratio ${(fBz / mBz).toFixed(2)}x`);
if (tpmReady) {
  const t = median(withTpm);
  console.log(`  boot --tpm: OVMF + swtpm, agent answers  ${(t / 1000).toFixed(2)} s   (firmware included)   ratio ${(t / mBz).toFixed(2)}x minimal via bzImage, ${(t / fBz).toFixed(2)}x direct bzImage boot; then attest ${(median(attests) / 1000).toFixed(2)} s`);
} else {
  console.log("  boot --tpm: not measured (needs swtpm, swtpm-tools and ovmf)");
}
console.log(`  where the time goes (last boot with the erofs image): ${timeline(last.log, last.dmesg)}`);
console.log(`  where the time goes (last self-contained boot): ${timeline(lastWhole.log, lastWhole.dmesg)}`);
console.log(`RESULT boot_ratio=${(f / m).toFixed(2)} whole_ratio=${(wh / m).toFixed(2)} bzimage_ratio=${(fBz / mBz).toFixed(2)} gzip_ratio=${(g / m).toFixed(2)}`);
record("boot", [
  compared("boot until the agent answers", "s", f / 1000, "minimal initramfs (marker)", m / 1000, true, benchEnv(accel, "virtio-serial"), "time <= 1.25x the minimal's"),
  compared("boot until the agent answers", "s", f / 1000, "self-contained initramfs", wh / 1000, true, benchEnv(accel, "virtio-serial")),
  compared("boot, self-contained initramfs", "s", wh / 1000, "same, bzImage through SeaBIOS", fBz / 1000, true, benchEnv(accel, "virtio-serial")),
  compared("boot, gzip initramfs", "s", g / 1000, "minimal initramfs (marker)", m / 1000, true, benchEnv(accel, "virtio-serial")),
  ...(tpmReady
    ? [
        compared("boot --tpm (OVMF, swtpm)", "s", median(withTpm) / 1000, "direct bzImage boot (SeaBIOS)", fBz / 1000, true, benchEnv(accel, "virtio-serial")),
        compared("attest after boot --tpm", "s", median(attests) / 1000, "boot --tpm", median(withTpm) / 1000, true, benchEnv(accel, "virtio-serial")),
      ]
    : []),
]);
fs.rmSync(process.env.FRACTAL_STATE!, { recursive: true, force: true });
fs.rmSync(gz, { force: true });
