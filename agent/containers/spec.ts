// The OCI runtime config (runtime-spec config.json) for one container: the
// process from the image config and the run request, docker's default
// mounts, capabilities and masked paths, pid/mount/uts/ipc/cgroup
// namespaces, and cgroup v2 limits. The network namespace is the guest's
// own (as docker's --network host): the guest is the isolation boundary
// toward the outside, containers share its network.
import type { Limits } from "../commands.js";
import type { ResolvedUser } from "./users.js";


export interface SpecInput {
  args: string[];
  env: string[];
  cwd: string;
  user: ResolvedUser;
  tty?: { cols: number; rows: number };
  hostname: string;
  rootfs: string;
  bundle: string;
  cgroupsPath: string;
  limits: Limits;
  /** Images stacked at paths (run --layer IMAGE:PATH): mounted before everything below them, so the default binds stay on top. */
  layerMounts?: { source: string; destination: string; readonly: boolean }[];
  /** More binds (files and directories of the guest), over the default ones at the same destination. */
  binds?: { source: string; destination: string; readonly: boolean }[];
  /** A process whose namespaces (joinTypes: of pid, ipc, uts) the container joins (a pod's sandbox); 0: its own. */
  joinPid?: number;
  joinTypes?: string[];
}

const DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// docker's default capability set.
const CAPS = [
  "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID",
  "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
];

/** Image Env, then the request's, later names replacing earlier ones; PATH always set. */
export function mergeEnv(image: string[], extra: string[], home: string): string[] {
  const m = new Map<string, string>();
  for (const kv of [DEFAULT_PATH, `HOME=${home}`, ...image, ...extra]) {
    const eq = kv.indexOf("=");
    if (eq > 0) m.set(kv.slice(0, eq), kv);
  }
  return [...m.values()];
}

/**
 * Docker's device rules: nothing may be opened but the usual character
 * devices, whatever nodes an image ships (a layer can carry /dev/sda or
 * /dev/mem as easily as a file). Creating nodes stays allowed, as in docker.
 */
const DEVICE_RULES = [
  { allow: false, access: "rwm" },
  { allow: true, type: "c", access: "m" },
  { allow: true, type: "b", access: "m" },
  ...[[1, 3], [1, 5], [1, 7], [1, 8], [1, 9], [5, 0], [5, 1], [5, 2], [10, 200]].map(([major, minor]) => ({ allow: true, type: "c", major, minor, access: "rwm" })),
  { allow: true, type: "c", major: 136, access: "rwm" }, // PTY slaves
];

export function runtimeConfig(s: SpecInput): object {
  const resources: Record<string, unknown> = { devices: DEVICE_RULES };
  if (s.limits.memoryBytes > 0) resources.memory = { limit: s.limits.memoryBytes, swap: s.limits.memoryBytes };
  if (s.limits.cpus > 0) resources.cpu = { quota: Math.round(s.limits.cpus * 100000), period: 100000 };
  if (s.limits.pids > 0) resources.pids = { limit: s.limits.pids };
  const bind = (src: string, dst: string, ro = false) => ({ destination: dst, type: "bind", source: src.startsWith("/") ? src : `${s.bundle}/${src}`, options: ["rbind", ro ? "ro" : "rw"] });
  const extra = (s.binds ?? []).map((b) => bind(b.source, b.destination, b.readonly));
  const replaced = new Set(extra.map((m) => m.destination));
  const joined = new Set(s.joinPid ? (s.joinTypes ?? ["ipc", "uts"]) : []);
  const ns = (type: string) => (joined.has(type) ? { type, path: `/proc/${s.joinPid}/ns/${type}` } : { type });
  return {
    ociVersion: "1.0.2",
    process: {
      terminal: s.tty !== undefined,
      ...(s.tty ? { consoleSize: { height: s.tty.rows, width: s.tty.cols } } : {}),
      user: { uid: s.user.uid, gid: s.user.gid, additionalGids: s.user.additionalGids },
      args: s.args,
      env: s.env,
      cwd: s.cwd,
      capabilities: { bounding: CAPS, effective: CAPS, permitted: CAPS },
      rlimits: [{ type: "RLIMIT_NOFILE", hard: 1048576, soft: 1048576 }],
      noNewPrivileges: false,
    },
    root: { path: s.rootfs, readonly: false },
    // A joined uts namespace keeps its owner's name (runtimes refuse to set one there).
    ...(joined.has("uts") ? {} : { hostname: s.hostname }),
    mounts: [
      { destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] },
      { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"] },
      { destination: "/dev/pts", type: "devpts", source: "devpts", options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
      { destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
      { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"] },
      { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
      { destination: "/sys/fs/cgroup", type: "cgroup", source: "cgroup", options: ["nosuid", "noexec", "nodev", "relatime", "ro"] },
      ...(s.layerMounts ?? []).map((m) => bind(m.source, m.destination, m.readonly)),
      ...[bind("hostname", "/etc/hostname"), bind("resolv.conf", "/etc/resolv.conf"), bind("hosts", "/etc/hosts")].filter((m) => !replaced.has(m.destination)),
      ...extra,
    ],
    linux: {
      cgroupsPath: s.cgroupsPath,
      resources,
      namespaces: ["pid", "ipc", "uts", "mount", "cgroup"].map(ns),
      maskedPaths: [
        "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
        "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
      ],
      readonlyPaths: ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    },
  };
}
