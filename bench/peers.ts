// make bench-peers: fractal against what a user would pick instead, in one
// VM and one run. The guest's initramfs (build/peers.cpio) also carries
// dropbear (Debian's dropbear-bin) and u-root's cpud (built from the peer's
// source in ../shared/peers); the host talks to all three over the same
// link, the VM's user-mode network (TCP; passt, as boot picks when it is
// installed, or QEMU's slirp with BENCH_NET=user), and to fractal also over
// virtio-serial. For each: the `true` round trip of a fresh client (median
// and p99) with fractal's own stages beside it (FRACTAL_TIMING), less the
// guest's own spawn-to-exit of that binary (bench/spawn-time), stdout
// throughput of 256 MiB, and the latency of a 1-byte echo through `cat` in an
// open session (fresh, and again after thousands: fractal's agent is JIT-
// compiled, dropbear is not), beside the floor of any Bun program for it
// (bench/echo-floor.ts, in the same guest over the same link); then a host
// binary run in the guest with the host's files backmounted (cpu -namespace
// against exec --namespace): its start, and a 256 MiB host file read through
// the backmount.
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import type { Readable, Writable } from "node:stream";
import "../test/helpers/test-key.js";
import { freePort } from "../host/vm/manager.js";
import { compared, env as benchEnv, quantile, record, type Figure } from "./report.js";

const ROOT = path.resolve(import.meta.dir, "..");
const HOST = path.join(ROOT, "build/fractal-host");
const CPU = path.join(ROOT, "build/peers/cpu");
// bench/echo-floor.ts, compiled by the Makefile as the agent is.
const FLOOR = path.join(ROOT, "build/baselines/echo-floor");
// bench/spawn-time: the guest's own fork/exec/wait of a program (Go).
const SPAWN_TIME = path.join(ROOT, "build/baselines/spawn-time");
/** Rounds of (a) between two batches of spawn-time, and the batch's size. */
const SPAWN_EVERY = 20;
const SPAWN_BATCH = 10;
/** The guest port bench/echo-floor.ts listens on. */
const FLOOR_GUEST_PORT = 9100;
const RUNS = Number(process.env.BENCH_RUNS ?? 200);
const BYTES = Number(process.env.BENCH_BYTES ?? 256 << 20);
// The agent's JIT tiers its hot paths up only after thousands of events, and
// under TCG compiling is slow: the echo is measured again after this many.
const WARM_ECHOES = Number(process.env.BENCH_WARM_ECHOES ?? 3000);
const NET = process.env.BENCH_NET;
/** Interleaved rounds of the stdout throughput test; the median counts. */
const TP_ROUNDS = Number(process.env.BENCH_TP_ROUNDS ?? 3);
const state = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-peers-"));
// PWD too: cpu takes the working directory from it, and refuses one outside the namespace it builds.
const cliEnv = { ...process.env, FRACTAL_STATE: state, PWD: "/" } as Record<string, string>;

// Every client runs from /: cpu refuses a working directory outside the namespace it builds.
function run(argv: string[], input?: string): { code: number; out: string; err: string } {
  const r = spawnSync(argv[0]!, argv.slice(1), { env: cliEnv, input, maxBuffer: 64 << 20, cwd: "/" });
  return { code: r.status ?? -1, out: r.stdout?.toString() ?? "", err: r.stderr?.toString() ?? "" };
}

/** Times one client process from spawn to exit; one that runs past `limitS` fails the run. */
function timed(argv: string[], limitS = 60): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const p = spawn(argv[0]!, argv.slice(1), { env: cliEnv, stdio: ["ignore", "ignore", "pipe"], cwd: "/" });
    let err = "";
    // A client that hangs fails the run loudly instead of stalling it.
    const timer = setTimeout(() => p.kill("SIGKILL"), limitS * 1000);
    p.stderr.on("data", (b: Buffer) => (err += b));
    p.on("exit", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(performance.now() - t0);
      else reject(new Error(`${argv.join(" ")}: ${signal === "SIGKILL" ? `hung for ${limitS} s` : `exit ${code}`}: ${err}`));
    });
  });
}

