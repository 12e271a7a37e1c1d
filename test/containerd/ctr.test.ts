// fractal as a containerd runtime, driven by containerd's own ctr against a
// containerd of the test's own: one VM per namespace shared by its
// containers, containerd's snapshots as their roots, stdio through
// containerd's FIFOs, events, and the ways things die.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Containerd, imageTarballs, ROOT, RUNTIME, tmpdir, until } from "./daemon.js";

const IMAGE = "busybox:latest";
let cd: Containerd;
let work: string;

/** `ctr events` for the length of a test: the topics and payloads containerd saw. */
class Events {
  private out = "";
  private readonly p: ChildProcess;
  private constructor(address: string) {
    this.p = spawn("ctr", ["-a", address, "events"], { stdio: ["ignore", "pipe", "pipe"] });
    this.p.stdout!.on("data", (b: Buffer) => (this.out += b.toString()));
  }

  /**
   * Subscribed when it returns: a VM killed just after sends its exit events
   * within milliseconds, sooner than ctr events is up. A probe container's
   * create event shows the subscription is live.
   */
  static async open(): Promise<Events> {
    const ev = new Events(cd.address);
    await until("ctr events to subscribe", () => {
      if (ev.out.includes('"events-probe"')) return true;
      cd.ctr("container", "rm", "events-probe");
      expect(cd.ctr("container", "create", IMAGE, "events-probe").code).toBe(0);
      return false;
    }, 30_000);
    expect(cd.ctr("container", "rm", "events-probe").code).toBe(0);
    return ev;
  }

  has(topic: string, id: string): Record<string, unknown> | undefined {
    for (const line of this.out.split("\n")) {
      const m = line.match(/ (\/tasks\/[a-z-]+) (\{.*\})$/);
      if (m && m[1] === topic) {
        const ev = JSON.parse(m[2]!) as Record<string, unknown>;
        if (ev.container_id === id) return ev;
      }
    }
    return undefined;
  }
  stop(): void {
    this.p.kill();
  }
}

const run = (...args: string[]) => cd.ctr("run", "--runtime", RUNTIME, ...args);
const execIn = (id: string, execId: string, ...cmd: string[]) => cd.ctr("task", "exec", "--exec-id", execId, id, ...cmd);
const status = (id: string) => cd.ctr("task", "ls").stdout.split("\n").find((l) => l.startsWith(`${id} `))?.trim().split(/\s+/)[2];

beforeAll(async () => {
  work = tmpdir();
  cd = new Containerd();
  await cd.start();
  const { busybox, twoLayers } = imageTarballs(work);
  for (const args of [["image", "import", busybox], ["image", "import", "--base-name", "docker.io/library/two", twoLayers]]) {
    const imp = cd.ctr(...args);
    expect(imp.code, imp.stderr).toBe(0);
  }
  // The VM stays up while this runs, so the tests below do not each boot one.
  const keeper = run("-d", IMAGE, "keeper", "sleep", "1000000");
  expect(keeper.code, keeper.stderr).toBe(0);
}, 600_000);

afterAll(async () => {
  await cd?.destroy();
  if (work) fs.rmSync(work, { recursive: true, force: true });
}, 120_000);

