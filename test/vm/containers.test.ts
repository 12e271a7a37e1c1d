// Containers in one TCG guest: images written by umoci and skopeo (OCI
// layouts, a docker-archive, zstd layers), guest-unpack and shared-unpacked
// layers, whiteouts and opaque directories, corrupt and escaping layers,
// the docker-style CLI, limits, and many containers at once.
import { execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import http from "node:http";
import net from "node:net";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ImageStore } from "../../oci/store.js";
import { HOST_BIN, ROOT, runCli } from "../helpers/agent.js";
import { consoleOnFailure } from "../helpers/console-on-failure.js";

const state = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-ctr-test-"));
const store = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-ctr-store-"));
const env = { FRACTAL_STATE: state };
const NAME = "ctrtest";
const cli = (args: string[], input?: string) => runCli(args, { env, input });
const vm = (cmd: string, ...args: string[]) => cli([cmd, "--vm", NAME, ...args]);
const guest = async (script: string) => (await cli(["exec", "--vm", NAME, "--", "sh", "-c", script])).stdout.toString();
/** The pid and command line of the process that started a container's runtime (crun, the container's parent). */
async function shimOf(name: string): Promise<string> {
  const ppid = async (pid: string) => /^PPid:\s+(\d+)$/m.exec(await guest(`cat /proc/${pid}/status`))?.[1] ?? "?";
  const bundles = (await guest("ls /run/fractal/containers")).split(/\s+/).filter(Boolean);
  for (const b of bundles) {
    const rec = JSON.parse(await guest(`cat /run/fractal/containers/${b}/container.json`)) as { name: string };
    if (rec.name !== name) continue;
    const shim = await ppid(await ppid((await guest(`cat /run/fractal/containers/${b}/pid`)).trim()));
    return `${shim} ${(await guest(`cat /proc/${shim}/cmdline`)).split("\0").join(" ")}`;
  }
  throw new Error(`no bundle for container ${name}`);
}
const out = (r: { stdout: Buffer }) => r.stdout.toString();

/** The default busybox image's one layer blob (gzip tar), as the base of the test images. */
function busyboxLayer(): string {
  const images = path.join(ROOT, "build/images");
  const blob = (d: string) => path.join(images, "blobs/sha256", d.split(":")[1]!);
  const index = JSON.parse(fs.readFileSync(path.join(images, "index.json"), "utf8"));
  const manifest = JSON.parse(fs.readFileSync(blob(index.manifests[0].digest), "utf8"));
  return blob(manifest.layers[0].digest);
}

beforeAll(async () => {
  execFileSync(path.join(ROOT, "test/fixtures/make-store.sh"), [busyboxLayer(), store], { stdio: ["ignore", "ignore", "inherit"] });
  fs.cpSync(path.join(ROOT, "build/images"), store, { recursive: true });
  // shared:v1 is unpacked by the host; every other image by the guest.
  const u = await cli(["image", "unpack", store, "shared:v1"]);
  if (u.code !== 0) throw new Error(`image unpack failed: ${u.stderr}`);
  // With a network the agent also listens on TCP, which takes many clients at
  // once (wait in one, kill in another); the serial line takes one.
  const r = await cli(["boot", "--name", NAME, "--images", store, "--detach"]);
  if (r.code !== 0) throw new Error(`boot failed (${r.code}):\n${r.stderr}`);
}, 300_000);

const printConsoleIfFailed = consoleOnFailure(state, NAME);

afterAll(async () => {
  printConsoleIfFailed();
  await cli(["vm", "stop", NAME]);
  fs.rmSync(state, { recursive: true, force: true });
  fs.rmSync(store, { recursive: true, force: true });
}, 120_000);

