// The guest's network through passt, the user-mode network that maps guest
// TCP onto host sockets, instead of QEMU's built-in slirp. Under TCG slirp
// runs in QEMU's main loop and segments everything at 1500 bytes: it was the
// bottleneck of every TCP stream to the agent (QEMU's main thread at 100%).
// passt runs in its own process and offers a 65520-byte MTU, so a guest
// sends a 64 KiB write as one frame. One passt per VM, started before QEMU
// on a unix socket in the VM's state directory; `--one-off` ends it when
// QEMU closes that socket, so nothing outlives the VM.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import { pidIn, stopByPidFile } from "./pidfile.js";

/** The guest's address and gateway, the same as under slirp: 10.0.2.2 reaches the host. */
const GUEST_ADDR = "10.0.2.15";
const GATEWAY = "10.0.2.2";
/** passt's MTU; the guest learns it from the kernel command line (u-root's dhclient ignores DHCP's). */
export const PASST_MTU = 65520;

export type NetBackend = "passt" | "user";
export const NET_BACKENDS: readonly NetBackend[] = ["passt", "user"];

export interface PasstPaths {
  socket: string;
  pid: string;
  log: string;
}

export function passtPaths(stateDir: string): PasstPaths {
  return { socket: path.join(stateDir, "passt.sock"), pid: path.join(stateDir, "passt.pid"), log: path.join(stateDir, "passt.log") };
}

function passtBinary(): string {
  return process.env.FRACTAL_PASST ?? "passt";
}

/**
 * True when passt is installed here (an executable file, as a name on PATH or
 * a path): `boot` then uses it unless told `--net user`. Looked up rather
 * than run: every boot asks, and a passt that is there but fails says so
 * when it is started.
 */
export function passtAvailable(): boolean {
  const bin = passtBinary();
  const dirs = bin.includes("/") ? [""] : (process.env.PATH ?? "").split(":").filter((d) => d !== "");
  return dirs.some((d) => isExecutable(d ? path.join(d, bin) : bin));
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/** Starts passt for one VM, forwarding host ports on 127.0.0.1 to guest ports; resolves once it listens. */
export async function startPasst(p: PasstPaths, forwards: { host: number; guest: number }[]): Promise<void> {
  fs.rmSync(p.socket, { force: true });
  fs.rmSync(p.pid, { force: true });
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  const args = [
    "--foreground", "--one-off", "--quiet", "-4",
    // As the caller: passt would drop root to nobody, who cannot reach the private state directory.
    "--runas", `${uid}:${gid}`,
    // Its own log file: without a terminal it would try syslog first.
    "--socket", p.socket, "--pid", p.pid, "--log-file", p.log,
    "--address", GUEST_ADDR, "--netmask", "24", "--gateway", GATEWAY, "--mtu", String(PASST_MTU),
    ...forwards.flatMap((f) => ["-t", `127.0.0.1/${f.host}:${f.guest}`]),
  ];
  fs.rmSync(p.log, { force: true });
  const child = spawn(passtBinary(), args, { detached: true, stdio: "ignore" });
  let exited: string | undefined;
  child.once("error", (err) => (exited = err.message));
  child.once("exit", (code, signal) => (exited = `exit ${code ?? signal}`));
  for (let waited = 0; waited < 5000; waited += 20) {
    if (exited !== undefined) break;
    // The pid file, not the socket: passt writes it after listen(), and a
    // socket file that exists but does not listen yet would fail QEMU.
    if (pidIn(p.pid) !== undefined) {
      child.unref();
      return;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  if (exited === undefined) child.kill("SIGKILL");
  let said = "";
  try {
    said = fs.readFileSync(p.log, "utf8").trim().split("\n").slice(-5).join("\n");
  } catch {
    // it failed before opening its log
  }
  throw new FractalError(ErrorCode.UNAVAILABLE, `passt did not start (${exited ?? "not listening after 5 s"})${said ? `: ${said}` : ""} (install passt, or boot with --net user)`);
}

/** Ends a passt left behind (QEMU failed to start, or never connected). */
export function stopPasst(pidFile: string): void {
  stopByPidFile(pidFile, "passt");
}
