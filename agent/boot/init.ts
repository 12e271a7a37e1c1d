// The agent's duties as the guest's init task (started by u-root's init as
// uinit): mount what programs and containers expect, load kernel modules,
// name the machine, bring up networking, mount host shares. Every step logs
// its failure and boot goes on: a guest with a missing share must still be
// reachable to be debugged.
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { addLogSink, log, setStderrLevel } from "../log.js";
import { loadModule, mount, setHostname, umount2, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_RELATIME } from "../../proto/libc.js";
import { NS_HELPER } from "../../proto/guest.js";
import { networkDone, networkPending } from "./network-state.js";
import { startStages } from "./clock.js";
import { parseCmdline, type BootConfig, type Share } from "./cmdline.js";

/** Where the initramfs build puts modules and their load order (see initramfs/modules.ts). */
export const MODULE_ORDER = "/lib/modules/fractal.order";
/** NIC drivers for hardware, loaded once the agent listens. */
export const LATER_MODULE_ORDER = "/lib/modules/fractal-later.order";

interface MountSpec {
  target: string;
  fstype: string;
  source: string;
  flags: number;
  data?: string;
}

const baseMounts: MountSpec[] = [
  { target: "/proc", fstype: "proc", source: "proc", flags: MS_NOSUID | MS_NODEV | MS_NOEXEC },
  { target: "/sys", fstype: "sysfs", source: "sysfs", flags: MS_NOSUID | MS_NODEV | MS_NOEXEC },
  { target: "/dev", fstype: "devtmpfs", source: "devtmpfs", flags: MS_NOSUID, data: "mode=0755" },
  { target: "/dev/pts", fstype: "devpts", source: "devpts", flags: MS_NOSUID | MS_NOEXEC, data: "newinstance,ptmxmode=0666,mode=0620" },
  { target: "/dev/shm", fstype: "tmpfs", source: "shm", flags: MS_NOSUID | MS_NODEV, data: "mode=1777" },
  { target: "/sys/fs/cgroup", fstype: "cgroup2", source: "cgroup2", flags: MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RELATIME },
  { target: "/tmp", fstype: "tmpfs", source: "tmpfs", flags: MS_NOSUID | MS_NODEV, data: "mode=1777" },
  { target: "/run", fstype: "tmpfs", source: "tmpfs", flags: MS_NOSUID | MS_NODEV, data: "mode=0755" },
];

function mounted(): Map<string, string> {
  const m = new Map<string, string>();
  try {
    for (const line of fs.readFileSync("/proc/mounts", "utf8").split("\n")) {
      const [, target, fstype] = line.split(" ");
      if (target && fstype) m.set(target, fstype);
    }
  } catch {
    // /proc not mounted yet
  }
  return m;
}

/** The log lives on tmpfs (guest RAM): past this size it moves to FILE.1 and starts over. */
const LOG_ROTATE_BYTES = 4 << 20;

function rotatingFile(file: string): (line: string) => void {
  let fd = fs.openSync(file, "a");
  let size = fs.fstatSync(fd).size;
  return (line) => {
    if (size > LOG_ROTATE_BYTES) {
      fs.closeSync(fd);
      fs.renameSync(file, `${file}.1`);
      fd = fs.openSync(file, "a");
      size = 0;
    }
    size += fs.writeSync(fd, line);
  };
}

