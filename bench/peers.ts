// make bench-peers: fractal against what a user would pick instead, in one
// VM and one run. The guest's initramfs (build/peers.cpio) also carries
// dropbear (Debian's dropbear-bin); the host talks to both over the same
// link, QEMU's user-mode network (TCP), and to fractal also over
// virtio-serial. For each: the `true` round trip of a fresh client (median
// and p99), stdout throughput of 256 MiB, and the latency of a 1-byte echo
// through `cat` in an open session.
//
// u-root's cpu/cpud is not measured: github.com/u-root/cpu is not served by
// the Go module proxy this project may use (every version, listed or exact,
// is refused), so it cannot be pinned in go.mod and built.
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import "../test/helpers/test-key.js";
import { freePort } from "../host/vm/manager.js";
import { compared, env as benchEnv, quantile, record, type Figure } from "./report.js";

const ROOT = path.resolve(import.meta.dir, "..");
const HOST = path.join(ROOT, "build/fractal-host");
const RUNS = Number(process.env.BENCH_RUNS ?? 200);
const BYTES = Number(process.env.BENCH_BYTES ?? 256 << 20);
const state = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-peers-"));
const cliEnv = { ...process.env, FRACTAL_STATE: state } as Record<string, string>;

function run(argv: string[], input?: string): { code: number; out: string; err: string } {
  const r = spawnSync(argv[0]!, argv.slice(1), { env: cliEnv, input, maxBuffer: 64 << 20 });
  return { code: r.status ?? -1, out: r.stdout?.toString() ?? "", err: r.stderr?.toString() ?? "" };
}

/** Times one client process from spawn to exit. */
function timed(argv: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const p = spawn(argv[0]!, argv.slice(1), { env: cliEnv, stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    p.stderr.on("data", (b: Buffer) => (err += b));
    p.on("exit", (code) => (code === 0 ? resolve(performance.now() - t0) : reject(new Error(`${argv.join(" ")}: exit ${code}: ${err}`))));
  });
}

/** Seconds to read `bytes` of a remote `head -c` on stdout. */
function throughput(argv: string[], bytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const p = spawn(argv[0]!, argv.slice(1), { env: cliEnv, stdio: ["ignore", "pipe", "inherit"] });
    let n = 0;
    p.stdout.on("data", (b: Buffer) => (n += b.length));
    p.on("exit", () => (n === bytes ? resolve((performance.now() - t0) / 1000) : reject(new Error(`${argv[0]}: got ${n} of ${bytes} bytes`))));
  });
}

/** Round trips of one byte through a remote `cat` in an open session, in ms. */
async function echo(argv: string[], runs: number): Promise<number[]> {
  const p = spawn(argv[0]!, argv.slice(1), { env: cliEnv, stdio: ["pipe", "pipe", "inherit"] });
  let waiting: (() => void) | undefined;
  p.stdout.on("data", () => waiting?.());
  const rtt = async () => {
    const t0 = performance.now();
    await new Promise<void>((r) => {
      waiting = r;
      p.stdin.write("x");
    });
    return performance.now() - t0;
  };
  for (let i = 0; i < 5; i++) await rtt(); // session set up, paths warm
  const out: number[] = [];
  for (let i = 0; i < runs; i++) out.push(await rtt());
  p.stdin.end();
  await new Promise((r) => p.on("exit", r));
  return out;
}

