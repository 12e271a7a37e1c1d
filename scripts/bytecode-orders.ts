// Records the bytecode layout profiles the agent and the CLI are compiled
// with (bun build --bytecode-order): which functions a start and an exec
// run, so Bun lays them out together at the front of the executable and a
// start reads and decodes less of its 100 MB. Run by `make bytecode-orders`
// against binaries built without profiles; the profiles are committed, so
// every build (and every --target: a profile names functions by a hash of
// their syntax) uses the same ones. A function changed since the recording
// is only placed after the recorded ones: refresh when the exec path moved.
//
//   bun scripts/bytecode-orders.ts AGENT CLI
// writes agent/bytecode.order, host/cli/exec.order and host/cli/help.order.
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const [agentBin, cliBin] = process.argv.slice(2);
if (!agentBin || !cliBin) {
  console.error("usage: bytecode-orders.ts AGENT CLI");
  process.exit(2);
}
const ROOT = path.resolve(import.meta.dir, "..");
const dest = { agent: "agent/bytecode.order", exec: "host/cli/exec.order", help: "host/cli/help.order" };
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-orders-"));
// Recorded beside the run first: a failed run leaves the committed profiles be.
const orders = { agent: path.join(tmp, "agent.order"), exec: path.join(tmp, "exec.order"), help: path.join(tmp, "help.order") };
const key = path.join(tmp, "key");
// Tickets are kept beside FRACTAL_STATE: a fresh directory gives the first
// exec the challenge path and the next ones the ticket path users mostly run.
const env = { ...process.env, FRACTAL_KEY: key, FRACTAL_STATE: path.join(tmp, "state", "vms") };
delete env.BUN_BYTECODE_ORDER_OUT;

function cli(args: string[], order?: string): void {
  const r = spawnSync(cliBin!, args, { env: order ? { ...env, BUN_BYTECODE_ORDER_OUT: order } : env, stdio: ["ignore", "ignore", "pipe"] });
  if (r.status !== 0) throw new Error(`fractal-host ${args.join(" ")}: exit ${r.status}: ${r.stderr}`);
}

/** Runs the agent and the CLI with their profiles recorded into `orders`. */
async function record(): Promise<void> {
  cli(["keygen", "-f", key]);
  const agent = spawn(agentBin!, ["--listen", "tcp://127.0.0.1:0", "--authorized-keys", `${key}.pub`], {
    env: { ...env, BUN_BYTECODE_ORDER_OUT: orders.agent },
    stdio: ["ignore", "ignore", "pipe"],
  });
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let log = "";
      agent.stderr!.on("data", (b: Buffer) => {
        log += b;
        const m = /listening on (tcp:\/\/\S+)/.exec(log);
        if (m) resolve(m[1]!);
      });
      agent.on("exit", (code) => reject(new Error(`agent exited with ${code}: ${log}`)));
    });
    const exec = ["--connect", url, "exec", "--", "true"];
    cli(exec);
    cli(exec);
    // The profiles, most used first: an exec on a kept ticket, then --help
    // (bench-exec's measure of the CLI's start).
    cli(exec, orders.exec);
    cli(["--help"], orders.help);
  } finally {
    // The agent writes its profile when it exits, which SIGTERM makes it do.
    if (agent.exitCode === null && agent.signalCode === null) {
      const exited = new Promise((r) => agent.once("exit", r));
      agent.kill("SIGTERM");
      await exited;
    }
  }
}

try {
  await record();
  for (const [name, p] of Object.entries(orders)) {
    if (!fs.existsSync(p) || fs.statSync(p).size === 0) throw new Error(`no ${name} profile was written`);
  }
  for (const name of Object.keys(dest) as (keyof typeof dest)[]) fs.copyFileSync(orders[name], path.join(ROOT, dest[name]));
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
