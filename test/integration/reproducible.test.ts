// Builds are reproducible from any checkout: two clones of this commit in
// two different directories, each built with `make build`, give
// byte-identical agent, CLI, shim, namespace helper, both initramfs archives,
// the agent's erofs disk and expected measurements (which are only as
// trustworthy as the ability to rebuild them).
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ROOT } from "../helpers/agent.js";

const dirs = [fs.mkdtempSync(path.join(os.tmpdir(), "fractal-repro-a-")), fs.mkdtempSync(path.join(os.tmpdir(), "fractal-repro-b-deeper-"))];
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

const ARTIFACTS = ["fractal-agent", "fractal-host", "containerd-shim-fractal-v1", "fractal-ns", "initramfs.cpio", "initramfs-lite.cpio", "agent.erofs", "expected-measurements.json", "kernel/vmlinux"];

describe("reproducible builds", () => {
  it("gives byte-identical binaries, initramfs and expected measurements when built in two different directories", () => {
    const trees = dirs.map((d, i) => {
      const tree = path.join(d, i === 0 ? "src" : "some/longer/path/src");
      execFileSync("git", ["clone", "-q", "--no-hardlinks", ROOT, tree]);
      execFileSync("make", ["build"], { cwd: tree, stdio: ["ignore", "ignore", "pipe"], maxBuffer: 64 << 20 });
      return tree;
    });
    for (const a of ARTIFACTS) {
      const [x, y] = trees.map((t) => fs.readFileSync(path.join(t, "build", a)));
      expect(x!.length, a).toBeGreaterThan(0);
      expect(x!.equals(y!), `${a} differs between ${trees[0]} and ${trees[1]}`).toBe(true);
      // And no trace of either checkout's path.
      for (const t of trees) expect(x!.includes(Buffer.from(t)), `${a} names ${t}`).toBe(false);
    }
  }, 900_000);
});