/** Seconds to read `bytes` of a remote `head -c` on stdout; rejects with ShortRead when fewer arrived. */
function throughput(argv: string[], bytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const p = spawn(argv[0]!, argv.slice(1), { env: cliEnv, stdio: ["ignore", "pipe", "inherit"], cwd: "/" });
    let n = 0;
    p.stdout.on("data", (b: Buffer) => (n += b.length));
    // "close", not "exit": the process can exit with its last output still unread in the pipe.
    p.on("close", () => (n === bytes ? resolve((performance.now() - t0) / 1000) : reject(new ShortRead(`${argv[0]}: got ${n} of ${bytes} bytes`))));
  });
}

class ShortRead extends Error {}

/** Transfers a peer lost the tail of, by peer: reported, not hidden. */
const shortReads: Record<string, string[]> = {};

/**
 * A peer's round, again after a short read (u-root's cpu has been seen to
 * drop the last ~45 KiB of a session's output), up to three tries: one
 * peer's lost bytes should not end the whole comparison. fractal's own
 * rounds go through throughput() alone, where a lost byte ends the run.
 */
async function peerThroughput(peer: string, argv: string[], bytes: number): Promise<number> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await throughput(argv, bytes);
    } catch (err) {
      if (!(err instanceof ShortRead) || attempt === 3) throw err;
      (shortReads[peer] ??= []).push(err.message);
    }
  }
}

/**
 * Round trips of one byte written to `output` and answered on `input`, in
 * ms, after `warm` untimed ones (session set up, paths warm). A stream that
 * fails or closes first fails the measure.
 */
async function roundTrips(output: Writable, input: Readable, runs: number, warm: number): Promise<number[]> {
  let waiting: { resolve: () => void; reject: (e: Error) => void } | undefined;
  let gone: Error | undefined;
  const fail = (e: Error) => {
    gone ??= e;
    waiting?.reject(gone);
  };
  input.on("data", () => waiting?.resolve());
  input.on("close", () => fail(new Error("closed before the echo")));
  input.on("error", fail);
  output.on("error", fail);
  const rtt = async () => {
    const t0 = performance.now();
    await new Promise<void>((resolve, reject) => {
      if (gone) return reject(gone);
      waiting = { resolve, reject };
      output.write("x");
    });
    return performance.now() - t0;
  };
  for (let i = 0; i < warm; i++) await rtt();
  const out: number[] = [];
  for (let i = 0; i < runs; i++) out.push(await rtt());
  return out;
}

/** Round trips of one byte through a remote `cat` in an open session, in ms, after `warm` untimed ones. */
async function echo(argv: string[], runs: number, warm = 5): Promise<number[]> {
  const p = spawn(argv[0]!, argv.slice(1), { env: cliEnv, stdio: ["pipe", "pipe", "inherit"], cwd: "/" });
  const exited = new Promise((r) => p.on("exit", r));
  const out = await roundTrips(p.stdin, p.stdout, runs, warm);
  p.stdin.end();
  await exited;
  return out;
}

/**
 * echo()'s measure against the floor server, straight over a socket: no
 * client process between (ssh's and fractal's clients are one more local hop,
 * which costs the host microseconds against the guest's milliseconds).
 * Until the guest listens, a user-mode network accepts and then closes.
 */
async function socketEcho(port: number, runs: number, warm = 5): Promise<number[]> {
  const s = net.connect(port, "127.0.0.1");
  s.setNoDelay(true);
  try {
    return await roundTrips(s, s, runs, warm);
  } finally {
    s.destroy();
  }
}

