// VM tier: boots the real initramfs under QEMU (TCG here, KVM where usable)
// and drives it through the real CLI.
import type { ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeFrame } from "../../proto/frame.js";
import { ROOT, runCli } from "../helpers/agent.js";
import { catThrough } from "../helpers/noloss.js";

const state = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-vm-test-"));
const env = { FRACTAL_STATE: state };
const NAME = "vmtest";
const BUILD = path.join(ROOT, "build");
const cli = (args: string[], input?: string, started?: (p: ChildProcess) => void) => runCli(args, { env, input, started });

interface Rec {
  pid: number;
  accel: string;
  endpoints: { serial: string; tcp?: string; uart?: string; vsock?: string };
  console: string;
  boot: { kernel: string; initrd: string; agentImage?: string; tpm: boolean };
}
/** The process is gone (or a zombie waiting for its reaper: QEMU daemonized itself). */
function gone(pid: number): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(" ")[2] === "Z";
  } catch {
    return true;
  }
}
const record = (name: string): Rec => JSON.parse(fs.readFileSync(path.join(state, name, "vm.json"), "utf8"));

let bootedAt = 0;
beforeAll(async () => {
  const r = await cli(["boot", "--name", NAME, "--mem", "1G", "--share", `${BUILD}:fbuild:ro`, "--uart", "--detach"]);
  if (r.code !== 0) throw new Error(`boot failed (${r.code}):\n${r.stderr}`);
  bootedAt = Date.now();
}, 300_000);

afterAll(async () => {
  await cli(["vm", "stop", NAME, "stale1"]);
  fs.rmSync(state, { recursive: true, force: true });
}, 120_000);

