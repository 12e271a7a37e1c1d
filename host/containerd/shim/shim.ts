// The shim's three lives. `start` (run by containerd per container) finds
// or starts the group's shim and prints its address. `serve` is that shim:
// a detached process that serves containerd's Task API over ttrpc and owns
// the group's VM. `delete` (run by containerd after a shim died) powers the
// dead shim's VM off and reports the task as ended.
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { containerd, google } from "../gen/containerd.js";
import { Publisher, timestamp } from "../events.js";
import { TtrpcServer } from "../ttrpc.js";
import { groupKey, groupRecord, readGroupRecord, writeGroupRecord, type GroupRecord } from "./group.js";
import { GuestVm, killGroupVm } from "./guest.js";
import { configPathOf, loadOptions } from "./options.js";
import { TaskService } from "./service.js";
import { readSpec } from "./translate.js";

export interface ShimFlags {
  namespace: string;
  address: string;
  publishBinary: string;
  id: string;
  bundle: string;
  /** serve: the options file start found. */
  config: string;
  debug: boolean;
}

/** containerd 1.6 writes the runtime options (an Any) to start's stdin; a terminal or nothing means none. */
function readStdinOptions(): google.protobuf.IAny | undefined {
  try {
    if (fs.fstatSync(0).isCharacterDevice()) return undefined;
    const b = fs.readFileSync(0);
    return b.length > 0 ? google.protobuf.Any.decode(b) : undefined;
  } catch {
    return undefined;
  }
}

function alive(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(socket);
    s.once("connect", () => (s.destroy(), resolve(true)));
    s.once("error", () => resolve(false));
  });
}

/** An exclusive lock file: two starts for one group must not both launch a shim. */
async function withLock<T>(file: string, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      fs.writeFileSync(file, `${process.pid}\n`, { flag: "wx" });
      break;
    } catch {
      const holder = Number(fs.readFileSync(file, "utf8").trim() || 0);
      let held = holder > 0;
      try {
        if (held) process.kill(holder, 0);
      } catch {
        held = false;
      }
      if (!held || Date.now() > deadline) fs.rmSync(file, { force: true });
      else await new Promise((r) => setTimeout(r, 20));
    }
  }
  try {
    return await fn();
  } finally {
    fs.rmSync(file, { force: true });
  }
}

export async function runStart(f: ShimFlags): Promise<number> {
  const bundle = f.bundle || process.cwd();
  const config = configPathOf(readStdinOptions());
  const opts = loadOptions(config);
  const spec = readSpec(bundle);
  const rec = groupRecord(f.address, groupKey(f.namespace, f.id, spec, opts), opts);
  writeGroupRecord(bundle, rec);
  fs.mkdirSync(path.dirname(rec.socket), { recursive: true, mode: 0o711 });
  await withLock(`${rec.socket}.lock`, async () => {
    if (await alive(rec.socket)) return;
    fs.rmSync(rec.socket, { force: true });
    fs.mkdirSync(rec.stateDir, { recursive: true, mode: 0o700 });
    const log = fs.openSync(path.join(rec.stateDir, `${rec.vmName}.shim.log`), "a");
    // serve reads its group (socket, VM) from the record written above.
    const args = ["-namespace", f.namespace, "-address", f.address, "-id", f.id, "-bundle", bundle, "-config", config, ...(f.debug || process.env.FRACTAL_SHIM_DEBUG ? ["-debug"] : []), "serve"];
    // Its own session: a shim outlives containerd (a restarted containerd reconnects to it).
    const child = spawn(process.execPath, args, { detached: true, stdio: ["ignore", log, log], cwd: "/", env: process.env });
    fs.closeSync(log);
    child.unref();
    const deadline = Date.now() + 10_000;
    while (!(await alive(rec.socket))) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`the shim did not start (see ${path.join(rec.stateDir, `${rec.vmName}.shim.log`)})`);
      await new Promise((r) => setTimeout(r, 10));
    }
  });
  // containerd 1.6 reconnects after a restart through the bundle's address file, which the shim writes (as runc's does).
  const address = `unix://${rec.socket}`;
  fs.writeFileSync(path.join(bundle, "address"), address);
  fs.writeSync(1, address);
  return 0;
}

export async function runServe(f: ShimFlags): Promise<number | undefined> {
  const rec: GroupRecord | undefined = readGroupRecord(f.bundle);
  if (!rec) throw new Error(`no group record in ${f.bundle}`);
  const log = (msg: string) => process.stderr.write(`${new Date().toISOString()} ${rec.vmName}: ${msg}\n`);
  const opts = loadOptions(f.config);
  const vm = new GuestVm(rec, opts, log);
  const events = new Publisher(process.env.TTRPC_ADDRESS ?? "", f.namespace, log);
  const service = new TaskService(vm, events, opts, log, f.debug);
  const server = new TtrpcServer();
  service.register(server);
  await server.listen(rec.socket);
  fs.chmodSync(rec.socket, 0o600);
  log(`serving ${rec.key} on ${rec.socket} (pid ${process.pid})`);
  let ending = false;
  const end = async (why: string) => {
    if (ending) return;
    ending = true;
    log(`ending: ${why}`);
    server.close();
    fs.rmSync(rec.socket, { force: true });
    await vm.stop();
    events.close();
    process.exit(0);
  };
  service.onShutdown = () => void end("shutdown");
  for (const sig of ["SIGTERM", "SIGINT"] as const) process.on(sig, () => void end(sig));
  process.on("SIGPIPE", () => {});
  return undefined; // serves until Shutdown
}

/** After a shim died: its VM goes too, and the task is reported ended (killed). */
export async function runDelete(f: ShimFlags): Promise<number> {
  const bundle = f.bundle || process.cwd();
  const rec = readGroupRecord(bundle);
  if (rec && !(await alive(rec.socket))) {
    await killGroupVm(rec);
    fs.rmSync(rec.socket, { force: true });
  }
  const res = containerd.task.v2.DeleteResponse.encode({ pid: 0, exitStatus: 128 + 9, exitedAt: timestamp(Date.now()) }).finish();
  fs.writeSync(1, res);
  return 0;
}
