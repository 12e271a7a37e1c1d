// What a live layer's seams stack: the added image's directories over the
// container's own layers at that path, read with overlayfs' rules. Real
// directories and whiteouts (0/0 character devices, made by mknod(1): this
// runs as root, like the agent); opaque directories as a set.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ownLowers, planSeam, seamPaths } from "../../agent/containers/seams.js";

const root = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-seams-"));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

const opaque = new Set<string>();
const isOpaque = (d: string) => opaque.has(d);
function tree(name: string, spec: Record<string, "dir" | "file" | "whiteout" | "opaque" | `link:${string}`>): string {
  const base = path.join(root, name);
  fs.mkdirSync(base, { recursive: true });
  for (const [rel, kind] of Object.entries(spec)) {
    const p = path.join(base, rel);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    if (kind === "dir" || kind === "opaque") fs.mkdirSync(p, { recursive: true });
    if (kind === "opaque") opaque.add(p);
    if (kind === "file") fs.writeFileSync(p, "x");
    if (kind === "whiteout") execFileSync("mknod", [p, "c", "0", "0"]);
    if (kind.startsWith("link:")) fs.symlinkSync(kind.slice(5), p);
  }
  return base;
}

describe("seams", () => {
  const upper = tree("upper", { "usr/local": "dir", etc: "dir" });
  const l2 = tree("l2", { "usr/bin": "dir", "opt": "whiteout", "var": "opaque", "var/new": "file" });
  const l1 = tree("l1", { "usr/bin": "dir", "usr/lib": "dir", opt: "dir", var: "dir", "var/old": "file", srv: "file" });
  const own = { upper, lowers: [l2, l1] };

  it("reads the container's own layers at a path as its root overlay would", () => {
    expect(ownLowers("/usr", own, isOpaque)).toEqual([path.join(l2, "usr"), path.join(l1, "usr")]);
    expect(ownLowers("/usr/lib", own, isOpaque)).toEqual([path.join(l1, "usr/lib")]);
    // A whiteout in a higher layer hides the lower one's directory.
    expect(ownLowers("/opt", own, isOpaque)).toEqual([]);
    // An opaque directory counts, and hides what is below it, deeper paths too.
    expect(ownLowers("/var", own, isOpaque)).toEqual([path.join(l2, "var")]);
    // A file in a lower layer is no directory to stack.
    expect(ownLowers("/srv", own, isOpaque)).toEqual([]);
  });

  it("an opaque directory the container made itself hides every lower layer", () => {
    const up = tree("upper-opaque", { usr: "opaque" });
    expect(ownLowers("/usr", { upper: up, lowers: [l2, l1] }, isOpaque)).toEqual([]);
    const wh = tree("upper-whiteout", { usr: "whiteout" });
    expect(ownLowers("/usr/bin", { upper: wh, lowers: [l2, l1] }, isOpaque)).toEqual([]);
  });

  it("puts an image at each of its top-level directories, never over /dev, /proc, /sys or a container's symlink", () => {
    const stack = tree("stack", { usr: "dir", etc: "dir", dev: "dir", proc: "dir", bin: "dir", "lib": "link:usr/lib", "README": "file" });
    const symlinkInContainer = new Set(["bin"]);
    expect(seamPaths([{ at: "/", stack, readonly: false }], (n) => !symlinkInContainer.has(n))).toEqual(["/etc", "/usr"]);
    expect(seamPaths([{ at: "/opt/tools", stack, readonly: false }, { at: "/", stack, readonly: false }], (n) => !symlinkInContainer.has(n))).toEqual(["/etc", "/usr", "/opt/tools"]);
  });

  it("stacks the added images (newest first) over the container's own layers, read-only if one of them is", () => {
    const a = tree("a", { "usr/local/bin": "dir", "opt/kit": "dir" });
    const b = tree("b", { "usr/local/bin": "dir", "usr/share": "link:/etc" });
    const layers = [
      { at: "/", stack: b, readonly: true },
      { at: "/", stack: a, readonly: false },
    ];
    expect(planSeam("/usr", layers, own, isOpaque)).toEqual({ path: "/usr", lowers: [path.join(b, "usr"), path.join(a, "usr"), path.join(l2, "usr"), path.join(l1, "usr")], readonly: true });
    // Nested at a path of its own: each image's directory there; a symlink inside an image leads nowhere.
    expect(planSeam("/usr/share", layers, own, isOpaque).lowers).toEqual([]);
    // An image at a path contributes its root there, and nothing above it.
    const at = [{ at: "/usr/local", stack: a, readonly: false }];
    expect(planSeam("/usr/local", at, own, isOpaque)).toEqual({ path: "/usr/local", lowers: [a], readonly: false });
    expect(planSeam("/opt", [{ at: "/", stack: a, readonly: false }], own, isOpaque)).toEqual({ path: "/opt", lowers: [path.join(a, "opt")], readonly: false });
  });
});