describe("fractal-host boot", () => {
  it("lists the running VM with its accelerator and transports", async () => {
    const r = await cli(["ls"]);
    expect(r.code).toBe(0);
    const line = r.stdout.toString().split("\n").find((l) => l.startsWith(NAME));
    expect(line).toMatch(/running\s+(tcg|kvm)/);
    expect(line).toMatch(/serial:\/\//);
    expect(line).toMatch(/tcp:\/\/127\.0\.0\.1:\d+/);
  });

  it("boots the build's unpacked kernel by default (QEMU enters it at its PVH entry, no bzImage loader)", () => {
    expect(record(NAME).boot.kernel).toBe(path.join(BUILD, "kernel/vmlinux"));
  });

  it("boots the initramfs without the agent and runs the agent from its read-only erofs image, mapped in as virtio-pmem with DAX", async () => {
    expect(record(NAME).boot).toMatchObject({ initrd: path.join(BUILD, "initramfs-lite.cpio"), agentImage: path.join(BUILD, "agent.erofs") });
    const r = await cli(["exec", "--vm", NAME, "--", "sh", "-c", "cat /proc/mounts; echo ===; ls -l /bin/fractal-agent; echo ===; touch /lib/fractal/x; echo touch $?; echo ===; cat /run/fractal/agent.log"]);
    const [mounts, link, touch, logText] = r.stdout.toString().split("===\n");
    expect(mounts).toMatch(/^\/dev\/pmem\d+ \/lib\/fractal erofs ro,\S*dax=always/m);
    expect(link).toMatch(/fractal-agent -> \/lib\/fractal\/fractal-agent/);
    expect(touch).toMatch(/touch [1-9]/);
    // The supervisor loaded every module while the agent started, and said when each stage came.
    const [, loaded, total] = /boot: loaded (\d+) of (\d+) kernel modules in \d+ ms \(beside the agent's start\)/.exec(logText ?? "") ?? [];
    expect(Number(total)).toBeGreaterThan(10);
    expect(loaded).toBe(total);
    const stages = /agent started at uptime ([\d.]+) s \(supervisor started at ([\d.]+) s, agent's image mounted at ([\d.]+) s, agent exec'd at ([\d.]+) s\); Bun's runtime started at ([\d.]+) s, the agent's modules at ([\d.]+) s/.exec(logText ?? "");
    expect(stages, logText).not.toBeNull();
    // In the order they happen: supervisor, image, exec, Bun's runtime, the
    // agent's first module, the agent's main. /proc/uptime counts in 10 ms
    // steps, and Bun's start is derived from a reading of it.
    const [started, supervisor, image, exec, runtime, modules] = stages!.slice(1).map(Number) as [number, number, number, number, number, number];
    expect(image).toBeGreaterThanOrEqual(supervisor);
    expect(exec).toBeGreaterThanOrEqual(image);
    expect(runtime).toBeGreaterThanOrEqual(exec - 0.02);
    expect(modules).toBeGreaterThanOrEqual(runtime);
    expect(started).toBeGreaterThanOrEqual(modules);
  });

  it("runs commands over the virtio-serial channel", async () => {
    const r = await cli(["--connect", record(NAME).endpoints.serial, "exec", "--", "cat", "/proc/cmdline"]);
    expect(r.code).toBe(0);
    expect(r.stdout.toString()).toMatch(new RegExp(`fractal.hostname=${NAME}`));
  });

  it("carries 32 MiB through cat over virtio-serial with a pausing reader, byte for byte", async () => {
    const r = await catThrough(["--connect", record(NAME).endpoints.serial], 32 << 20, 7, env);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.bytes).toBe(32 << 20);
    expect(r.received).toBe(r.sent);
  }, 300_000);

  it("runs commands over TCP (user-mode network) with exit codes", async () => {
    const r = await cli(["--connect", record(NAME).endpoints.tcp!, "exec", "--", "sh", "-c", "hostname; exit 7"]);
    expect(r.stdout.toString()).toBe(`${NAME}\n`);
    expect(r.code).toBe(7);
  });

  it("runs commands over a plain UART (ttyS1 in raw mode), as on hardware, for a host that arrives late", async () => {
    // Later than any handshake timeout: a serial line must wait for its host indefinitely.
    const wait = bootedAt + 12_000 - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const data = Buffer.from(Array.from({ length: 256 }, (_, i) => i)); // every byte value, to prove raw mode
    const r = await runCli(["--connect", record(NAME).endpoints.uart!, "exec", "-i", "--", "cat"], { env, input: data });
    expect(r.code).toBe(0);
    expect(r.stdout.equals(data)).toBe(true);
  });

  it("finds the VM's transport with exec --vm", async () => {
    const r = await cli(["exec", "--vm", NAME, "-i", "--", "cat"], "through --vm");
    expect(r.stdout.toString()).toBe("through --vm");
  });

  it("has /dev/stdin, /dev/stdout, /dev/stderr and /dev/fd, which scripts write to and read from", async () => {
    const r = await runCli(["exec", "--vm", NAME, "-i", "--", "sh", "-c", "echo out > /dev/stdout; echo err > /dev/stderr; cat /dev/stdin; ls /dev/fd/"], { env, input: "in\n" });
    expect(r.stderr).toBe("err\n");
    const [out, inp, ...fds] = r.stdout.toString().trim().split(/\s+/);
    expect([out, inp]).toEqual(["out", "in"]);
    // ls lists its own descriptors: at least stdin, stdout and stderr.
    expect(fds).toEqual(expect.arrayContaining(["0", "1", "2"]));
    expect(r.code).toBe(0);
  });

  it("sets the guest up as init: mounts, modules, log file", async () => {
    const r = await cli(["exec", "--vm", NAME, "--", "sh", "-c", "cat /proc/mounts; echo ===; cat /proc/modules; echo ===; cat /run/fractal/agent.log"]);
    const [mounts, modules, logText] = r.stdout.toString().split("===\n");
    for (const [fsType, where] of [
      ["cgroup2", "/sys/fs/cgroup"],
      ["proc", "/proc"],
      ["devpts", "/dev/pts"],
      ["tmpfs", "/tmp"],
      ["tmpfs", "/run"],
      ["9p", BUILD],
    ]) {
      expect(mounts).toMatch(new RegExp(`^\\S+ ${where} ${fsType} `, "m"));
    }
    // cgroup v1 hierarchies from u-root's init were replaced, so v2 owns the controllers.
    expect(mounts).not.toMatch(/ cgroup rw/);
    for (const m of ["virtio_console", "overlay", "vsock_loopback", "9pnet_virtio", "erofs"]) expect(modules).toMatch(new RegExp(`^${m} `, "m"));
    expect(logText).toMatch(/boot: loaded \d+ of \d+ kernel modules/);
    // Each connection's lines (connected, authenticated, closed) go to the
    // file only: on the serial console they slowed every exec under TCG.
    expect(logText).toMatch(/fractal-agent debug: tcp \S+: authenticated as \S+/);
    const consoleText = fs.readFileSync(path.join(state, NAME, "console.log"), "utf8");
    expect(consoleText).toMatch(/fractal-agent info: listening on tcp:/);
    expect(consoleText).not.toMatch(/authenticated as|: connected$/m);
  });

  // Host-to-guest vsock needs the host's vhost-vsock; where it is missing
  // (this project's CI) the test is skipped, saying why, never passed.
  const vhostVsock = fs.existsSync("/dev/vhost-vsock");
  const why = "skipped: needs /dev/vhost-vsock on the host (modprobe vhost_vsock), which this machine lacks";
  if (!vhostVsock) console.warn(`fractal-host boot > reaches the agent over vsock from the host: ${why}`);
  it.skipIf(!vhostVsock)(`reaches the agent over vsock from the host, with its key${vhostVsock ? "" : ` (${why})`}`, async () => {
    const vsock = record(NAME).endpoints.vsock;
    expect(vsock).toMatch(/^vsock:\/\/\d+:1024$/);
    const r = await cli(["--connect", vsock!, "exec", "--", "sh", "-c", "echo over-host-vsock"]);
    expect(r.stdout.toString()).toBe("over-host-vsock\n");
  });

  it("refuses a vsock connection without a key, and serves one with (vsock loopback, CID 1, a client carried into the guest)", async () => {
    // Any local account of a host with vhost-vsock can reach a guest's CID:
    // an agent asks for a key there by default, as on TCP. (This host has no
    // vhost-vsock, so the guest's init agent has no vsock listener: a second
    // agent listens, with the test key authorised, as a guest's would be.)
    // The second agent runs under its own exec, not as a background job of the
    // guest's shell: u-root's gosh can crash (concurrent map read and write)
    // expanding variables while a `&` job runs. Its first start reads it from
    // the disk, so wait until it says it listens rather than for a fixed time.
    let agentExec: ChildProcess | undefined;
    let said = "";
    const agentDone = cli(["exec", "--vm", NAME, "--", "/bin/fractal-agent", "--listen", "vsock://:2000", "--authorized-keys", `${process.env.FRACTAL_KEY}.pub`], undefined, (p) => (agentExec = p));
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`the vsock agent did not listen within 60 s; it said:\n${said}`)), 60_000);
        agentExec!.stderr!.on("data", (b: Buffer) => {
          said += b.toString();
          if (said.includes("listening on vsock")) (clearTimeout(timer), resolve());
        });
        void agentDone.then((a) => reject(new Error(`the vsock agent ended (${a.code}): ${a.stderr}`)), reject);
      });
      const host = `${BUILD}/fractal-host`;
      const script = `${host} --connect vsock://1:2000 exec -- echo unkeyed; echo "status $?"; ${host} --key ${process.env.FRACTAL_KEY} --connect vsock://1:2000 exec -- sh -c 'echo over-vsock; exit 3'`;
      const r = await cli(["exec", "--vm", NAME, "--", "sh", "-c", script]);
      expect(r.stderr).toMatch(/the agent requires a key and none was given/);
      expect(r.stdout.toString()).toBe("status 125\nover-vsock\n");
      expect(r.code).toBe(3);
    } finally {
      agentExec?.kill("SIGTERM");
      await agentDone;
    }
  }, 120_000);

  it("keeps the VM's state directory and its key-less sockets private to their owner", () => {
    const mode = (f: string) => fs.statSync(path.join(state, NAME, f)).mode & 0o777;
    expect(mode(".")).toBe(0o700);
    for (const f of ["agent.sock", "uart.sock", "qmp.sock", "console.log"]) expect([f, mode(f)]).toEqual([f, 0o600]);
  });

  it("resynchronises the serial channel after a client dropped mid-frame", async () => {
    const sockPath = record(NAME).endpoints.serial.slice("serial://".length);
    const half = encodeFrame({ hello: { minVersion: 1, maxVersion: 1, client: "torn" } });
    await new Promise<void>((resolve, reject) => {
      const s = net.connect(sockPath, () => {
        s.write(Buffer.concat([Buffer.from("junk\x00\xf7"), half.subarray(0, half.length - 3)]), () => {
          s.destroy();
          resolve();
        });
      });
      s.on("error", reject);
    });
    const r = await cli(["--connect", record(NAME).endpoints.serial, "exec", "--", "echo", "after-tear"]);
    expect(r.stdout.toString()).toBe("after-tear\n");
  });

  it("detects a VM whose QEMU died and cleans its state", async () => {
    const b = await cli(["boot", "--name", "stale1", "--no-net", "--mem", "512M", "--detach"]);
    expect(b.code).toBe(0);
    // A command is running when the VM is killed under it: it ends at once, saying so.
    const t0 = Date.now();
    const running = cli(["exec", "--vm", "stale1", "--", "sleep", "600"]);
    await new Promise((r) => setTimeout(r, 3000));
    process.kill(record("stale1").pid, "SIGKILL");
    const cut = await running;
    expect(cut.code).toBe(125);
    expect(cut.stderr).toMatch(/connection (closed|lost)/);
    expect(Date.now() - t0).toBeLessThan(30_000);
    await new Promise((r) => setTimeout(r, 500));
    const ls = await cli(["ls"]);
    expect(ls.stdout.toString()).toMatch(/stale1\s+stale/);
    expect(ls.stderr).toMatch(/stale1: QEMU \(pid \d+\) is gone; removed its stale state/);
    const e = await cli(["exec", "--vm", "stale1", "--", "true"]);
    expect(e.code).toBe(125);
    expect(e.stderr).toMatch(/no VM named stale1/);
  }, 300_000);

  it("gives clear errors, not a hang, when a shared directory disappears from the host", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-vanishing-"));
    fs.writeFileSync(path.join(dir, "file"), "here\n");
    const b = await cli(["boot", "--name", "shares1", "--no-net", "--mem", "512M", "--share", `${dir}:vanish`, "--detach"]);
    expect(b.code).toBe(0);
    try {
      fs.rmSync(dir, { recursive: true });
      const t0 = Date.now();
      const r = await cli(["exec", "--vm", "shares1", "--", "sh", "-c", `ls ${dir}; cat ${dir}/file; echo more > ${dir}/new; echo done`]);
      expect(r.stdout.toString()).toMatch(/done\n$/);
      expect(r.stderr).toMatch(/no such file or directory/i);
      expect(Date.now() - t0).toBeLessThan(30_000);
      // The agent is unharmed.
      expect((await cli(["exec", "--vm", "shares1", "--", "true"])).code).toBe(0);
    } finally {
      await cli(["vm", "stop", "shares1"]);
    }
  }, 300_000);

  it("follows the console in the foreground until the VM is powered off from elsewhere", async () => {
    let out = "";
    const fg = runCli(["boot", "--name", "fg1", "--no-net", "--mem", "512M"], {
      env,
      started: (p) => p.stdout!.on("data", (b: Buffer) => (out += b.toString())),
    });
    const t0 = Date.now();
    while (!/console follows/.test(out) && Date.now() - t0 < 240_000) await new Promise((r) => setTimeout(r, 200));
    // The guest's own console lines come through, read from where the last read stopped.
    while (!/fractal-agent/.test(out) && Date.now() - t0 < 240_000) await new Promise((r) => setTimeout(r, 200));
    const stop = await cli(["vm", "stop", "fg1"]);
    expect(stop.stdout.toString()).toBe("fg1: powered off\n");
    const r = await fg;
    expect(r.code).toBe(0);
    expect(out).toMatch(/fg1: QEMU exited\n$/);
    expect(out.match(/console follows/g)).toHaveLength(1);
  }, 300_000);

  it("stops the VM gracefully through its agent", async () => {
    const pid = record(NAME).pid;
    const r = await cli(["vm", "stop", NAME]);
    expect(r.stdout.toString()).toBe(`${NAME}: powered off\n`);
    expect(fs.existsSync(path.join(state, NAME))).toBe(false);
    expect(gone(pid)).toBe(true);
  }, 120_000);
});

