// Live layers and volumes in one TCG guest: an image (written by umoci)
// stacked into running containers and taken out again, images composed at
// run, host directories and named volumes bound in, a named volume kept
// across a VM reboot. Everything through the real CLI.
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HOST_BIN, ROOT, runCli } from "../helpers/agent.js";

const state = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-layers-test-"));
const store = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-layers-store-"));
const shared = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-layers-share-"));
const env = { FRACTAL_STATE: state };
const NAME = "layertest";
const cli = (args: string[]) => runCli(args, { env });
const vm = (cmd: string, ...args: string[]) => cli([cmd, "--vm", NAME, ...args]);
const layer = (sub: string, ...args: string[]) => cli(["layer", sub, "--vm", NAME, ...args]);
const out = (r: { stdout: Buffer }) => r.stdout.toString();
const inCtr = async (ctr: string, script: string) => vm("exec", ctr, "--", "sh", "-c", script);
const guest = async (script: string) => out(await vm("exec", "--", "sh", "-c", script));
const boot = () => cli(["boot", "--name", NAME, "--images", store, "--share", `${shared}:hostdir`, "--detach"]);
/** The number of shared stacks mounted in the guest. */
const stacks = async () => Number((await guest("grep -c ' /run/fractal/stacks/' /proc/mounts || true")).trim());