/** Tries a TCP connection until one is accepted (a forwarded port accepts only once the guest listens). */
async function untilListening(port: number, tries: number): Promise<void> {
  for (let i = 0; ; i++) {
    try {
      // The byte echoed back proves the server, not just the forward.
      await socketEcho(port, 0, 1);
      return;
    } catch (err) {
      if (i >= tries) throw new Error(`nothing answers on 127.0.0.1:${port}: ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

/** One fractal-host run with FRACTAL_TIMING: its wall time and its own stages (host/cli/timing.ts). */
function staged(argv: string[]): Promise<{ ms: number; stages: Record<string, number> }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const p = spawn(argv[0]!, argv.slice(1), { env: { ...cliEnv, FRACTAL_TIMING: "1" }, stdio: ["ignore", "ignore", "pipe"], cwd: "/" });
    let err = "";
    p.stderr.on("data", (b: Buffer) => (err += b));
    p.on("exit", (code) => {
      const ms = performance.now() - t0;
      const line = /fractal-host timing \(ms\): (.*)/.exec(err)?.[1];
      if (code !== 0 || !line) return reject(new Error(`${argv.join(" ")}: exit ${code}: ${err}`));
      resolve({ ms, stages: Object.fromEntries(line.split(" ").map((kv) => kv.split("=")).map(([k, v]) => [k!, Number(v)])) });
    });
  });
}

/** The best (lowest) of `n` timings. */
async function best(n: number, f: () => Promise<number>): Promise<number> {
  const xs: number[] = [];
  for (let i = 0; i < n; i++) xs.push(await f());
  return Math.min(...xs);
}

async function main(): Promise<void> {
  const sshPort = await freePort();
  const cpuPort = await freePort();
  const agentPort = await freePort();
  const floorPort = await freePort();
  const boot = run([HOST, "boot", "--name", "peers", "--initrd", path.join(ROOT, "build/peers.cpio"), "--host-root", "--tcp", String(agentPort), "--forward", `${sshPort}:22`, "--forward", `${cpuPort}:17010`, "--forward", `${floorPort}:${FLOOR_GUEST_PORT}`, ...(NET ? ["--net", NET] : []), "--detach"]);
  if (boot.code !== 0) throw new Error(`boot failed: ${boot.err}`);
  const rec = JSON.parse(fs.readFileSync(path.join(state, "peers", "vm.json"), "utf8")) as { accel: string; net?: string; endpoints: { tcp: string; serial: string } };
  let cpud: ReturnType<typeof spawn> | undefined;
  let floor: ReturnType<typeof spawn> | undefined;
  try {
    // dropbear, set up through fractal: a root account, the bench's key, host keys made on first use.
    // The shell is named by its real command: u-root's multi-call binary finds
    // its command from argv[0], and dropbear passes only the shell's base name.
    const key = path.join(state, "id_ed25519");
    spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key]);
    const setup = run(
      [HOST, "--connect", rec.endpoints.tcp, "exec", "-i", "--", "sh", "-c",
        "mkdir -p /etc/dropbear /root/.ssh && echo root:x:0:0:root:/root:/bin/sh > /etc/passwd && echo root:x:0: > /etc/group && echo /bin/sh > /etc/shells && cat > /root/.ssh/authorized_keys && chmod 700 /root/.ssh && chmod 600 /root/.ssh/authorized_keys && dropbear -R -s -p 22"],
      fs.readFileSync(`${key}.pub`, "utf8"),
    );
    if (setup.code !== 0) throw new Error(`dropbear set-up failed: ${setup.err}`);
    // cpud as u-root's docs start it: a host key and the user's public key;
    // it stays in the foreground, so a fractal exec holds it for the run.
    const hostKey = path.join(state, "cpud_host_key");
    spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", hostKey]);
    const keys = run([HOST, "--connect", rec.endpoints.tcp, "exec", "-i", "--", "sh", "-c", "mkdir -p /etc/cpud && cat > /etc/cpud/host_key && chmod 600 /etc/cpud/host_key"], fs.readFileSync(hostKey, "utf8"));
    const pub = run([HOST, "--connect", rec.endpoints.tcp, "exec", "-i", "--", "sh", "-c", "cat > /etc/cpud/key.pub"], fs.readFileSync(`${key}.pub`, "utf8"));
    if (keys.code !== 0 || pub.code !== 0) throw new Error(`cpud set-up failed: ${keys.err}${pub.err}`);
    cpud = spawn(HOST, ["--connect", rec.endpoints.tcp, "exec", "--", "cpud", "-hk", "/etc/cpud/host_key", "-pk", "/etc/cpud/key.pub"], { env: cliEnv, stdio: "ignore" });

    // The floor runs from the host's root, backmounted at /host.
    floor = spawn(HOST, ["--connect", rec.endpoints.tcp, "exec", "--", `/host${FLOOR}`, String(FLOOR_GUEST_PORT), "/bbin/cat"], { env: cliEnv, stdio: "ignore" });
    await untilListening(floorPort, 60);

    const ssh = (...cmd: string[]) => ["ssh", "-q", "-i", key, "-p", String(sshPort), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "root@127.0.0.1", ...cmd];
    // -9p=false -namespace "": no backmount, as ssh and exec have none.
    const cpu = (...cmd: string[]) => [CPU, "-key", key, "-sp", String(cpuPort), "-9p=false", "-namespace", "", "127.0.0.1", ...cmd];
    const cpuNs = (ns: string, ...cmd: string[]) => [CPU, "-key", key, "-sp", String(cpuPort), "-namespace", ns, "127.0.0.1", ...cmd];
    const fractal = (url: string, ...cmd: string[]) => [HOST, "--connect", url, "exec", ...cmd];
    for (let i = 0; i < 30 && run(ssh("true")).code !== 0; i++) await new Promise((r) => setTimeout(r, 1000));
    for (let i = 0; i < 30 && run(cpu("/bbin/true")).code !== 0; i++) await new Promise((r) => setTimeout(r, 1000));
    const guestKernel = run(fractal(rec.endpoints.tcp, "--", "uname", "-r")).out.trim();
    const tcpEnv = benchEnv(rec.accel, `user-mode network TCP (${rec.net === "user" ? "QEMU's slirp" : "passt"})`, guestKernel);
    const serialEnv = benchEnv(rec.accel, "virtio-serial", guestKernel);

    // (a) round trip of the same static binary (u-root's /bbin/true) from a
    // fresh client: interleaved, so drift hits every column alike.
    const TRUE = "/bbin/true";
    const t = { fractal: [] as number[], serial: [] as number[], ssh: [] as number[], cpu: [] as number[] };
    const stages: Record<string, number[]> = {};
    // The guest's own spawn-to-exit of the same binary, from a Go program in
    // the guest, in batches between the rounds: drift hits it as it hits them.
    const guestSpawn: number[] = [];
    const spawnTimes = () => {
      const r = run(fractal(rec.endpoints.serial, "--", `/host${SPAWN_TIME}`, String(SPAWN_BATCH), TRUE));
      if (r.code !== 0) throw new Error(`spawn-time in the guest: exit ${r.code}: ${(r.err.trim() || r.out.trim()) || "no output"}`);
      guestSpawn.push(...r.out.trim().split(" ").map(Number));
    };
    for (let i = 0; i < RUNS; i++) {
      if (i % SPAWN_EVERY === 0) spawnTimes();
      const f = await staged(fractal(rec.endpoints.tcp, "--", TRUE));
      t.fractal.push(f.ms);
      for (const [k, v] of Object.entries(f.stages)) (stages[k] ??= []).push(v);
      t.ssh.push(await timed(ssh(TRUE)));
      t.cpu.push(await timed(cpu(TRUE)));
      t.serial.push(await timed(fractal(rec.endpoints.serial, "--", TRUE)));
    }
    // (b) 256 MiB on stdout.
    // Absolute paths: dropbear gives its sessions a PATH without u-root's /bbin.
    const head = ["/bbin/head", "-c", String(BYTES), "/dev/zero"];
    // Rounds interleaved, medians kept: the first large transfer after boot
    // is slower for whoever goes first (guest memory touched for the first
    // time), and this host drifts between runs.
    // The ceiling: the same head into u-root's cat inside the guest, no
    // network and no agent in the way. Every tool reads head's stdout
    // through such a pipe, so none can beat it.
    const pipeOnly = fractal(rec.endpoints.serial, "--", "sh", "-c", `${head.join(" ")} | /bbin/cat > /dev/null`);
    const rounds = { fractal: [] as number[], ssh: [] as number[], cpu: [] as number[], serial: [] as number[], pipe: [] as number[] };
    for (let i = 0; i < TP_ROUNDS; i++) {
      rounds.fractal.push(await throughput(fractal(rec.endpoints.tcp, "--", ...head), BYTES));
      rounds.ssh.push(await peerThroughput("ssh", ssh(...head), BYTES));
      rounds.cpu.push(await peerThroughput("cpu", cpu(...head), BYTES));
      rounds.serial.push(await throughput(fractal(rec.endpoints.serial, "--", ...head), BYTES));
      rounds.pipe.push((await timed(pipeOnly, 600)) / 1000);
    }
    const tp = { fractal: quantile(rounds.fractal, 0.5), ssh: quantile(rounds.ssh, 0.5), cpu: quantile(rounds.cpu, 0.5), serial: quantile(rounds.serial, 0.5), pipe: quantile(rounds.pipe, 0.5) };
    // (c) 1-byte echo in an open session.
    const cat = { fractal: fractal(rec.endpoints.tcp, "-i", "--", "/bbin/cat"), ssh: ssh("/bbin/cat") };
    const e = {
      fractal: await echo(cat.fractal, RUNS),
      ssh: await echo(cat.ssh, RUNS),
      cpu: await echo(cpu("/bbin/cat"), RUNS),
      serial: await echo(fractal(rec.endpoints.serial, "-i", "--", "/bbin/cat"), RUNS),
      floor: await socketEcho(floorPort, RUNS),
    };
    const warmEcho = {
      fractal: await echo(cat.fractal, RUNS, WARM_ECHOES),
      ssh: await echo(cat.ssh, RUNS, WARM_ECHOES),
    };
    // (d) a host binary in the guest, the host's files backmounted: cpu over
    // its own 9p (through the ssh connection), fractal over the VM's 9p share.
    const NS = "/usr:/lib:/lib64:/bin";
    const big = path.join(state, "big");
    spawnSync("head", ["-c", String(BYTES), "/dev/urandom"], { stdio: ["ignore", fs.openSync(big, "w"), "inherit"] });
    const nsRuns = Math.max(3, Math.min(RUNS, 20));
    const ns = { fractal: [] as number[], cpu: [] as number[] };
    for (let i = 0; i < nsRuns; i++) {
      ns.fractal.push(await timed([HOST, "--connect", rec.endpoints.tcp, "exec", `--namespace=${NS}`, "--", "/usr/bin/true"]));
      ns.cpu.push(await timed(cpuNs(NS, "/usr/bin/true")));
    }
    const read = `cat ${big} > /dev/null`;
    const nsRead = {
      // The host's /tmp, where the file is: cpu binds over directories the
      // guest has. cpu's 9p under TCG has taken over a minute for it.
      fractal: await best(2, () => timed([HOST, "--connect", rec.endpoints.tcp, "exec", `--namespace=${NS}:/tmp`, "--", "/bin/sh", "-c", read], 600)),
      cpu: await best(2, () => timed(cpuNs(`${NS}:/tmp`, "/bin/sh", "-c", read), 600)),
    };

    const mibs = (s: number) => BYTES / 1048576 / s;
    const q = quantile;
    const figures: Figure[] = [
      compared("true round trip, median", "ms", q(t.fractal, 0.5), "ssh (dropbear)", q(t.ssh, 0.5), true, tcpEnv, "advantage >= 10x"),
      compared("true round trip, p99", "ms", q(t.fractal, 0.99), "ssh (dropbear)", q(t.ssh, 0.99), true, tcpEnv),
      compared("true round trip, median", "ms", q(t.fractal, 0.5), "u-root cpu", q(t.cpu, 0.5), true, tcpEnv),
      compared("true round trip, p99", "ms", q(t.fractal, 0.99), "u-root cpu", q(t.cpu, 0.99), true, tcpEnv),
      compared("stdout throughput, 256 MiB", "MiB/s", mibs(tp.fractal), "ssh (dropbear)", mibs(tp.ssh), false, tcpEnv, "advantage >= 2x"),
      compared("stdout throughput, 256 MiB", "MiB/s", mibs(tp.fractal), "u-root cpu", mibs(tp.cpu), false, tcpEnv, "advantage >= 2x"),
      compared("1-byte echo, median", "ms", q(e.fractal, 0.5), "ssh (dropbear)", q(e.ssh, 0.5), true, tcpEnv, "time <= ssh's"),
      compared("1-byte echo, p99", "ms", q(e.fractal, 0.99), "ssh (dropbear)", q(e.ssh, 0.99), true, tcpEnv),
      compared("1-byte echo, median", "ms", q(e.fractal, 0.5), "u-root cpu", q(e.cpu, 0.5), true, tcpEnv),
      compared("1-byte echo, median", "ms", q(e.fractal, 0.5), "minimal Bun echo (floor)", q(e.floor, 0.5), true, tcpEnv),
      compared(`1-byte echo after ${WARM_ECHOES} untimed, median`, "ms", q(warmEcho.fractal, 0.5), "ssh (dropbear)", q(warmEcho.ssh, 0.5), true, tcpEnv),
      compared("host binary start, backmounted, median", "ms", q(ns.fractal, 0.5), "u-root cpu -namespace", q(ns.cpu, 0.5), true, tcpEnv),
      compared("256 MiB host file read through the backmount", "MiB/s", mibs(nsRead.fractal / 1000), "u-root cpu -namespace", mibs(nsRead.cpu / 1000), false, tcpEnv),
      compared("true round trip, median", "ms", q(t.serial, 0.5), "ssh (dropbear) over TCP", q(t.ssh, 0.5), true, serialEnv),
      compared("stdout throughput, 256 MiB", "MiB/s", mibs(tp.serial), "ssh (dropbear) over TCP", mibs(tp.ssh), false, serialEnv),
      compared("stdout throughput, 256 MiB", "MiB/s", mibs(tp.serial), "head | cat inside the guest", mibs(tp.pipe), false, serialEnv),
      compared("stdout throughput, 256 MiB", "MiB/s", mibs(tp.fractal), "head | cat inside the guest", mibs(tp.pipe), false, tcpEnv),
      compared("1-byte echo, median", "ms", q(e.serial, 0.5), "ssh (dropbear) over TCP", q(e.ssh, 0.5), true, serialEnv),
    ];
    // The exec path's own cost: the round trip less the guest's own
    // spawn-to-exit of the binary, which every tool pays alike. (fractal's
    // "run" stage is not that: it is timed by the CLI, so it also holds the
    // agent noticing the exit and the answer's way back.)
    const med = Object.fromEntries(Object.entries(stages).map(([k, v]) => [k, q(v, 0.5)]));
    const spawnToExit = q(guestSpawn, 0.5);
    const over = { fractal: q(t.fractal, 0.5) - spawnToExit, ssh: q(t.ssh, 0.5) - spawnToExit, cpu: q(t.cpu, 0.5) - spawnToExit };
    figures.push(
      compared("exec overhead (round trip less guest spawn-to-exit)", "ms", over.fractal, "ssh (dropbear)", over.ssh, true, tcpEnv, "time <= 1/5 of ssh's"),
      compared("exec overhead (round trip less guest spawn-to-exit)", "ms", over.fractal, "u-root cpu", over.cpu, true, tcpEnv, "time <= 1/5 of cpu's"),
    );
    record("peers", figures);
    console.log(`bench-peers (accel=${rec.accel}, ${os.cpus().length} host CPUs, guest kernel ${guestKernel}, ${RUNS} runs, ${nsRuns} for host binaries)`);
    for (const f of figures) {
      console.log(`  ${`${f.figure} [${f.env.transport}]`.padEnd(66)} fractal ${f.fractal.toFixed(1).padStart(8)} ${f.unit.padEnd(5)} ${f.peer!.name.padEnd(24)} ${f.peer!.value.toFixed(1).padStart(8)}   fractal ${f.advantage!.toFixed(1)}x better${f.target ? ` (target ${f.target})` : ""}`);
    }
    const order = ["start", "load", "connect", "handshake", "spawn", "run", "exit"];
    console.log(`  fractal exec of ${TRUE}, medians per stage (ms): ${order.map((k) => `${k} ${(med[k] ?? 0).toFixed(2)}`).join(", ")}; total ${q(t.fractal, 0.5).toFixed(1)}`);
    console.log("    (start: process start to main; load: the modules exec needs; connect; handshake and key; spawn: request to the process started; run: spawn to exit, in the guest; exit: to the CLI's exit)");
    console.log(`  the same binary: ssh ${q(t.ssh, 0.5).toFixed(1)} ms, cpu ${q(t.cpu, 0.5).toFixed(1)} ms; the guest's own spawn-to-exit of it ${spawnToExit.toFixed(1)} ms (median of ${guestSpawn.length}, bench/spawn-time); overhead beyond that: fractal ${over.fractal.toFixed(1)}, ssh ${over.ssh.toFixed(1)}, cpu ${over.cpu.toFixed(1)} ms`);
    for (const [peer, lost] of Object.entries(shortReads)) console.log(`  ${peer} lost the end of ${lost.length} stdout transfer(s), each run again: ${lost.join("; ")}`);
  } finally {
    cpud?.kill();
    floor?.kill();
    run([HOST, "vm", "stop", "peers"]);
    fs.rmSync(state, { recursive: true, force: true });
  }
}

await main();
