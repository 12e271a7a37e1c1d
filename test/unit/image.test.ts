// The default image: an OCI layout whose every digest checks out, built the
// same way twice.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { gunzipSync } from "node:zlib";
import tar from "tar-stream";
import { describe, expect, it } from "vitest";
import { busyboxEntries, packTar } from "../../host/image/busybox.js";
import { REF_NAME, writeImage, type Descriptor } from "../../host/image/oci-layout.js";

const blob = (dir: string, d: Descriptor) => fs.readFileSync(path.join(dir, "blobs", "sha256", d.digest.slice(7)));
const digest = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

async function list(tarBytes: Buffer): Promise<Map<string, { type: string; linkname?: string | null; size?: number }>> {
  const ex = tar.extract();
  const out = new Map<string, { type: string; linkname?: string | null; size?: number }>();
  ex.on("entry", (h, stream, next) => {
    out.set(h.name, { type: h.type ?? "file", linkname: h.linkname, size: h.size });
    stream.on("end", next);
    stream.resume();
  });
  const done = new Promise<void>((r) => ex.on("finish", () => r()));
  ex.end(tarBytes);
  await done;
  return out;
}

describe("default busybox image", () => {
  it("is an OCI layout whose blobs, diff_ids and reference check out, byte-identical when rebuilt", async () => {
    const fake = Buffer.from("#!/bin/sh\necho not really busybox\n");
    const build = async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-img-"));
      writeImage(dir, { ref: "busybox:latest", layers: [await packTar(busyboxEntries(fake, ["sh", "ls", "busybox", "ls"]))], config: { Cmd: ["sh"] } });
      return dir;
    };
    const a = await build();
    const b = await build();
    const index = JSON.parse(fs.readFileSync(path.join(a, "index.json"), "utf8"));
    expect(JSON.parse(fs.readFileSync(path.join(a, "oci-layout"), "utf8")).imageLayoutVersion).toBe("1.0.0");
    const m: Descriptor = index.manifests[0];
    expect(m.annotations?.[REF_NAME]).toBe("busybox:latest");
    const manifest = JSON.parse(blob(a, m).toString());
    for (const d of [m, manifest.config, ...manifest.layers] as Descriptor[]) {
      const bytes = blob(a, d);
      expect(digest(bytes)).toBe(d.digest);
      expect(bytes.length).toBe(d.size);
    }
    const config = JSON.parse(blob(a, manifest.config).toString());
    const layerTar = gunzipSync(blob(a, manifest.layers[0]));
    expect(config.rootfs.diff_ids).toEqual([digest(layerTar)]);
    const entries = await list(layerTar);
    expect(entries.get("bin/busybox")?.size).toBe(fake.length);
    expect(entries.get("bin/sh")).toMatchObject({ type: "symlink", linkname: "busybox" });
    expect(entries.has("bin/busybox") && !entries.has("bin/ls2")).toBe(true);
    expect(entries.get("tmp")?.type).toBe("directory");
    const files = (d: string) => spawnSync("sh", ["-c", `cd ${d} && find . -type f | sort | xargs sha256sum`], { encoding: "utf8" }).stdout;
    expect(files(a)).toBe(files(b));
  });
});