describe("ctr with the fractal runtime", () => {
  it("runs a container: its stdout, its stderr apart, and its exit code", () => {
    const r = run("--rm", IMAGE, "r1", "sh", "-c", "echo out; echo err >&2; exit 7");
    expect(r.stdout).toBe("out\n");
    expect(r.stderr).toContain("err\n");
    expect(r.code).toBe(7);
    expect(cd.ctr("container", "ls", "-q").stdout).not.toContain("r1");
  });

  it("feeds stdin through containerd's FIFO and closes it at end of input", () => {
    const r = spawnSync("ctr", ["-a", cd.address, "run", "--runtime", RUNTIME, "--rm", IMAGE, "r2", "sh", "-c", "wc -c; echo done"], { input: "x".repeat(100_000), encoding: "utf8" });
    expect(r.stdout).toBe("100000\ndone\n");
    expect(r.status).toBe(0);
  });

  it("puts two containers of a namespace in one VM, on containerd's snapshots: one shared lower, an upper each", async () => {
    for (const id of ["a1", "a2"]) expect(run("-d", IMAGE, id, "sleep", "1000000").code).toBe(0);
    const bootIds = ["a1", "a2"].map((id) => execIn(id, "boot", "cat", "/proc/sys/kernel/random/boot_id").stdout.trim());
    expect(bootIds[0]).toMatch(/^[0-9a-f-]{36}$/);
    expect(bootIds[1]).toBe(bootIds[0]);
    // The root of each, as the guest mounted it: containerd's own snapshot directories.
    const opts = ["a1", "a2"].map((id) => {
      const line = execIn(id, "mnt", "grep", "^overlay / ", "/proc/mounts").stdout;
      return Object.fromEntries(line.split(" ")[3]!.split(",").map((o) => o.split("=") as [string, string]));
    });
    const snapshots = path.join(cd.dir, "root/io.containerd.snapshotter.v1.overlayfs/snapshots");
    expect(opts[0]!.lowerdir).toBe(opts[1]!.lowerdir);
    expect(opts[0]!.lowerdir!.startsWith(snapshots)).toBe(true);
    expect(opts[0]!.upperdir).not.toBe(opts[1]!.upperdir);
    // A write in the container lands in its upper directory on the host, in place.
    expect(execIn("a1", "w", "sh", "-c", "echo written-in-guest > /hello").code).toBe(0);
    expect(fs.readFileSync(path.join(opts[0]!.upperdir!, "hello"), "utf8")).toBe("written-in-guest\n");
    expect(fs.existsSync(path.join(opts[1]!.upperdir!, "hello"))).toBe(false);
  });

  it("lists tasks and their processes, and runs execs with their own exit codes", () => {
    const ls = cd.ctr("task", "ls").stdout;
    expect(ls).toMatch(/^a1\s+\d+\s+RUNNING$/m);
    expect(ls).toMatch(/^a2\s+\d+\s+RUNNING$/m);
    const ps = cd.ctr("task", "ps", "a1");
    expect(ps.code, ps.stderr).toBe(0);
    expect(ps.stdout.trim().split("\n").length).toBeGreaterThanOrEqual(2); // header and the sleep
    const e = execIn("a1", "e1", "sh", "-c", "echo from exec; exit 3");
    expect(e.stdout).toBe("from exec\n");
    expect(e.code).toBe(3);
  });

  it("delivers ctr task kill's signal, and containerd sees the exit status and the exit event", async () => {
    const ev = await Events.open();
    try {
      expect(run("-d", IMAGE, "k1", "sh", "-c", "trap 'exit 42' USR1; while :; do sleep 1; done").code).toBe(0);
      await until("k1 running", () => status("k1") === "RUNNING");
      await new Promise((r) => setTimeout(r, 500)); // the trap is set
      expect(cd.ctr("task", "kill", "-s", "SIGUSR1", "k1").code).toBe(0);
      await until("k1 stopped", () => status("k1") === "STOPPED");
      const exit = await until("the exit event", () => ev.has("/tasks/exit", "k1"));
      expect(exit.exit_status).toBe(42);
      expect(ev.has("/tasks/start", "k1")).toBeDefined();
      expect(cd.ctr("task", "rm", "k1").code).toBe(0);
      expect(await until("the delete event", () => ev.has("/tasks/delete", "k1"))).toMatchObject({ exit_status: 42 });
      cd.ctr("container", "rm", "k1");
    } finally {
      ev.stop();
    }
  });

  it("reports an OOM kill to containerd: the oom event, then exit 137", async () => {
    const ev = await Events.open();
    try {
      const r = run("--rm", "--memory-limit", String(32 << 20), IMAGE, "oom1", "sh", "-c", 'x=$(head -c 200000000 /dev/zero | tr "\\0" a); echo survived');
      expect(r.code).toBe(137);
      expect(r.stdout).not.toContain("survived");
      await until("the oom event", () => ev.has("/tasks/oom", "oom1"));
    } finally {
      ev.stop();
    }
  });

  it("gives ctr run -t and ctr task exec -t an interactive shell whose window resizes", () => {
    const pty = (args: string[]) => {
      const r = spawnSync(path.join(ROOT, "node_modules/.bin/bun"), [path.join(ROOT, "test/helpers/pty-shell.ts"), "ctr", "-a", cd.address, ...args], { encoding: "utf8", timeout: 300_000 });
      return JSON.parse(r.stdout) as { exitCode?: number; output: string; error?: string };
    };
    for (const r of [pty(["run", "-t", "--rm", "--runtime", RUNTIME, IMAGE, "tty1", "sh"]), pty(["task", "exec", "-t", "--exec-id", "tty2", "a2", "sh"])]) {
      expect(r.error, r.output).toBeUndefined();
      expect(r.output).toMatch(/\b42\b/);
      expect(r.output).toContain("30 100");
      expect(r.output).toContain("40 120");
      expect(r.exitCode).toBe(5);
    }
  });

  it("keeps running tasks across a containerd restart, found again through the shim's socket", async () => {
    await cd.kill();
    await cd.start();
    await until("a1 listed again", () => status("a1") === "RUNNING");
    expect(execIn("a1", "again", "cat", "/hello").stdout).toBe("written-in-guest\n");
  });

  it("fails every task of a VM that dies with an exit event (255), and the shim then goes when they are deleted", async () => {
    const ev = await Events.open();
    try {
      const [qemu] = cd.qemuPids();
      expect(qemu).toBeGreaterThan(0);
      process.kill(qemu!, "SIGKILL");
      for (const id of ["a1", "a2", "keeper"]) {
        expect((await until(`${id}'s exit event`, () => ev.has("/tasks/exit", id))).exit_status).toBe(255);
        expect(status(id)).toBe("STOPPED");
      }
      for (const id of ["a1", "a2", "keeper"]) {
        expect(cd.ctr("task", "rm", id).code).toBe(0);
        cd.ctr("container", "rm", id);
      }
      await until("the shim to exit", () => cd.shimPids().length === 0);
    } finally {
      ev.stop();
    }
  });

  it("leaves no VM when the shim is killed, even one too starved to answer QMP, and containerd reports the task stopped", async () => {
    expect(cd.ctr("-n", "other", "image", "import", path.join(work, "busybox.tar")).code).toBe(0);
    // Only this namespace's shim and VM: one left by a failed test before must not be the one killed.
    const [shimsBefore, vmsBefore] = [cd.shimPids(), cd.qemuPids()];
    expect(cd.ctr("-n", "other", "run", "--runtime", RUNTIME, "-d", IMAGE, "s1", "sleep", "1000000").code).toBe(0);
    const shims = cd.shimPids().filter((p) => !shimsBefore.includes(p));
    const vms = cd.qemuPids().filter((p) => !vmsBefore.includes(p));
    expect(shims).toHaveLength(1);
    expect(vms).toHaveLength(1);
    // A host too busy to run QEMU, played by stopping it: containerd gives
    // the delete command 5 s, and a QMP quit would wait on QEMU.
    process.kill(vms[0]!, "SIGSTOP");
    process.kill(shims[0]!, "SIGKILL");
    // containerd runs the shim's delete command when it sees the shim gone, and that kills the VM.
    const shimLog = () => cd.log().split("\n").filter((l) => /shim|delete|cleanup/i.test(l)).slice(-30).join("\n");
    await until("the VM to be gone", () => !cd.qemuPids().includes(vms[0]!), 60_000, shimLog);
    await until("s1 no longer running", () => !/^s1\s+\d+\s+RUNNING/m.test(cd.ctr("-n", "other", "task", "ls").stdout));
    cd.ctr("-n", "other", "task", "rm", "s1");
    expect(cd.ctr("-n", "other", "container", "rm", "s1").code).toBe(0);
  }, 600_000); // boots a VM

  it("runs fractal-host run --containerd from containerd's image store, and gives the snapshot back", () => {
    const state = path.join(work, "vms");
    const cli = (...args: string[]) => spawnSync(path.join(ROOT, "build/fractal-host"), args, { encoding: "utf8", timeout: 600_000, env: { ...process.env, FRACTAL_STATE: state } });
    try {
      const r = cli("run", "--containerd", "--containerd-address", cd.address, "busybox", "sh", "-c", "echo from the store; grep '^overlay / ' /proc/mounts; exit 4");
      expect(r.stdout).toContain("from the store\n");
      expect(r.stdout).toContain(`lowerdir=${path.join(cd.dir, "root/io.containerd.snapshotter.v1.overlayfs/snapshots")}`);
      expect(r.status, r.stderr).toBe(4);
      expect(cd.ctr("snapshot", "ls").stdout).not.toContain("fractal-run-");
      expect(cd.ctr("leases", "ls").stdout).not.toContain("fractal-run-");
      // Two layers: the image's snapshot is found by its ChainID, and both layers are in the root.
      const two = cli("run", "--containerd", "--containerd-address", cd.address, "two", "sh", "-c", "cat /layer2.txt; busybox true && echo busybox too");
      expect(two.stdout, two.stderr).toBe("from the second layer\nbusybox too\n");
      const missing = cli("run", "--containerd", "--containerd-address", cd.address, "no-such-image", "true");
      expect(missing.status).toBe(125);
      expect(missing.stderr).toContain("no image no-such-image in containerd's namespace default");
    } finally {
      for (const name of fs.existsSync(state) ? fs.readdirSync(state) : []) cli("vm", "stop", name);
    }
  }, 600_000); // boots a VM
});
