// Starts the compiled agent on loopback and runs the compiled CLI against it.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

export const ROOT = path.resolve(import.meta.dirname, "../..");
export const AGENT_BIN = path.join(ROOT, "build/fractal-agent");
export const HOST_BIN = path.join(ROOT, "build/fractal-host");

export interface RunningAgent {
  tcp: string;
  ws: string;
  unix: string;
  /** Every URL the agent listens on, in the order it reported them. */
  urls: string[];
  dir: string;
  proc: ChildProcess;
  log: () => string;
  stop(): Promise<void>;
}

export interface AgentOptions {
  /** authorized_keys lines; default: the test key (FRACTAL_KEY's .pub) with every right. */
  authorizedKeys?: string[];
  /** More flags, e.g. TLS listeners. */
  args?: string[];
  /** Listeners to wait for before resolving (default 3: TCP, WebSocket, unix). */
  listeners?: number;
}

/** Starts build/fractal-agent listening on TCP, WebSocket and unix; resolves once all three are bound. */
export async function startAgent(opts: AgentOptions = {}): Promise<RunningAgent> {
  if (!fs.existsSync(AGENT_BIN)) throw new Error(`${AGENT_BIN} is missing: run make build`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-test-"));
  const sock = path.join(dir, "agent.sock");
  const keys = path.join(dir, "authorized_keys");
  fs.writeFileSync(keys, (opts.authorizedKeys ?? [fs.readFileSync(`${process.env.FRACTAL_KEY}.pub`, "utf8")]).join("\n"));
  const args = ["--listen", "tcp://127.0.0.1:0", "--listen", "ws://127.0.0.1:0", "--listen", `unix://${sock}`, "--authorized-keys", keys, ...(opts.args ?? [])];
  const want = opts.listeners ?? 3;
  const proc = spawn(AGENT_BIN, args, {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  const urls = await new Promise<string[]>((resolve, reject) => {
    const found: string[] = [];
    const timer = setTimeout(() => reject(new Error(`agent did not start:\n${log}`)), 15_000);
    proc.stderr!.on("data", (b: Buffer) => {
      log += b.toString();
      for (const m of b.toString().matchAll(/listening on (\S+)/g)) found.push(m[1]!);
      if (found.length === want) {
        clearTimeout(timer);
        resolve(found);
      }
    });
    proc.on("exit", (code) => reject(new Error(`agent exited with ${code}:\n${log}`)));
  });
  return {
    tcp: urls.find((u) => u.startsWith("tcp://"))!,
    ws: urls.find((u) => u.startsWith("ws://"))!,
    unix: urls.find((u) => u.startsWith("unix://"))!,
    urls,
    dir,
    proc,
    log: () => log,
    async stop() {
      proc.kill("SIGKILL");
      await new Promise((r) => proc.once("exit", r));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
}

export interface CliOptions {
  input?: Buffer | string;
  env?: Record<string, string>;
  /** Called once the CLI runs, e.g. to signal it. */
  started?: (proc: ChildProcess) => void;
  /** Kills the CLI and fails with its arguments and stderr after this long (default 200 s, above boot's 180 s wait on TCG). */
  timeoutMs?: number;
}

/** Runs build/fractal-host with args; collects everything. */
export function runCli(args: string[], opts: CliOptions = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const proc = spawn(HOST_BIN, args, { stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, ...opts.env } });
    const out: Buffer[] = [];
    let err = "";
    proc.stdout.on("data", (b: Buffer) => out.push(b));
    proc.stderr.on("data", (b: Buffer) => (err += b.toString()));
    proc.on("error", reject);
    proc.stdin.on("error", () => {}); // the CLI may exit before reading all input
    if (opts.input !== undefined) proc.stdin.end(opts.input);
    else proc.stdin.end();
    opts.started?.(proc);
    // A hung step names itself instead of running into the test's own timeout.
    const ms = opts.timeoutMs ?? 200_000;
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(`fractal-host ${args.join(" ")} did not finish within ${ms / 1000} s; its stderr so far:\n${err}`));
    }, ms);
    proc.on("close", (code, signal) => (clearTimeout(timer), resolve({ code, signal, stdout: Buffer.concat(out), stderr: err })));
  });
}

/** Open file descriptors of a process. */
export function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** Resident memory of a process, in MiB. */
export function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : 0;
}

/** Runs test/helpers/soak.ts (under bun) against an agent: `seq` execs one after another, then `conc` at once. */
export function runSoak(url: string, seq: number, conc: number): { bad: number; ms: number } {
  const out = execFileSync(path.join(ROOT, "node_modules/.bin/bun"), [path.join(ROOT, "test/helpers/soak.ts"), url, String(seq), String(conc)], { maxBuffer: 1 << 20, env: process.env });
  return JSON.parse(out.toString()) as { bad: number; ms: number };
}