async function main(): Promise<void> {
  const sshPort = await freePort();
  const agentPort = await freePort();
  const boot = run([HOST, "boot", "--name", "peers", "--initrd", path.join(ROOT, "build/peers.cpio"), "--tcp", String(agentPort), "--forward", `${sshPort}:22`, "--detach"]);
  if (boot.code !== 0) throw new Error(`boot failed: ${boot.err}`);
  const rec = JSON.parse(fs.readFileSync(path.join(state, "peers", "vm.json"), "utf8")) as { accel: string; endpoints: { tcp: string; serial: string } };
  try {
    // dropbear, set up through fractal: a root account, the bench's key, host keys made on first use.
    // The shell is named by its real command: u-root's multi-call binary finds
    // its command from argv[0], and dropbear passes only the shell's base name.
    const key = path.join(state, "id_ed25519");
    spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key]);
    const setup = run(
      [HOST, "--connect", rec.endpoints.tcp, "exec", "-i", "--", "sh", "-c",
        "mkdir -p /etc/dropbear /root/.ssh && echo root:x:0:0:root:/root:/bbin/gosh > /etc/passwd && echo root:x:0: > /etc/group && echo /bbin/gosh > /etc/shells && cat > /root/.ssh/authorized_keys && chmod 700 /root/.ssh && chmod 600 /root/.ssh/authorized_keys && dropbear -R -s -p 22"],
      fs.readFileSync(`${key}.pub`, "utf8"),
    );
    if (setup.code !== 0) throw new Error(`dropbear set-up failed: ${setup.err}`);
    const ssh = (...cmd: string[]) => ["ssh", "-q", "-i", key, "-p", String(sshPort), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "root@127.0.0.1", ...cmd];
    const fractal = (url: string, ...cmd: string[]) => [HOST, "--connect", url, "exec", ...cmd];
    for (let i = 0; i < 30 && run(ssh("true")).code !== 0; i++) await new Promise((r) => setTimeout(r, 1000));
    const guestKernel = run(fractal(rec.endpoints.tcp, "--", "uname", "-r")).out.trim();
    const tcpEnv = benchEnv(rec.accel, "user-mode network TCP", guestKernel);
    const serialEnv = benchEnv(rec.accel, "virtio-serial", guestKernel);

    // (a) `true` round trip of a fresh client: interleaved, so drift hits both alike.
    const t = { fractal: [] as number[], serial: [] as number[], ssh: [] as number[] };
    for (let i = 0; i < RUNS; i++) {
      t.fractal.push(await timed(fractal(rec.endpoints.tcp, "--", "true")));
      t.ssh.push(await timed(ssh("true")));
      t.serial.push(await timed(fractal(rec.endpoints.serial, "--", "true")));
    }
    // (b) 256 MiB on stdout.
    // Absolute paths: dropbear gives its sessions a PATH without u-root's /bbin.
    const head = ["/bbin/head", "-c", String(BYTES), "/dev/zero"];
    const tp = {
      fractal: await throughput(fractal(rec.endpoints.tcp, "--", ...head), BYTES),
      ssh: await throughput(ssh(...head), BYTES),
      serial: await throughput(fractal(rec.endpoints.serial, "--", ...head), BYTES),
    };
    // (c) 1-byte echo in an open session.
    const e = {
      fractal: await echo(fractal(rec.endpoints.tcp, "-i", "--", "/bbin/cat"), RUNS),
      ssh: await echo(ssh("/bbin/cat"), RUNS),
      serial: await echo(fractal(rec.endpoints.serial, "-i", "--", "/bbin/cat"), RUNS),
    };
    const mibs = (s: number) => BYTES / 1048576 / s;
    const figures: Figure[] = [
      compared("true round trip, median", "ms", quantile(t.fractal, 0.5), "ssh (dropbear)", quantile(t.ssh, 0.5), true, tcpEnv, "advantage >= 10x"),
      compared("true round trip, p99", "ms", quantile(t.fractal, 0.99), "ssh (dropbear)", quantile(t.ssh, 0.99), true, tcpEnv),
      compared("stdout throughput, 256 MiB", "MiB/s", mibs(tp.fractal), "ssh (dropbear)", mibs(tp.ssh), false, tcpEnv, "advantage >= 2x"),
      compared("1-byte echo, median", "ms", quantile(e.fractal, 0.5), "ssh (dropbear)", quantile(e.ssh, 0.5), true, tcpEnv),
      compared("1-byte echo, p99", "ms", quantile(e.fractal, 0.99), "ssh (dropbear)", quantile(e.ssh, 0.99), true, tcpEnv),
      compared("true round trip, median", "ms", quantile(t.serial, 0.5), "ssh (dropbear) over TCP", quantile(t.ssh, 0.5), true, serialEnv),
      compared("stdout throughput, 256 MiB", "MiB/s", mibs(tp.serial), "ssh (dropbear) over TCP", mibs(tp.ssh), false, serialEnv),
      compared("1-byte echo, median", "ms", quantile(e.serial, 0.5), "ssh (dropbear) over TCP", quantile(e.ssh, 0.5), true, serialEnv),
    ];
    record("peers", figures);
    console.log(`bench-peers (accel=${rec.accel}, ${os.cpus().length} host CPUs, guest kernel ${guestKernel}, ${RUNS} runs; u-root cpu: not measured, module not served)`);
    for (const f of figures) {
      console.log(`  ${`${f.figure} [${f.env.transport}]`.padEnd(58)} fractal ${f.fractal.toFixed(1).padStart(8)} ${f.unit.padEnd(5)} ${f.peer!.name} ${f.peer!.value.toFixed(1).padStart(8)}   fractal ${f.advantage!.toFixed(1)}x better${f.target ? ` (target ${f.target})` : ""}`);
    }
  } finally {
    run([HOST, "vm", "stop", "peers"]);
    fs.rmSync(state, { recursive: true, force: true });
  }
}

await main();
