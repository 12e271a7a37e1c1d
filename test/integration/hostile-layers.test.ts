// Crafted layers (test/fixtures/make-hostile.py) through the same unpacker
// the guest uses, here via `fractal-host image unpack` into a 64 MiB tmpfs:
// each attack is refused with a message naming the layer and the entry, or
// contained in the layer directory; nothing is written anywhere else and no
// half-unpacked directory is left behind.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ROOT, runCli } from "../helpers/agent.js";

let store: string;
let unpacked: string;
// Where the attacks aim, outside the layer directory.
const TARGETS = ["/etc/abs-escape", "/double/slash", "/tmp/escaped-symlink"];

beforeAll(() => {
  store = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-hostile-"));
  execFileSync("python3", [path.join(ROOT, "test/fixtures/make-hostile.py"), path.join(store, "hostile")]);
  unpacked = path.join(store, "unpacked");
  fs.mkdirSync(unpacked);
  // Small on purpose: a bomb must meet the limit in seconds, not fill a disk.
  execFileSync("mount", ["-t", "tmpfs", "-o", "size=64m", "fractal-hostile", unpacked]);
});
afterAll(() => {
  if (unpacked) execFileSync("umount", [unpacked]);
  if (store) fs.rmSync(store, { recursive: true, force: true });
});

const unpack = (tag: string) => runCli(["image", "unpack", store, `hostile:${tag}`]);

/** The one layer directory an image unpacked to. */
function layerDir(): string[] {
  return fs.readdirSync(unpacked);
}

function nothingEscaped(): void {
  for (const t of TARGETS) expect(fs.existsSync(t), t).toBe(false);
  expect(fs.existsSync(path.join(store, "escaped-dotdot"))).toBe(false);
  expect(fs.existsSync(path.join(path.dirname(store), "escaped-dotdot"))).toBe(false);
  expect(layerDir().filter((d) => d.includes(".partial"))).toEqual([]);
}

describe("hostile layers", () => {
  it("keeps absolute entry names inside the layer", async () => {
    const r = await unpack("abs");
    expect(r.code).toBe(0);
    const [dir] = layerDir().filter((d) => fs.existsSync(path.join(unpacked, d, "etc/abs-escape")));
    expect(fs.readFileSync(path.join(unpacked, dir!, "etc/abs-escape"), "utf8")).toBe("inside\n");
    expect(fs.readFileSync(path.join(unpacked, dir!, "double/slash"), "utf8")).toBe("inside too\n");
    nothingEscaped();
  });

  it("refuses an entry that climbs out with ..", async () => {
    const r = await unpack("dotdot");
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/layer sha256:[0-9a-f]{64}: entry "..\/..\/escaped-dotdot" points outside the layer/);
    nothingEscaped();
  });

  it("keeps a write through a symlink to / inside the layer", async () => {
    const before = new Set(layerDir());
    const r = await unpack("symlink-write");
    expect(r.code).toBe(0);
    const dir = layerDir().find((d) => !before.has(d))!;
    expect(fs.readFileSync(path.join(unpacked, dir, "tmp/escaped-symlink"), "utf8")).toBe("contained\n");
    expect(fs.readlinkSync(path.join(unpacked, dir, "evil"))).toBe("/");
    nothingEscaped();
  });

  it("refuses hard links to files outside, directly or through a symlink", async () => {
    const direct = await unpack("link-outside");
    expect(direct.code).toBe(125);
    expect(direct.stderr).toMatch(/entry "x": hard link target "..\/..\/..\/etc\/passwd" points outside the layer/);
    const viaSym = await unpack("link-via-sym");
    expect(viaSym.code).toBe(125);
    expect(viaSym.stderr).toMatch(/entry "stolen": hard link target "through-sym\/passwd" is not a file in this layer/);
    nothingEscaped();
  });

  it("creates device nodes only inside the layer", async () => {
    const before = new Set(layerDir());
    const r = await unpack("devices");
    expect(r.code).toBe(0);
    const dir = layerDir().find((d) => !before.has(d))!;
    const sda = fs.statSync(path.join(unpacked, dir, "dev-sda"));
    expect(sda.isBlockDevice()).toBe(true);
    expect(fs.existsSync("/dev-sda")).toBe(false);
    nothingEscaped();
  });

  it("refuses a header declaring more than fits, before writing a byte", async () => {
    const r = await unpack("huge");
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/entry "huge" declares 8\.0 GiB, more than the [\d.]+ MiB left where layers are unpacked/);
    expect(r.stderr).not.toMatch(/at emitError|^\s+at /m);
    nothingEscaped();
  });

  it("refuses a decompression bomb by its declared size", async () => {
    const r = await unpack("bomb");
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/entry "zeros" declares 256\.0 MiB, more than/);
    expect(fs.statfsSync(unpacked).bavail * fs.statfsSync(unpacked).bsize).toBeGreaterThan(60 << 20);
    nothingEscaped();
  });

  it("refuses an endless stream after the archive's end", async () => {
    const r = await unpack("trailer");
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/more than 1\.0 MiB of data that no tar entry accounts for \(after entry 1\)/);
    nothingEscaped();
  });

  it("lets the last of duplicate entries win, whatever their types, without following links", async () => {
    const before = new Set(layerDir());
    const r = await unpack("duplicates");
    expect(r.code).toBe(0);
    const dir = path.join(unpacked, layerDir().find((d) => !before.has(d))!);
    expect(fs.readFileSync(path.join(dir, "a"), "utf8")).toBe("second\n");
    expect(fs.readFileSync(path.join(dir, "b/inner"), "utf8")).toBe("in dir\n");
    expect(fs.readFileSync(path.join(dir, "c"), "utf8")).toBe("now a file\n");
    expect(fs.lstatSync(path.join(dir, "d")).isFile()).toBe(true);
    expect(fs.readFileSync("/etc/passwd", "utf8")).not.toMatch(/not through the link/);
    nothingEscaped();
  });
});