function step(what: string, fn: () => void): void {
  try {
    fn();
  } catch (err) {
    log("error", `boot: ${what}: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/**
 * u-root's init mounts cgroup v1 hierarchies under a tmpfs at
 * /sys/fs/cgroup. A controller can live in one hierarchy only, so v1 mounts
 * would leave cgroup2 without memory and pids control (which containers
 * need): unmount them, then mount cgroup2 there.
 */
function dropCgroupV1(): void {
  const v1 = [...mounted()].filter(([t, fstype]) => fstype === "cgroup" && t.startsWith("/sys/fs/cgroup/")).map(([t]) => t);
  for (const t of v1) step(`unmount cgroup v1 ${t}`, () => umount2(t));
  if (mounted().get("/sys/fs/cgroup") === "tmpfs") step("unmount /sys/fs/cgroup tmpfs", () => umount2("/sys/fs/cgroup"));
}

function mountBase(): void {
  dropCgroupV1();
  // u-root's init mounts some of these already; /tmp it leaves on the
  // rootfs, which we replace with a real tmpfs.
  const have = mounted();
  for (const m of baseMounts) {
    if (have.get(m.target) === m.fstype) continue;
    step(`mount ${m.target}`, () => {
      fs.mkdirSync(m.target, { recursive: true });
      mount(m.source, m.target, m.fstype, m.flags, m.data);
    });
  }
  // /dev/ptmx must point at this devpts instance for PTYs to work.
  step("link /dev/ptmx", () => {
    if (!fs.existsSync("/dev/pts/ptmx")) return;
    try {
      fs.unlinkSync("/dev/ptmx");
    } catch {
      // absent
    }
    fs.symlinkSync("pts/ptmx", "/dev/ptmx");
  });
  // devtmpfs has no /dev/fd or /dev/std*: udev or the container runtime
  // makes them elsewhere. Without them `echo x > /dev/stdout` made a file.
  for (const [name, target] of STD_LINKS) {
    step(`link /dev/${name}`, () => {
      try {
        fs.symlinkSync(target, `/dev/${name}`);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      }
    });
  }
}

const STD_LINKS: [string, string][] = [
  ["fd", "/proc/self/fd"],
  ["stdin", "/proc/self/fd/0"],
  ["stdout", "/proc/self/fd/1"],
  ["stderr", "/proc/self/fd/2"],
];

function loadModules(orderFile: string, what: string): void {
  let order: string[];
  try {
    order = fs.readFileSync(orderFile, "utf8").split("\n").filter((l) => l.trim() !== "");
  } catch {
    log("warn", `boot: no ${orderFile}; loading no ${what}`);
    return;
  }
  const base = path.dirname(orderFile);
  let loaded = 0;
  const t0 = performance.now();
  for (const rel of order) step(`load module ${rel}`, () => void (loadModule(path.join(base, rel)) && loaded++));
  log("info", `boot: loaded ${loaded} of ${order.length} ${what} in ${(performance.now() - t0).toFixed(0)} ms`);
}

/**
 * The supervisor (fractal-ns -supervise) loads the modules while this
 * process starts and hands over a pipe it closes when done, writing a
 * "LEVEL message" line for each failure and a summary; without one (an
 * agent started as init some other way) we load them here.
 */
function waitForModules(): void {
  const fd = Number(process.env.FRACTAL_MODULES_FD);
  delete process.env.FRACTAL_MODULES_FD; // not for the agent's children
  if (!Number.isInteger(fd) || fd < 3) return loadModules(MODULE_ORDER, "kernel modules");
  let text = "";
  // One blocking read to EOF: the modules have loaded by the time this
  // binary has started, so nothing waits, and the boot needs them before it
  // goes on anyway. Node's read stream here cost 135 ms of run-once code
  // under TCG, on the way to "ready".
  try {
    text = fs.readFileSync(fd, "utf8");
  } catch (err) {
    log("error", `boot: reading the supervisor's module report: ${err instanceof Error ? err.message : String(err)}`);
  }
  try {
    fs.closeSync(fd);
  } catch {
    // already gone: nothing leaks
  }
  relayReport(text);
}

/** Logs a module loader's "LEVEL message" lines. */
function relayReport(text: string): void {
  for (const line of text.split("\n")) {
    const [level, ...words] = line.split(" ");
    if (level === "info" || level === "error") log(level, words.join(" "));
  }
}

/**
 * The NIC drivers, loaded by the helper: here, finit_module would hold the
 * event loop (about 400 ms under TCG, just as the agent starts listening),
 * and the boot's first host would wait that long for its answer. Without
 * the helper they load here.
 */
async function loadNicDrivers(): Promise<void> {
  // No order file: loadModules logs that, with no helper started for nothing.
  if (!fs.existsSync(LATER_MODULE_ORDER)) return loadModules(LATER_MODULE_ORDER, "NIC drivers");
  let report = "";
  const code = await run([NS_HELPER, "-modules", LATER_MODULE_ORDER, "NIC drivers"], (text) => (report += text));
  relayReport(report);
  if (code === -1) loadModules(LATER_MODULE_ORDER, "NIC drivers");
}

function mountShare(s: Share): void {
  step(`mount share ${s.tag} on ${s.path}`, () => {
    fs.mkdirSync(s.path, { recursive: true });
    const flags = s.readonly ? MS_RDONLY : 0;
    if (s.fs === "virtiofs") mount(s.tag, s.path, "virtiofs", flags);
    // 9p options, chosen for speed:
    //  msize=512 KiB: the largest payload virtio-9p carries, so a 1 MiB read
    //    is two round trips to QEMU instead of 128 with the 8 KiB default;
    //  cache=loose: the guest page cache keeps file data and metadata, so a
    //    host binary started twice is read once, and stat storms (dynamic
    //    loader, PATH lookups) stay in the guest. The price is that changes
    //    made on the host during the session may be seen late; for a
    //    backmount of the host's tools and images that is the right trade.
    //    A writable share (a volume, --share, --host-root-rw) is another
    //    matter: with cache=loose a container's writes would sit in the
    //    guest's page cache, unseen by the host and lost with the VM, so
    //    those use cache=mmap, which writes through (and still allows mmap).
    //  version=9p2000.L: Linux semantics (symlinks, xattrs, locks).
    else mount(s.tag, s.path, "9p", flags, `trans=virtio,version=9p2000.L,msize=524288,cache=${s.readonly ? "loose" : "mmap"},access=client`);
    log("info", `boot: mounted ${s.fs} share ${s.tag} on ${s.path}`);
  });
}

/** u-root tools live in /bbin; a missing one is logged, not fatal. `stdout` gets what the program prints. */
function run(argv: string[], stdout?: (text: string) => void): Promise<number> {
  return new Promise((resolve) => {
    const p = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", stdout ? "pipe" : "ignore", "pipe"] });
    // Decoded by the stream: a character split between two reads stays whole.
    p.stdout?.setEncoding("utf8").on("data", (text: string) => stdout?.(text));
    let err = "";
    p.stderr?.on("data", (b: Buffer) => (err += b.toString()));
    p.on("error", (e) => {
      log("warn", `boot: ${argv.join(" ")}: ${e.message}`);
      resolve(-1);
    });
    // With stdout wanted, all of it: "close" comes after the pipes' ends.
    // Without, "exit": a daemon a tool leaves may hold its stderr for good.
    p.on(stdout ? "close" : "exit", (code) => {
      if (code !== 0) log("warn", `boot: ${argv.join(" ")} exited ${code}: ${err.trim()}`);
      resolve(code ?? -1);
    });
  });
}

/**
 * NIC drivers, loopback, then every link: the static address of
 * fractal.ip on its link, DHCP on the others. Started after the listeners
 * are up: vsock and serial need no network, and a TCP listener on 0.0.0.0
 * serves once the address is there.
 */
export async function startNetwork(cfg: BootConfig): Promise<void> {
  try {
    if (await configureLinks(cfg)) return;
  } catch (err) {
    log("error", `boot: network: ${(err as Error).message}`);
  }
  networkDone();
}

/** Configures the links; true when DHCP goes on in the background (it marks the network done). */
async function configureLinks(cfg: BootConfig): Promise<boolean> {
  if (restarts() > 0) return false;
  // A VM's virtio-net driver loaded at boot: its link is there already and
  // need not wait the 400 ms (TCG) of the hardware drivers for its DHCP.
  // Links that come with those drivers are configured once they are in.
  const drivers = loadNicDrivers();
  await run(["ip", "link", "set", "dev", "lo", "up"]);
  const early = links();
  const firstRound = early.length > 0 ? await configureRound(cfg, early, ipLink(cfg, early)) : undefined;
  await drivers;
  const late = links().filter((n) => !early.includes(n));
  const all = [...early, ...late];
  const staticLink = ipLink(cfg, all);
  const secondRound = late.length > 0 ? await configureRound(cfg, late, staticLink) : undefined;
  if (cfg.ip && (staticLink === undefined || !all.includes(staticLink))) log("error", `boot: fractal.ip: no network link ${cfg.ip.iface ?? ""} (links: ${all.join(", ") || "none"})`);
  const dhcp = [firstRound, secondRound].flatMap((r) => (r ? [r.done] : []));
  if (dhcp.length === 0) return false;
  void Promise.all(dhcp).then(() => networkDone()); // failed too: the host's wait then ends with its own message
  return true;
}

/** The network links but loopback, by name. */
function links(): string[] {
  return fs.existsSync("/sys/class/net") ? fs.readdirSync("/sys/class/net").filter((n) => n !== "lo").sort() : [];
}

/** The link fractal.ip is for among `nics` (in the order they came): the one it names, else the first. */
function ipLink(cfg: BootConfig, nics: string[]): string | undefined {
  return cfg.ip && (cfg.ip.iface ?? nics[0]);
}

/**
 * Configures `nics`: fractal.mtu on each; fractal.ip on `link` when it is
 * one of these; DHCP on the others. Resolves once DHCP is started, with
 * its end (a promise in an object: an async function's promise would wait
 * for it), or undefined when there is none to do.
 */
async function configureRound(cfg: BootConfig, nics: string[], link: string | undefined): Promise<{ done: Promise<void> } | undefined> {
  if (cfg.mtu !== undefined) {
    // Before DHCP: the first connections already use the large frames. A
    // link that cannot take it (a wired NIC's limit) keeps its own.
    for (const nic of nics) {
      if ((await run(["ip", "link", "set", "dev", nic, "mtu", String(cfg.mtu)])) !== 0) log("error", `boot: ${nic} does not take fractal.mtu=${cfg.mtu}; it keeps its own MTU`);
    }
  }
  let dhcp = nics;
  const ip = cfg.ip;
  if (ip && link !== undefined && nics.includes(link)) {
    dhcp = nics.filter((n) => n !== link);
    const ok =
      (await run(["ip", "link", "set", "dev", link, "up"])) === 0 &&
      (await run(["ip", "addr", "add", `${ip.address}/${ip.prefix}`, "dev", link])) === 0 &&
      (ip.gateway === undefined || (await run(["ip", "route", "add", "default", "via", ip.gateway, "dev", link])) === 0);
    if (ok) log("info", `boot: ${link} has ${ip.address}/${ip.prefix}${ip.gateway ? ` via ${ip.gateway}` : ""} (fractal.ip)`);
  }
  if (dhcp.length === 0) return undefined;
  // DHCP runs in the background: listeners on vsock and serial must not
  // wait for it, and TCP listeners bound to 0.0.0.0 work once it is done.
  const done = run(["dhclient", "-ipv6=false", ...dhcp]).then((code) => {
    if (code === 0) log("info", `boot: DHCP configured ${dhcp.join(", ")}`);
  });
  return { done };
}

/** The supervisor's stages (FRACTAL_BOOT_STAGES=supervisor=2.61,image=2.83,exec=2.85), for the log. */
function supervisorStages(): string {
  const stages = new Map((process.env.FRACTAL_BOOT_STAGES ?? "").split(",").map((kv) => kv.split("=") as [string, string]));
  delete process.env.FRACTAL_BOOT_STAGES; // not for the agent's children
  const at = (k: string) => (stages.get(k) ? `${stages.get(k)} s` : "?");
  if (!stages.has("exec")) return "";
  return ` (supervisor started at ${at("supervisor")}${stages.has("image") ? `, agent's image mounted at ${at("image")}` : ""}, agent exec'd at ${at("exec")})`;
}

/** How many times the supervisor (fractal-ns -supervise) restarted the agent. */
function restarts(): number {
  return Number(process.env.FRACTAL_AGENT_RESTARTS ?? 0) || 0;
}

/** Runs the init duties listeners depend on; resolves with the settings from the kernel command line. */
export async function boot(): Promise<BootConfig> {
  // Guest uptime at agent start: kernel boot plus u-root init plus loading
  // this binary. bench-boot reads it to say where boot time goes.
  let started = "?";
  // startNetwork, after the listeners, says when the links are configured.
  networkPending();
  let stages = "";
  step("read uptime", () => {
    started = fs.readFileSync("/proc/uptime", "utf8").split(" ")[0]!;
    const s = startStages(Number(started));
    stages = `; Bun's runtime started at ${s.runtime.toFixed(2)} s, the agent's modules at ${s.code.toFixed(2)} s`;
  });
  mountBase();
  let cmdline = "";
  step("read /proc/cmdline", () => (cmdline = fs.readFileSync("/proc/cmdline", "utf8")));
  const cfg = parseCmdline(cmdline);
  step("open log file", () => {
    fs.mkdirSync(path.dirname(cfg.logFile), { recursive: true });
    addLogSink(rotatingFile(cfg.logFile));
    // Each connection logs three debug lines (connected, authenticated,
    // closed): on the serial console they cost the guest ~1.5 ms each under
    // TCG, in every exec's round trip. The file keeps them.
    setStderrLevel("info");
  });
  if (restarts() > 0) {
    // The supervisor restarted us: the machine is set up already, only
    // this process is new.
    log("warn", `boot: agent restarted (${restarts()} times) at uptime ${started} s`);
    return cfg;
  }
  log("info", `boot: agent started at uptime ${started} s${supervisorStages()}${stages}`);
  for (const e of cfg.errors) log("warn", `boot: ${e}`);
  // Debian's kernel backs every large enough anonymous mapping with huge
  // pages ("always"): each small Go process (the shim, fractal-ns helpers)
  // then holds a 2 MiB page for a few kilobytes of heap. "madvise" leaves huge pages to
  // programs that ask, which in a guest full of small processes is 4x less
  // memory per idle container (bench-containers).
  step("transparent huge pages: madvise", () => fs.writeFileSync("/sys/kernel/mm/transparent_hugepage/enabled", "madvise"));
  step("set hostname", () => setHostname(cfg.hostname));
  waitForModules();
  for (const s of cfg.shares) mountShare(s);
  let up = "?";
  step("read uptime", () => (up = fs.readFileSync("/proc/uptime", "utf8").split(" ")[0]!));
  log("info", `boot: ${os.hostname()} ready at uptime ${up} s (kernel ${os.release()})`);
  return cfg;
}