describe("a guest whose agent cannot start", () => {
  it("makes boot fail with a clear error and the console's last lines (the initramfs without the agent, booted without its disk)", async () => {
    const r = await cli(["boot", "--name", "broken", "--no-net", "--mem", "512M", "--initrd", path.join(BUILD, "initramfs-lite.cpio"), "--timeout", "40", "--detach"]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/the agent did not answer within 40 s/);
    // Where the guest was when boot gave up: the supervisor waits, so QEMU still runs it.
    expect(r.stderr).toMatch(/QEMU reports the guest running; vCPU 0( halted)? in (the kernel|user space) at [0-9a-f]+, vCPU 1/);
    expect(r.stderr).toContain(`fractal-supervise: /bin/fractal-agent is not in the initramfs, no pmem device holds the agent's image and no disk has serial "fractal-agent"`);
    expect(fs.existsSync(path.join(state, "broken"))).toBe(false);
  }, 300_000);

  it("says so when the guest printed nothing, with where QEMU has its vCPUs (a kernel that never reached init)", async () => {
    // One second is far less than a kernel under TCG needs to reach init.
    const r = await cli(["boot", "--name", "early", "--no-net", "--mem", "512M", "--timeout", "1", "--detach"]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/the agent did not answer within 1 s/);
    expect(r.stderr).toMatch(/QEMU reports the guest running; vCPU 0[a-z ]* at [0-9a-f]+/);
    expect(r.stderr).toContain("The guest printed nothing on its console: its kernel never reached init");
    expect(fs.existsSync(path.join(state, "early"))).toBe(false);
  }, 120_000);
});

