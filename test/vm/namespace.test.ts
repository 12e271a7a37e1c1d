// fractal-linux: host binaries run in the guest through the backmount of the
// host's root (boot --host-root, exec --namespace), like u-root's cpu.
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../helpers/agent.js";
import { consoleOnFailure } from "../helpers/console-on-failure.js";

const state = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-ns-test-"));
const data = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-ns-data-"));
const env = { FRACTAL_STATE: state, LANG: "C.UTF-8", HOME: "/root", SHELL: "/bin/sh" };
const NAME = "nstest";
const SYS = "/usr:/lib:/lib64:/bin:/etc";
const cli = (args: string[], input?: string) => runCli(args, { env, input });

beforeAll(async () => {
  const r = await cli(["boot", "--name", NAME, "--host-root", "--no-net", "--detach"]);
  if (r.code !== 0) throw new Error(`boot failed (${r.code}):\n${r.stderr}`);
}, 300_000);

const printConsoleIfFailed = consoleOnFailure(state, NAME);

afterAll(async () => {
  printConsoleIfFailed();
  await cli(["vm", "stop", NAME]);
  fs.rmSync(state, { recursive: true, force: true });
  fs.rmSync(data, { recursive: true, force: true });
}, 120_000);

describe("exec --namespace", () => {
  it("runs the host's sha256sum in the guest on a host file, with the host's answer", async () => {
    const file = path.join(data, "blob.bin");
    fs.writeFileSync(file, Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 31) % 251)));
    const onHost = execFileSync("sha256sum", [file]).toString().split(" ")[0];
    const r = await cli(["exec", "--vm", NAME, `--namespace=${SYS}:/data=${data}`, "--", "sha256sum", "/data/blob.bin"]);
    expect(r.stderr).toBe("");
    expect(r.stdout.toString().split(" ")[0]).toBe(onHost);
  }, 120_000);

  it("gives each command its own /tmp", async () => {
    const run = (tag: string) => cli(["exec", "--vm", NAME, `--namespace=${SYS}`, "--", "sh", "-c", `echo ${tag} > /tmp/mine; sleep 2; cat /tmp/mine; ls /tmp`]);
    const [a, b] = await Promise.all([run("first"), run("second")]);
    expect(a.stdout.toString()).toBe("first\nmine\n");
    expect(b.stdout.toString()).toBe("second\nmine\n");
  }, 120_000);

  it("forwards the current directory and the host environment", async () => {
    const r = await new Promise<{ out: string; code: number | null }>((resolve) => {
      const p = spawn(path.resolve(import.meta.dirname, "../../build/fractal-host"), ["exec", "--vm", NAME, `--namespace=${SYS}:${data}`, "--", "sh", "-c", 'echo "$(pwd)|$LANG|$HOME"; exit 9'], {
        cwd: data,
        env: { ...process.env, ...env },
      });
      let out = "";
      p.stdout.on("data", (b: Buffer) => (out += b.toString()));
      p.on("close", (code) => resolve({ out, code }));
    });
    expect(r.out).toBe(`${data}|C.UTF-8|/root\n`);
    expect(r.code).toBe(9);
    const none = await cli(["exec", "--vm", NAME, `--namespace=${SYS}`, "--env-none", "--", "sh", "-c", 'echo "[$LANG]"']);
    expect(none.stdout.toString()).toBe("[]\n");
  }, 120_000);

  it("says which namespace entry names a missing host path", async () => {
    const r = await cli(["exec", "--vm", NAME, `--namespace=${SYS}:/no/such/host/dir`, "--", "true"]);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/namespace entry \/no\/such\/host\/dir: \/no\/such\/host\/dir does not exist on the host/);
    const nf = await cli(["exec", "--vm", NAME, `--namespace=${SYS}`, "--", "no-such-tool-xyz"]);
    expect(nf.code).toBe(127);
  }, 120_000);

  it("opens an interactive shell with fractal-host shell", async () => {
    const r = await cli(["shell", "--name", NAME, `--namespace=${SYS}`], "echo in-shell $((40+2)); exit 5\n");
    expect(r.stdout.toString()).toMatch(/in-shell 42/);
    expect(r.code).toBe(5);
  }, 120_000);
});

describe("exec --namespace over virtiofs", () => {
  const virtiofsd = ["/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"].find((p) => fs.existsSync(p));
  const sock = path.join(state, "vfs.sock");
  let daemon: ReturnType<typeof spawn> | undefined;
  const printVfsConsoleIfFailed = consoleOnFailure(state, "vfstest");

  afterAll(async () => {
    printVfsConsoleIfFailed();
    await cli(["vm", "stop", "vfstest"]);
    daemon?.kill();
  }, 120_000);

  it("backmounts the host's root with a virtiofsd the user runs", async () => {
    if (!virtiofsd) throw new Error("virtiofsd is missing (apt-get install qemu-system-x86 or virtiofsd)");
    // The C virtiofsd's namespace sandbox needs pivot_root, which a container may refuse; chroot works.
    const sandbox = virtiofsd.includes("qemu") ? ["-o", "sandbox=chroot"] : ["--sandbox", "chroot"];
    const args = virtiofsd.includes("qemu") ? [`--socket-path=${sock}`, "-o", "source=/", ...sandbox] : [`--socket-path=${sock}`, "--shared-dir=/", ...sandbox];
    daemon = spawn(virtiofsd, args, { stdio: "ignore" });
    for (let i = 0; i < 50 && !fs.existsSync(sock); i++) await new Promise((r) => setTimeout(r, 100));
    const b = await cli(["boot", "--name", "vfstest", "--no-net", "--host-root", "--virtiofs", `${sock}:hostroot:/host`, "--detach"]);
    expect(b.stderr).toBe("");
    expect(b.code).toBe(0);
    const file = path.join(data, "v.txt");
    fs.writeFileSync(file, "over virtiofs\n");
    const r = await cli(["exec", "--vm", "vfstest", `--namespace=${SYS}:/d=${data}`, "--", "sh", "-c", "cat /d/v.txt; grep ' /d ' /proc/mounts | cut -d' ' -f3"]);
    expect(r.stdout.toString()).toBe("over virtiofs\nvirtiofs\n");
  }, 300_000);
});