describe("images", () => {
  it("lists OCI layouts, a docker-archive and zstd layers, on the host and in the guest", async () => {
    for (const r of [await cli(["images", store]), await vm("images")]) {
      const text = out(r);
      for (const ref of ["busybox:latest", "umoci:test", "docker.io/fractal/archive:v1", "zstd:test", "shared:v1"]) expect(text).toMatch(new RegExp(`^${ref.replace(/[.:/]/g, "\\$&")}\\s+[0-9a-f]{12}\\s`, "m"));
      expect(text).toMatch(/^umoci:test\s+\S+\s+\S+\s+3\s/m);
      expect(text).toMatch(/^shared:v1\s+\S+\s+\S+\s+3\s+yes\s/m);
    }
  }, 120_000);

  it("runs what umoci and skopeo wrote, with whiteouts and opaque directories honoured", async () => {
    // Started together: their layers are the same (same diff_ids), so the
    // guest must unpack each once even with three runs asking at once.
    const refs = ["umoci:test", "fractal/archive:v1", "zstd:test"];
    const runs = await Promise.all(refs.map((ref) => vm("run", "--rm", ref, "sh", "-c", "ls /data /olddir; cat /marker")));
    for (const r of runs) {
      expect(r.stderr).toBe("");
      expect(out(r)).toBe("/data:\nkeep\nnew\n\n/olddir:\nc\nbase\n");
      expect(r.code).toBe(0);
    }
    const cache = (await guest("ls /run/fractal/layers")).split("\n").filter((l) => l !== "");
    expect(cache).toHaveLength(3);
    expect(cache.join(" ")).not.toMatch(/partial/);
    // The image's own Cmd, Env and WorkingDir.
    const dflt = await vm("run", "--rm", "umoci:test");
    expect(out(dflt)).toBe("hello from /data\n");
  }, 180_000);

  it("mounts layers the host unpacked straight off the share", async () => {
    const r = await vm("run", "--rm", "shared:v1", "sh", "-c", "ls /data /olddir; cat /marker");
    expect(out(r)).toBe("/data:\nkeep\nnew\n\n/olddir:\nc\nshared\n");
    const d = await vm("run", "-d", "--name", "shared1", "shared:v1", "sleep", "60");
    expect(d.code).toBe(0);
    const mounts = await guest("cat /proc/mounts");
    const line = mounts.split("\n").find((l) => l.includes(out(d).trim()))!;
    expect(line).toMatch(/lowerdir=\/var\/lib\/fractal\/images\/unpacked\/[0-9a-f]{64}:\/var\/lib\/fractal\/images\/unpacked\//);
    await vm("rm", "-f", "shared1");
  }, 120_000);

  it("refuses a corrupt or truncated blob, naming it, and keeps nothing half-unpacked", async () => {
    const bad = await vm("run", "--rm", "corrupt:test", "true");
    expect(bad.code).toBe(125);
    expect(bad.stderr).toMatch(/layer sha256:[0-9a-f]{64}: .*(corrupt|does not match|decompress)/);
    const cut = await vm("run", "--rm", "truncated:test", "true");
    expect(cut.code).toBe(125);
    expect(cut.stderr).toMatch(/layer sha256:[0-9a-f]{64}: .*(truncated|unexpected end|decompress)/i);
    expect(await guest("ls /run/fractal/layers")).not.toMatch(/partial/);
    expect(out(await vm("ps", "-a"))).not.toMatch(/corrupt|truncated/);
  }, 120_000);

  it("refuses a layer whose content is not the diff_id its config names, small or hashed on a worker, and caches nothing", async () => {
    for (const tag of ["hostile:liar", "hostile:liar-big"]) {
      const r = await vm("run", "--rm", tag, "true");
      expect(r.code).toBe(125);
      expect(r.stderr).toMatch(/layer sha256:[0-9a-f]{64}: content does not match the image config \(corrupt blob\): uncompressed it is sha256:[0-9a-f]{64}, the config says sha256:[0-9a-f]{64}/);
    }
    // Nothing is kept under the digest the config claimed (make-hostile.py's), where another image would find it.
    const claimed = createHash("sha256").update("some other layer").digest("hex");
    const layers = await guest("ls /run/fractal/layers");
    expect(layers).not.toMatch(/partial/);
    expect(layers).not.toContain(claimed);
    expect(out(await vm("run", "--rm", "busybox", "echo", "alive"))).toBe("alive\n");
  }, 120_000);

  it("refuses a layer entry that climbs out, and keeps a write through a symlink inside the layer", async () => {
    const dotdot = await vm("run", "--rm", "escape:dotdot", "true");
    expect(dotdot.code).toBe(125);
    expect(dotdot.stderr).toMatch(/layer sha256:[0-9a-f]{64}: entry "..\/..\/..\/..\/escaped-dotdot" points outside the layer/);
    const link = await vm("run", "--rm", "escape:link", "cat", "/run/escaped-link");
    expect(out(link)).toBe("contained\n");
    expect(await guest("ls /escaped-dotdot /run/escaped-link /run/fractal/escaped-dotdot 2>&1; true")).not.toMatch(/^\/\S*escaped/m);
  }, 120_000);

  it("lets no container open a disk or memory device a layer smuggled in; refuses an endless stream in the guest too", async () => {
    const r = await vm("run", "--rm", "hostile:devices", "sh", "-c", "stat -c %F /dev-sda; head -c1 /dev-sda; head -c1 /dev-mem; echo done");
    expect(out(r)).toBe("block special file\ndone\n");
    // The device cgroup refuses it before the kernel looks for a disk (ENXIO here would mean it was let through).
    expect(r.stderr).toMatch(/dev-sda: Operation not permitted/);
    expect(r.stderr).toMatch(/dev-mem: Operation not permitted/);
    const t = await vm("run", "--rm", "hostile:trailer", "true");
    expect(t.code).toBe(125);
    expect(t.stderr).toMatch(/layer sha256:[0-9a-f]{64}: more than 1\.0 MiB of data that no tar entry accounts for/);
    expect(await guest("ls /run/fractal/layers | grep -c partial; true")).toBe("0\n");
    // The agent is still serving.
    expect(out(await vm("run", "--rm", "busybox", "echo", "alive"))).toBe("alive\n");
  }, 180_000);

  it("keeps owners, set-id modes, mtimes, xattrs, hard links, device nodes and fifos", async () => {
    const r = await vm("run", "--rm", "escape:meta", "sh", "-c", 'stat -c "%u:%g %a %Y %h" /meta/owned; stat -c "%a %Y" /meta; stat -c "%F %t,%T" /meta/null; stat -c "%F" /meta/fifo; [ /meta/owned -ef /meta/hard ] && echo linked');
    expect(r.stderr).toBe("");
    expect(out(r)).toBe("1000:1000 4755 1234567890 2\n700 1000000000\ncharacter special file 1,3\nfifo\nlinked\n");
    // The xattr, read in the guest from the unpacked layer (busybox has no getfattr).
    const top = new ImageStore(store).resolve("escape:meta").layers.at(-1)!;
    const file = `/run/fractal/layers/${top.diffId.slice(7)}/meta/owned`;
    const code = `const {dlopen,FFIType}=require("bun:ffi");const c=dlopen("libc.so.6",{lgetxattr:{args:[FFIType.cstring,FFIType.cstring,FFIType.ptr,FFIType.u64],returns:FFIType.i64}});const b=Buffer.alloc(64);const n=Number(c.symbols.lgetxattr(Buffer.from("${file}\\0"),Buffer.from("trusted.fractal\\0"),b,64));console.log(n<0?"none":b.subarray(0,n).toString())`;
    const x = await cli(["exec", "--vm", NAME, "-e", "BUN_BE_BUN=1", "--", "/bin/fractal-agent", "-e", code]);
    expect(out(x)).toBe("kept\n");
  }, 120_000);
});

describe("containers", () => {
  it("propagates exit codes and says when a command is not there", async () => {
    expect((await vm("run", "--rm", "busybox", "sh", "-c", "exit 42")).code).toBe(42);
    const nf = await vm("run", "--rm", "busybox", "no-such-cmd");
    expect(nf.code).toBe(127);
    expect(nf.stderr).toMatch(/no-such-cmd: executable file not found/);
    const img = await vm("run", "--rm", "no/such:image", "true");
    expect(img.stderr).toMatch(/image no\/such:image not found/);
    // fractal's own failures are 125; only the command itself missing is 127.
    expect(img.code).toBe(125);
    for (const args of [["exec", "no-such-container", "true"], ["logs", "no-such-container"], ["kill", "no-such-container"], ["wait", "no-such-container"]]) {
      const r = await vm(args[0]!, ...args.slice(1));
      expect(r.stderr).toMatch(/no such container: no-such-container/);
      expect(r.code).toBe(125);
    }
  }, 120_000);

  it("keeps a detached container running after its client left; logs, exec, kill, wait, rm", async () => {
    const id = out(await vm("run", "-d", "--name", "ticker", "-e", "WHO=ticker", "busybox", "sh", "-c", "echo out-$WHO; echo err-$WHO >&2; exec sleep 600")).trim();
    expect(id).toMatch(/^[0-9a-f]{32}$/);
    const ps = out(await vm("ps"));
    expect(ps).toMatch(new RegExp(`^${id.slice(0, 12)}\\s+busybox\\s.*Up .*ticker$`, "m"));
    const logs = await vm("logs", "ticker");
    expect(out(logs)).toBe("out-ticker\n");
    expect(logs.stderr).toBe("err-ticker\n");
    const ex = await vm("exec", "-u", "nobody", "-w", "/tmp", "ticker", "sh", "-c", 'echo "$(id -u) $(pwd) $WHO $(hostname)"; exit 3');
    expect(out(ex)).toBe(`65534 /tmp ticker ${id.slice(0, 12)}\n`);
    expect(ex.code).toBe(3);
    expect((await vm("exec", "ticker", "no-such-cmd")).code).toBe(127);
    // As under docker: /dev/stdout reopens, in an exec (crun exec on exec's pipes) and in a container's own process.
    const dev = await vm("exec", "ticker", "sh", "-c", "echo exec-dev > /dev/stdout; echo exec-err > /dev/stderr");
    expect([out(dev), dev.stderr]).toEqual(["exec-dev\n", "exec-err\n"]);
    expect(out(await vm("run", "--rm", "busybox", "sh", "-c", "echo run-dev > /dev/stdout"))).toBe("run-dev\n");
    const waiter = vm("wait", "ticker");
    await vm("kill", "-s", "KILL", "ticker");
    const w = await waiter;
    expect(out(w)).toBe("137\n");
    expect(out(await vm("ps", "-a"))).toMatch(/Exited \(137\) .* ticker$/m);
    expect((await vm("rm", "ticker")).code).toBe(0);
    expect(out(await vm("ps", "-a"))).not.toMatch(/ticker/);
    const gone = await vm("logs", "ticker");
    expect(gone.stderr).toMatch(/no such container: ticker/);
  }, 180_000);

  it("attaches to a running container's output and input; stop ends it", async () => {
    await vm("run", "-d", "-i", "--name", "echoer", "busybox", "sh", "-c", 'while read l; do echo "got $l"; done; echo bye');
    const r = await vm("attach", "echoer").then((x) => x);
    // attach with stdin closed at once: the container sees EOF and ends.
    expect(out(r)).toMatch(/bye\n$/);
    await vm("run", "-d", "--name", "sleeper", "busybox", "sleep", "600");
    const st = await vm("stop", "-t", "1", "sleeper");
    expect(st.code).toBe(0);
    expect(out(await vm("ps", "-a"))).toMatch(/Exited \(137\) .* sleeper$/m);
    await vm("rm", "sleeper");
    await vm("rm", "echoer");
  }, 180_000);

  it("replays a 200 MiB log streamed, with the agent's memory flat", async () => {
    const size = 200 << 20;
    expect((await vm("run", "-d", "--name", "big", "busybox", "head", "-c", String(size), "/dev/zero")).code).toBe(0);
    expect(out(await vm("wait", "big"))).toBe("0\n");
    const agentPid = (await guest("pidof fractal-agent")).trim();
    // Reset the agent's peak RSS (VmHWM), so the peak read after is the replay's.
    await guest(`echo 5 > /proc/${agentPid}/clear_refs`);
    const kib = (field: string, status: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)![1]);
    const before = kib("VmRSS", await guest(`cat /proc/${agentPid}/status`));
    const logs = await vm("logs", "big");
    expect(logs.stdout.length).toBe(size);
    expect(logs.stdout.every((b) => b === 0)).toBe(true);
    const peak = kib("VmHWM", await guest(`cat /proc/${agentPid}/status`));
    console.log(`200 MiB log replayed: agent RSS ${(before / 1024).toFixed(0)} MiB, peak ${(peak / 1024).toFixed(0)} MiB`);
    expect((peak - before) / 1024).toBeLessThan(32);
    await vm("rm", "big");
  }, 300_000);

  it("never lets a stopped logs -f reader hold a container back", async () => {
    const size = 100 << 20;
    expect((await vm("run", "-d", "--name", "flood", "busybox", "sh", "-c", `sleep 3; head -c ${size} /dev/zero; echo done`)).code).toBe(0);
    let follower: import("node:child_process").ChildProcess | undefined;
    const following = runCli(["logs", "--vm", NAME, "-f", "flood"], { env, started: (p) => (follower = p) });
    await new Promise((r) => setTimeout(r, 1500));
    follower!.kill("SIGSTOP");
    // Alone it finishes in seconds; behind a reader that paced it, never.
    const w = await vm("wait", "flood");
    expect(out(w)).toBe("0\n");
    follower!.kill("SIGCONT");
    const f = await following;
    expect(f.code).toBe(0);
    expect(f.stdout.length).toBe(size + 5);
    expect(f.stdout.subarray(size).toString()).toBe("done\n");
    await vm("rm", "flood");
  }, 300_000);

  it("gives two containers writing the same path each their own copy", async () => {
    const [a, b] = await Promise.all(["one", "two"].map((w) => vm("run", "--rm", "busybox", "sh", "-c", `echo ${w} > /etc/shared-path; sleep 2; cat /etc/shared-path`)));
    expect(out(a)).toBe("one\n");
    expect(out(b)).toBe("two\n");
    expect(out(await vm("run", "--rm", "busybox", "sh", "-c", "cat /etc/shared-path 2>&1; true"))).toMatch(/No such file/);
  }, 120_000);

  it("enforces memory and pids limits; an OOM kill is reported by run, wait and ps", async () => {
    const hog = await vm("run", "--name", "hog", "--memory", "32M", "busybox", "sh", "-c", 'x=$(head -c 200000000 /dev/zero | tr "\\0" a); echo survived');
    expect(hog.code).toBe(137);
    expect(out(hog)).not.toMatch(/survived/);
    expect(out(await vm("wait", "hog"))).toBe("137 (OOM killed)\n");
    expect(out(await vm("ps", "-a"))).toMatch(/Exited \(137\) .*OOM killed\s+hog$/m);
    await vm("rm", "hog");
    const forks = await vm("run", "--rm", "--pids", "4", "busybox", "sh", "-c", "for i in 1 2 3 4 5 6; do sleep 1 & done; wait");
    expect(forks.stderr).toMatch(/can't fork/);
    // Nothing else was affected: the agent, the guest and new containers work.
    expect(out(await vm("run", "--rm", "busybox", "echo", "unaffected"))).toBe("unaffected\n");
    expect((await vm("exec", "--", "true")).code).toBe(0);
  }, 120_000);

  it("runs an interactive shell on a terminal: resize and Ctrl-C reach it", () => {
    const bun = path.join(ROOT, "node_modules/.bin/bun");
    const helper = path.join(ROOT, "test/helpers/pty-cli.ts");
    const run = (scenario: string) => JSON.parse(execFileSync(bun, [helper, scenario, `vm:${NAME}`, "run", "--rm", "-it", "busybox"], { env: { ...process.env, ...env } }).toString());
    const r = run("resize");
    expect(r.output).toMatch(/30 100/);
    expect(r.output).toMatch(/40 120/);
    expect(r.exitCode).toBe(7);
    expect(r.restored).toBe(true);
    const c = run("ctrlc");
    expect(c.output).toMatch(/got-INT/);
    expect(c.exitCode).toBe(9);
  }, 180_000);

  it("runs 20 containers from one image at once in a 1 GiB guest, sharing its layer", async () => {
    for (let i = 0; i < 20; i++) {
      const r = await vm("run", "-d", "--name", `many${i}`, "busybox", "sleep", "600");
      expect(r.code).toBe(0);
    }
    const ps = out(await vm("ps"));
    expect(ps.split("\n").filter((l) => / many\d+$/.test(l))).toHaveLength(20);
    const lowers = new Set(
      (await guest("cat /proc/mounts"))
        .split("\n")
        .filter((l) => l.startsWith("overlay /run/fractal/containers/"))
        .map((l) => /lowerdir=([^,]+)/.exec(l)![1]),
    );
    expect(lowers.size).toBe(1);
    for (let i = 0; i < 20; i++) await vm("rm", "-f", `many${i}`);
    expect(out(await vm("ps", "-a"))).not.toMatch(/many/);
  }, 300_000);
});

describe("faults", () => {
  const until = async (what: string, check: () => Promise<boolean>, ms = 90_000) => {
    const end = Date.now() + ms;
    while (!(await check())) {
      if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  };

  it("hangs up an interactive exec whose host went away; a detached container keeps running", async () => {
    await vm("run", "-d", "--name", "steady", "busybox", "sh", "-c", "trap 'echo stopping; exit 0' TERM; i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.2; done");
    const marker = "/tmp/hup-seen";
    let ready = false;
    // In the container, for busybox's sh: the guest's own shell (u-root's gosh) has no traps.
    const r = runCli(["exec", "--vm", NAME, "-i", "steady", "--", "sh", "-c", `trap 'echo hup > ${marker}; exit 0' HUP; echo ready; while :; do sleep 0.1; done`], {
      env,
      input: undefined,
      started: (p) => {
        p.stdout!.on("data", (b: Buffer) => {
          if (!ready && b.toString().includes("ready")) {
            ready = true;
            p.kill("SIGKILL"); // the host side vanishes without a goodbye
          }
        });
      },
    });
    // runCli ends stdin at once; the remote shell does not read it.
    expect((await r).signal).toBe("SIGKILL");
    await until("the process saw SIGHUP", async () => out(await vm("exec", "steady", "--", "sh", "-c", `cat ${marker} 2>/dev/null; true`)) === "hup\n", 30_000);
    expect(out(await vm("ps"))).toMatch(/Up .*steady$/m);
  }, 120_000);

  it("restarts an agent killed with SIGKILL; it finds the running container again, streams it and stops it", async () => {
    const before = out(await vm("logs", "steady")).split("\n").filter((l) => l.startsWith("tick")).length;
    // The agent dies mid-request: this exec gets no answer, only a hang-up.
    const killed = await vm("exec", "--", "sh", "-c", "kill -9 $(pidof fractal-agent)");
    expect(killed.code).toBe(125);
    await until("the agent answers again", async () => (await vm("ping")).code === 0);
    const ps = out(await vm("ps"));
    expect(ps).toMatch(/Up .*steady$/m);
    // Its output went on being kept while no agent read it, and still flows.
    await new Promise((r) => setTimeout(r, 1000));
    const ticks = out(await vm("logs", "steady")).split("\n").filter((l) => l.startsWith("tick"));
    expect(ticks.length).toBeGreaterThan(before + 3);
    expect(ticks.map((l) => Number(l.split(" ")[1]))).toEqual(ticks.map((_, i) => i)); // none lost, none twice
    const stop = await vm("stop", "steady");
    expect(stop.code).toBe(0);
    expect(out(await vm("ps", "-a"))).toMatch(/Exited \(0\) .*steady$/m);
    expect(out(await vm("logs", "steady"))).toMatch(/stopping\n$/);
    expect(await guest("cat /run/fractal/agent.log")).toMatch(/found container steady \(\w+\) left by a previous agent/);
    await vm("rm", "steady");
  }, 180_000);

  it("keeps a container's stdin across an agent restart, and ends it when the client closes it", async () => {
    expect((await vm("run", "-d", "-i", "--name", "reader", "busybox", "sh", "-c", "while read l; do echo got $l; done; echo eof")).code).toBe(0);
    await guest("kill -9 $(pidof fractal-agent); true");
    await until("the agent answers again", async () => (await vm("ping")).code === 0);
    expect(out(await vm("ps"))).toMatch(/Up .*reader$/m);
    // One shim keeps every container: the restarted agent starts new ones through the same process.
    expect((await vm("run", "-d", "--name", "after", "busybox", "sleep", "60")).code).toBe(0);
    const shims = await Promise.all(["reader", "after"].map(shimOf));
    expect(shims[0]).toMatch(/^\d+ \/bin\/fractal-ns -shimd /);
    expect(shims[1]).toBe(shims[0]);
    await vm("rm", "-f", "after");
    const a = await cli(["attach", "--vm", NAME, "reader"], "one\ntwo\n");
    expect(out(a)).toBe("got one\ngot two\neof\n");
    expect(out(await vm("wait", "reader"))).toBe("0\n");
    await vm("rm", "reader");
  }, 180_000);
});

describe("port-forward", () => {
  it("reaches busybox httpd in a container over TCP and over virtio-serial, and ends when the container exits", async () => {
    const r = await vm("run", "-d", "--name", "web", "busybox", "sh", "-c", "mkdir -p /www && echo hello from httpd > /www/index.html && exec busybox httpd -f -p 8080 -h /www");
    expect(r.code, r.stderr).toBe(0);
    const rec = JSON.parse(fs.readFileSync(path.join(state, NAME, "vm.json"), "utf8")) as { endpoints: { tcp: string; serial: string } };
    const fetch = (port: number) =>
      new Promise<string>((resolve, reject) => {
        http.get({ host: "127.0.0.1", port, path: "/", agent: false }, (res) => {
          let body = "";
          res.on("data", (b: Buffer) => (body += b.toString()));
          res.on("end", () => resolve(body));
        }).on("error", reject);
      });
    for (const url of [rec.endpoints.tcp, rec.endpoints.serial]) {
      const p = spawn(HOST_BIN, ["--connect", url, "port-forward", "web", "0:8080"], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
      let err = "";
      p.stderr!.on("data", (b: Buffer) => (err += b.toString()));
      const exited = new Promise<number | null>((res) => p.on("exit", res));
      const local = await new Promise<number>((resolve, reject) => {
        let text = "";
        p.stdout!.on("data", (b: Buffer) => {
          text += b.toString();
          const m = text.match(/Forwarding from 127\.0\.0\.1:(\d+) -> web:8080/);
          if (m) resolve(Number(m[1]));
        });
        void exited.then((code) => reject(new Error(`port-forward exited ${code}: ${err}`)));
      });
      // httpd answers once it listens; the container may still be starting.
      let body = "";
      for (let i = 0; i < 50 && body === ""; i++) body = await fetch(local).catch(() => new Promise<string>((res) => setTimeout(() => res(""), 200)));
      expect(body, `${url}: ${err}`).toBe("hello from httpd\n");
      const many = await Promise.all(Array.from({ length: 20 }, () => fetch(local)));
      expect(new Set(many)).toEqual(new Set(["hello from httpd\n"]));
      if (url === rec.endpoints.serial) {
        expect((await vm("kill", "web")).code).toBe(0);
        expect(await exited).toBe(0);
        expect(err).toContain("container web exited; forwarding ends");
      } else {
        p.kill("SIGINT");
        expect(await exited).toBe(0);
      }
    }
    await vm("rm", "web");

    // run -d -p: a background port-forward holds the host port for the container's life.
    const free = await new Promise<number>((resolve) => {
      const srv = net.createServer().listen(0, "127.0.0.1", () => {
        const port = (srv.address() as net.AddressInfo).port;
        srv.close(() => resolve(port));
      });
    });
    const d = await vm("run", "-d", "-p", `${free}:8080`, "--name", "web2", "busybox", "sh", "-c", "mkdir -p /www && echo published > /www/index.html && exec busybox httpd -f -p 8080 -h /www");
    expect(d.code, d.stderr).toBe(0);
    let body = "";
    for (let i = 0; i < 50 && body === ""; i++) body = await fetch(free).catch(() => new Promise<string>((res) => setTimeout(() => res(""), 200)));
    expect(body).toBe("published\n");
    expect((await vm("kill", "web2")).code).toBe(0);
    const refused = async () => !(await fetch(free).then(() => true, () => false));
    let gone = false;
    for (let i = 0; i < 50 && !gone; i++) gone = (await refused()) || (await new Promise<boolean>((res) => setTimeout(() => res(false), 200)));
    expect(gone).toBe(true);
    await vm("rm", "web2");
  }, 300_000);
});

describe("cp", () => {
  it("copies into and out of a container inside its root, whatever its symlinks say, and to the guest itself", async () => {
    const r = await vm("run", "-d", "--name", "files", "busybox", "sh", "-c", "ln -s / /escape && ln -s ../../.. /tmp/up && echo in-container > /marker && sleep 600");
    expect(r.code, r.stderr).toBe(0);
    for (let i = 0; i < 50 && (await vm("exec", "files", "test", "-L", "/tmp/up")).code !== 0; i++) await new Promise((res) => setTimeout(res, 200));
    const work = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-cp-vm-"));
    try {
      // Out through a link to /: the container's files, not the guest's.
      const out1 = await vm("cp", "files:/escape/marker", path.join(work, "m"));
      expect(out1.code, out1.stderr).toBe(0);
      expect(fs.readFileSync(path.join(work, "m"), "utf8")).toBe("in-container\n");
      expect((await vm("cp", "files:/escape/run/fractal/agent.log", path.join(work, "log"))).code).toBe(125); // the guest's file is not in the container
      // In through links that climb out: the file lands in the container's root.
      fs.writeFileSync(path.join(work, "dropped"), "dropped\n");
      fs.mkdirSync(path.join(work, "dir"));
      fs.writeFileSync(path.join(work, "dir/owned"), "x", { mode: 0o640 });
      fs.chownSync(path.join(work, "dir/owned"), 1234, 5678);
      for (const dest of ["files:/escape/", "files:/tmp/up/dropped2"]) expect((await vm("cp", path.join(work, "dropped"), dest)).code).toBe(0);
      expect((await vm("cp", path.join(work, "dir"), "files:/tmp/")).code).toBe(0);
      expect(out(await vm("exec", "files", "cat", "/dropped", "/dropped2"))).toBe("dropped\ndropped\n");
      expect(out(await vm("exec", "files", "stat", "-c", "%a %u:%g", "/tmp/dir/owned"))).toBe("640 1234:5678\n");
      expect(await guest("ls /dropped /dropped2 2>&1 || true")).toMatch(/no such file/i);
      // The guest itself: :PATH.
      expect((await vm("cp", path.join(work, "dropped"), ":/tmp/")).code).toBe(0);
      expect(await guest("cat /tmp/dropped")).toBe("dropped\n");
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
      await vm("rm", "-f", "files");
    }
  }, 300_000);
});