async function until(what: string, f: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (await f()) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}`);
}

beforeAll(async () => {
  fs.cpSync(path.join(ROOT, "build/images"), store, { recursive: true });
  execFileSync(path.join(ROOT, "test/fixtures/make-tools.sh"), [store], { stdio: ["ignore", "ignore", "inherit"] });
  fs.writeFileSync(path.join(shared, "from-host"), "host file\n");
  const r = await boot();
  if (r.code !== 0) throw new Error(`boot failed (${r.code}):\n${r.stderr}`);
}, 300_000);

afterAll(async () => {
  await cli(["vm", "stop", NAME]);
  for (const d of [state, store, shared]) fs.rmSync(d, { recursive: true, force: true });
}, 120_000);

describe("live layers", () => {
  it("stacks an image into a running container and takes it out again; the container's files stay on top and open files keep working", async () => {
    // The main process holds /etc/own open from before the add until after the rm.
    const script = "echo mine > /etc/tools.conf; echo own > /etc/own; exec 3</etc/own; touch /tmp/ready; while [ ! -e /tmp/go ]; do sleep 0.1; done; cat <&3 > /tmp/fd3; sleep 600";
    expect((await vm("run", "-d", "--name", "app", "busybox", "sh", "-c", script)).code).toBe(0);
    await until("the container to start", async () => (await inCtr("app", "test -e /tmp/ready")).code === 0);
    const before = await vm("exec", "app", "hello");
    expect(before.code).toBe(127);

    const add = await layer("add", "app", "tools:v1");
    expect(add.code, add.stderr).toBe(0);
    const id = out(add).trim();
    expect(id).toMatch(/^[0-9a-f]{12}$/);
    // Seen at once by a new process, from every layer of the image, with the image's own whiteout.
    expect(out(await vm("exec", "app", "hello"))).toBe("hello from tools\n");
    expect(out(await vm("exec", "app", "hello2"))).toBe("second tool\n");
    expect(out(await inCtr("app", "cat /opt/kit/data; ls /opt/kit"))).toBe("kit\ndata\n");
    // The container's own file over the image's.
    expect(out(await vm("exec", "app", "cat", "/etc/tools.conf"))).toBe("mine\n");
    // crun's binds below a new seam are still there.
    expect(out(await vm("exec", "app", "cat", "/etc/hostname")).trim()).toMatch(/^[0-9a-f]{12}$/);
    // cp reads the root as the container sees it.
    const cp = await vm("cp", "app:/usr/local/bin/hello", "-");
    expect(cp.code, cp.stderr).toBe(0);
    expect(cp.stdout.toString("latin1")).toContain("echo hello from tools");
    // cp writes through the seam too: into the container's own layer, so it outlives the image.
    const tool = path.join(shared, "tool3");
    fs.writeFileSync(tool, "#!/bin/sh\necho third tool\n", { mode: 0o755 });
    expect((await vm("cp", tool, "app:/usr/local/bin/")).code).toBe(0);
    expect(out(await vm("exec", "app", "tool3"))).toBe("third tool\n");

    const ls = out(await layer("ls", "app"));
    expect(ls).toMatch(/^image\s+busybox\s+[0-9a-f]{12}\s+1\s+\/\s+rw\s+.*\simage$/m);
    expect(ls).toMatch(new RegExp(`^${id}\\s+tools:v1\\s+[0-9a-f]{12}\\s+3\\s+/\\s+rw\\s+.*\\slive$`, "m"));

    // A process of the container holds the added tool open across the rm.
    const holder = new Promise<string>((resolve) => {
      const p = spawn(HOST_BIN, ["exec", "--vm", NAME, "app", "--", "sh", "-c", "exec 4</usr/local/bin/hello; touch /tmp/held; while [ ! -e /tmp/go ]; do sleep 0.1; done; cat <&4"], { env: { ...process.env, ...env } });
      let s = "";
      p.stdout.on("data", (b: Buffer) => (s += b.toString()));
      p.on("close", () => resolve(s));
    });
    await until("the holder", async () => (await inCtr("app", "test -e /tmp/held")).code === 0);
    // A write through the seam, while the image is there.
    expect((await inCtr("app", "echo after > /etc/after")).code).toBe(0);

    const rm = await layer("rm", "app", id.slice(0, 6));
    expect(rm.code, rm.stderr).toBe(0);
    expect((await vm("exec", "app", "hello")).code).toBe(127);
    expect(out(await inCtr("app", "cat /etc/tools.conf /etc/after; tool3; ls /usr/local/bin"))).toBe("mine\nafter\nthird tool\ntool3\n");
    // /opt was made for the image only: it goes with it.
    expect((await inCtr("app", "test -e /opt")).code).toBe(1);
    expect(out(await layer("ls", "app"))).not.toContain("tools:v1");

    expect((await inCtr("app", "touch /tmp/go")).code).toBe(0);
    expect(await holder).toBe("#!/bin/sh\necho hello from tools\n");
    await until("the main process to read its fd", async () => (await inCtr("app", "test -s /tmp/fd3")).code === 0);
    expect(out(await vm("exec", "app", "cat", "/tmp/fd3"))).toBe("own\n");
  }, 300_000);

  it("adds to one container only, and mounts an image added to many once", async () => {
    for (const n of ["one", "two"]) expect((await vm("run", "-d", "--name", n, "busybox", "sleep", "600")).code).toBe(0);
    const a = out(await layer("add", "one", "tools:v1")).trim();
    expect(out(await vm("exec", "one", "hello"))).toBe("hello from tools\n");
    expect((await vm("exec", "two", "hello")).code).toBe(127);
    expect(await stacks()).toBe(1);
    const b = out(await layer("add", "two", "tools:v1")).trim();
    expect(out(await vm("exec", "two", "hello"))).toBe("hello from tools\n");
    expect(await stacks()).toBe(1);
    expect((await layer("rm", "one", a)).code).toBe(0);
    expect(await stacks()).toBe(1);
    expect(out(await vm("exec", "two", "hello"))).toBe("hello from tools\n");
    expect((await layer("rm", "two", b)).code).toBe(0);
    expect(await stacks()).toBe(0);
    await vm("rm", "-f", "one", "two");
  }, 300_000);

  it("stacks at a path, read-only if asked, and composes images at run", async () => {
    expect((await vm("run", "-d", "--name", "at", "busybox", "sleep", "600")).code).toBe(0);
    const add = await layer("add", "--at", "/srv/extra", "--ro", "at", "tools:v1");
    expect(add.code, add.stderr).toBe(0);
    expect(out(await vm("exec", "at", "/srv/extra/usr/local/bin/hello"))).toBe("hello from tools\n");
    const w = await inCtr("at", "touch /srv/extra/x");
    expect(w.stderr).toMatch(/Read-only file system/);
    await vm("rm", "-f", "at");

    const once = await vm("run", "--rm", "--layer", "tools:v1", "--layer", "tools:v1:/srv", "busybox", "sh", "-c", "hello; cat /srv/opt/kit/data");
    expect(once.code, once.stderr).toBe(0);
    expect(out(once)).toBe("hello from tools\nkit\n");

    expect((await vm("run", "-d", "--name", "composed", "--layer", "tools:v1", "--layer", "tools:v1:/srv", "busybox", "sleep", "600")).code).toBe(0);
    const rows = out(await layer("ls", "composed")).trim().split("\n").slice(1);
    expect(rows.map((r) => r.trim().split(/\s+/).pop())).toEqual(["image", "run", "live"]);
    const [runId, srvId] = [rows[1]!.split(/\s+/)[0]!, rows[2]!.split(/\s+/)[0]!];
    const refused = await layer("rm", "composed", runId);
    expect(refused.code).toBe(125);
    expect(refused.stderr).toMatch(/part of composed's root \(run --layer over \/\) and cannot be removed/);
    expect((await layer("rm", "composed", srvId)).code).toBe(0);
    expect((await vm("exec", "composed", "test", "-e", "/srv/opt")).code).toBe(1);
    expect(out(await vm("exec", "composed", "hello"))).toBe("hello from tools\n");
    await vm("rm", "-f", "composed");
  }, 300_000);

  it("refuses bad requests with a clear message and keeps serving", async () => {
    expect((await vm("run", "-d", "--name", "victim", "busybox", "sh", "-c", "ln -s /tmp /lnk; echo x > /file; sleep 600")).code).toBe(0);
    await until("the symlink", async () => (await vm("exec", "victim", "test", "-L", "/lnk")).code === 0);
    const cases: [string[], RegExp][] = [
      [["add", "nosuch", "tools:v1"], /no such container: nosuch/],
      [["add", "victim", "nosuch:v9"], /nosuch:v9/],
      [["add", "--at", "/lnk/x", "victim", "tools:v1"], /\/lnk is a symlink in the container/],
      [["add", "--at", "/file", "victim", "tools:v1"], /\/file is not a directory in the container/],
      [["add", "--at", "/a,b", "victim", "tools:v1"], /overlayfs options cannot carry/],
      [["add", "--at", "/a/../b", "victim", "tools:v1"], /simplest form/],
      [["add", "--at", "rel", "victim", "tools:v1"], /must be absolute/],
      [["rm", "victim", "ffffff"], /has no layer ffffff/],
      [["rm", "victim", "image"], /part of victim's root \(its image\)/],
    ];
    for (const [args, msg] of cases) {
      const r = await layer(args[0]!, ...args.slice(1));
      expect(r.code, args.join(" ")).not.toBe(0);
      expect(r.stderr, args.join(" ")).toMatch(msg);
    }
    await vm("stop", "-t", "1", "victim");
    const stopped = await layer("add", "victim", "tools:v1");
    expect(stopped.stderr).toMatch(/victim is not running/);
    expect(out(await vm("exec", "--", "echo", "still here"))).toBe("still here\n");
    await vm("rm", "-f", "victim");
  }, 300_000);
});

describe("volumes", () => {
  it("binds host directories found in the VM's shares, read-write and read-only, and names the shares for one outside", async () => {
    const rw = await vm("run", "--rm", "-v", `${shared}:/data`, "busybox", "sh", "-c", "cat /data/from-host; echo from-container > /data/written");
    expect(rw.code, rw.stderr).toBe(0);
    expect(out(rw)).toBe("host file\n");
    expect(fs.readFileSync(path.join(shared, "written"), "utf8")).toBe("from-container\n");
    const ro = await vm("run", "--rm", "-v", `${shared}:/data:ro`, "busybox", "sh", "-c", "echo x > /data/y");
    expect(ro.code).toBe(1);
    expect(ro.stderr).toMatch(/Read-only file system/);
    const outside = await vm("run", "--rm", "-v", "/etc:/x", "busybox", "true");
    expect(outside.code).toBe(125);
    expect(outside.stderr).toContain(`VM ${NAME} does not share that host directory (its shares: ${fs.realpathSync(shared)}, ${store} at /var/lib/fractal/images (ro))`);
    const noVm = await cli(["--connect", "tcp://127.0.0.1:1", "run", "-v", `${shared}:/d`, "busybox", "true"]);
    expect(noVm.stderr).toMatch(/-v needs --vm NAME/);
  }, 300_000);

  it("keeps a named volume through container removal and a VM reboot; volume ls and rm", async () => {
    const w = await vm("run", "--rm", "-v", "keep:/v", "busybox", "sh", "-c", "echo kept > /v/f");
    expect(w.code, w.stderr).toBe(0);
    expect(fs.readFileSync(path.join(state, NAME, "volumes/keep/f"), "utf8")).toBe("kept\n");
    expect(out(await cli(["volume", "ls"]))).toMatch(new RegExp(`^${NAME}\\s+keep\\s`, "m"));

    expect((await vm("run", "-d", "--name", "user", "-v", "keep:/v", "busybox", "sleep", "600")).code).toBe(0);
    const busy = await cli(["volume", "rm", "keep"]);
    expect(busy.code).not.toBe(0);
    expect(busy.stderr).toMatch(/volume is in use by container user/);
    await vm("rm", "-f", "user");

    expect((await cli(["vm", "stop", NAME])).code).toBe(0);
    expect(out(await cli(["volume", "ls"]))).toMatch(new RegExp(`^${NAME}\\s+keep\\s`, "m"));
    expect((await boot()).code).toBe(0);
    const r = await vm("run", "--rm", "-v", "keep:/v", "busybox", "cat", "/v/f");
    expect(r.code, r.stderr).toBe(0);
    expect(out(r)).toBe("kept\n");

    expect((await cli(["volume", "rm", "keep"])).code).toBe(0);
    expect(out(await cli(["volume", "ls"]))).not.toMatch(/keep/);
    expect(fs.existsSync(path.join(state, NAME, "volumes/keep"))).toBe(false);
  }, 400_000);
});
