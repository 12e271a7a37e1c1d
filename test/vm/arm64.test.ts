// fractal-mac's guest: the arm64 build (make build ARCH=arm64) booted with
// qemu-system-aarch64 on the virt board, under TCG on this x86 host (HVF on
// a Mac, KVM on arm64 Linux), driven by the host's own CLI.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ROOT, runCli } from "../helpers/agent.js";

const state = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-arm64-test-"));
const env = { FRACTAL_STATE: state };
const NAME = "arm64vm";
const ARM = path.join(ROOT, "build/arm64");
const cli = (args: string[]) => runCli(args, { env });

beforeAll(async () => {
  const r = await cli(["boot", "--name", NAME, "--arch", "arm64", "--mem", "1G", "--images", path.join(ARM, "images"), "--host-root", "--detach"]);
  if (r.code !== 0) throw new Error(`arm64 boot failed (${r.code}):\n${r.stderr}`);
}, 300_000);

afterAll(async () => {
  await cli(["vm", "stop", NAME]);
  fs.rmSync(state, { recursive: true, force: true });
}, 120_000);

describe("an arm64 guest", () => {
  it("boots the arm64 kernel and agent on qemu-system-aarch64's virt board", async () => {
    const args = JSON.parse(fs.readFileSync(path.join(state, NAME, "qemu.args"), "utf8")) as string[];
    expect(path.basename(args[0]!)).toBe("qemu-system-aarch64");
    expect(args[args.indexOf("-machine") + 1]).toMatch(/^virt,/);
    expect(args[args.indexOf("-kernel") + 1]).toBe(path.join(ARM, "kernel/vmlinuz"));
    const v = await cli(["version", "--vm", NAME]);
    expect(v.code, v.stderr).toBe(0);
    expect(v.stdout.toString()).toMatch(/arch:\s+arm64/);
    expect(v.stdout.toString()).toMatch(/kernel:\s+6\.\S+-arm64/);
  });

  it("runs commands with their exit codes, and loads its modules with arm64's system call numbers", async () => {
    const r = await cli(["exec", "--vm", NAME, "--", "sh", "-c", "uname -m; grep -c 'loaded 0 of' /run/fractal/agent.log; grep -q '^overlay ' /proc/modules && echo overlay; exit 5"]);
    expect(r.code).toBe(5);
    expect(r.stdout.toString()).toBe("aarch64\n0\noverlay\n");
  });

  it("reads the host's files through the 9p backmount", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-arm64-share-"));
    fs.writeFileSync(path.join(dir, "note"), "from the x86 host\n");
    const r = await cli(["exec", "--vm", NAME, "--", "cat", `/host${dir}/note`]);
    fs.rmSync(dir, { recursive: true });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.toString()).toBe("from the x86 host\n");
  });

  it("runs a container from the arm64 busybox image, with crun and its arm64 libraries", async () => {
    const r = await cli(["run", "--vm", NAME, "--rm", "busybox", "sh", "-c", "uname -m; echo in-container; exit 3"]);
    expect(r.stdout.toString()).toBe("aarch64\nin-container\n");
    expect(r.code).toBe(3);
    const index = JSON.parse(fs.readFileSync(path.join(ARM, "images/index.json"), "utf8")) as { manifests: { platform?: { architecture: string } }[] };
    expect(index.manifests[0]!.platform?.architecture).toBe("arm64");
  }, 180_000);
});
