// run -v and --layer as the CLI reads them, and how a host path is found in
// a VM's shares (real directories and a symlink, as a user's tree has them).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { inShare, parseVolume } from "../../host/vm/volumes.js";
import { parseLayerSpec } from "../../host/cli/containers.js";
import type { VmRecord } from "../../host/vm/state.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-volumes-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe("run -v", () => {
  it("tells host paths from volume names, and reads :ro", () => {
    expect(parseVolume("/srv/data:/data")).toEqual({ kind: "host", hostPath: "/srv/data", destination: "/data", readonly: false });
    expect(parseVolume("./x:/x:ro")).toEqual({ kind: "host", hostPath: path.resolve("x"), destination: "/x", readonly: true });
    expect(parseVolume("cache:/var/cache:rw")).toEqual({ kind: "named", name: "cache", destination: "/var/cache", readonly: false });
    expect(() => parseVolume("cache")).toThrow(/expected HOSTPATH:CONTAINERPATH\[:ro\]/);
    expect(() => parseVolume("cache:rel")).toThrow(/container path must be absolute/);
    expect(() => parseVolume("a:/b:rx")).toThrow(/expected/);
    expect(() => parseVolume("we ird:/b")).toThrow(/bad volume name "we ird"/);
  });

  it("finds a host path in the share with the longest matching directory, through symlinks", () => {
    const outer = path.join(dir, "outer");
    fs.mkdirSync(path.join(outer, "inner/deep"), { recursive: true });
    fs.mkdirSync(path.join(dir, "elsewhere"));
    fs.symlinkSync(path.join(outer, "inner/deep"), path.join(dir, "elsewhere/link"));
    const vm = {
      name: "v",
      mounts: [
        { hostDir: outer, guestPath: outer, readonly: false },
        { hostDir: path.join(outer, "inner"), guestPath: "/mnt/inner", readonly: true },
        { hostDir: path.join(dir, "vols"), guestPath: "/run/fractal/volumes", readonly: false },
      ],
    } as VmRecord;
    expect(inShare(vm, outer)).toEqual({ guestPath: outer, readonly: false });
    expect(inShare(vm, path.join(dir, "elsewhere/link"))).toMatchObject({ guestPath: "/mnt/inner/deep", readonly: true });
    expect(() => inShare(vm, path.join(dir, "elsewhere"))).toThrow(`VM v does not share that host directory (its shares: ${outer}, ${outer}/inner at /mnt/inner (ro)); boot it with --share`);
    expect(() => inShare(vm, path.join(dir, "missing"))).toThrow(/no such file or directory on the host/);
  });
});

describe("run --layer", () => {
  it("splits IMAGE[:PATH] at the path's colon, not the tag's", () => {
    expect(parseLayerSpec("tools")).toEqual({ image: "tools", at: "/" });
    expect(parseLayerSpec("tools:v1")).toEqual({ image: "tools:v1", at: "/" });
    expect(parseLayerSpec("tools:v1:/opt/t")).toEqual({ image: "tools:v1", at: "/opt/t" });
    expect(parseLayerSpec("reg:5000/tools:/x")).toEqual({ image: "reg:5000/tools", at: "/x" });
  });
});
