// The image store reader and contained path resolution, on hand-made
// layouts: nested multi-platform indexes, Docker media types, references,
// digests that do not match, and names or links that try to leave the tree.
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { chainIds, digestOf } from "../../oci/digest.js";
import { ImageStore, normalizeRef } from "../../oci/store.js";
import { ContainedTree, entryPath } from "../../oci/tree.js";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});
function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-oci-"));
  dirs.push(d);
  return d;
}

/** Writes a blob into a layout and returns its descriptor. */
function blob(layout: string, mediaType: string, content: string | Buffer, extra: object = {}) {
  const data = typeof content === "string" ? Buffer.from(content) : content;
  const digest = `sha256:${createHash("sha256").update(data).digest("hex")}`;
  fs.mkdirSync(path.join(layout, "blobs/sha256"), { recursive: true });
  fs.writeFileSync(path.join(layout, "blobs/sha256", digest.slice(7)), data);
  return { mediaType, digest, size: data.length, ...extra };
}

/** One image: a config with these diff_ids and uncompressed "layers" (their bytes are the diff). */
function image(layout: string, layers: string[], types = { manifest: "application/vnd.oci.image.manifest.v1+json", config: "application/vnd.oci.image.config.v1+json", layer: "application/vnd.oci.image.layer.v1.tar" }) {
  const diffIds = layers.map((l) => digestOf(l));
  const config = blob(layout, types.config, JSON.stringify({ architecture: "amd64", os: "linux", config: { Cmd: ["sh"] }, rootfs: { type: "layers", diff_ids: diffIds } }));
  const ls = layers.map((l) => blob(layout, types.layer, l));
  return blob(layout, types.manifest, JSON.stringify({ schemaVersion: 2, mediaType: types.manifest, config, layers: ls }));
}

function writeIndex(layout: string, manifests: object[]): void {
  fs.writeFileSync(path.join(layout, "index.json"), JSON.stringify({ schemaVersion: 2, manifests }));
  fs.writeFileSync(path.join(layout, "oci-layout"), '{"imageLayoutVersion":"1.0.0"}');
}

describe("image store", () => {
  it("picks linux/amd64 out of a nested multi-platform index", () => {
    const s = tmp();
    const arm = image(s, ["arm layer"]);
    const amd = image(s, ["amd layer one", "amd layer two"]);
    const multi = blob(s, "application/vnd.oci.image.index.v1+json", JSON.stringify({ schemaVersion: 2, manifests: [{ ...arm, platform: { os: "linux", architecture: "arm64" } }, { ...amd, platform: { os: "linux", architecture: "amd64" } }] }));
    writeIndex(s, [{ ...multi, annotations: { "org.opencontainers.image.ref.name": "multi:1" } }]);
    const img = new ImageStore(s).resolve("multi:1");
    expect(img.digest).toBe(amd.digest);
    expect(img.layers.map((l) => l.diffId)).toEqual([digestOf("amd layer one"), digestOf("amd layer two")]);
    expect(img.layers.map((l) => l.chainId)).toEqual(chainIds(img.layers.map((l) => l.diffId)));
    expect(img.layers[1]!.chainId).toBe(digestOf(`${digestOf("amd layer one")} ${digestOf("amd layer two")}`));
  });

  it("accepts Docker v2 schema 2 media types, and finds images by reference, default tag or digest prefix", () => {
    const s = tmp();
    const m = image(s, ["x"], { manifest: "application/vnd.docker.distribution.manifest.v2+json", config: "application/vnd.docker.container.image.v1+json", layer: "application/vnd.docker.image.rootfs.diff.tar.gzip" });
    writeIndex(s, [{ ...m, annotations: { "org.opencontainers.image.ref.name": "docker.io/library/tool:latest" } }]);
    const store = new ImageStore(s);
    expect(store.resolve("tool").digest).toBe(m.digest);
    expect(store.resolve("tool:latest").layers[0]!.compression).toBe("gzip");
    expect(store.resolve(m.digest.slice(7, 19)).digest).toBe(m.digest);
    expect(() => store.resolve("tool:other")).toThrow(/image tool:other not found/);
    expect(normalizeRef("busybox")).toBe("busybox:latest");
    expect(normalizeRef("localhost:5000/a/b")).toBe("localhost:5000/a/b:latest");
  });

  it("names a blob whose content does not match its digest, and keeps listing the others", () => {
    const s = tmp();
    const good = image(s, ["good"]);
    const bad = image(s, ["bad"]);
    fs.writeFileSync(path.join(s, "blobs/sha256", bad.digest.slice(7)), JSON.stringify({ tampered: true }).padEnd(bad.size));
    writeIndex(s, [
      { ...good, annotations: { "org.opencontainers.image.ref.name": "good:1" } },
      { ...bad, annotations: { "org.opencontainers.image.ref.name": "bad:1" } },
    ]);
    const sub = path.join(s, "sub");
    fs.mkdirSync(sub);
    const sm = image(sub, ["sub layer"]);
    writeIndex(sub, [{ ...sm, annotations: { "org.opencontainers.image.ref.name": "v2" } }]);
    const store = new ImageStore(s);
    expect(() => store.resolve("bad:1")).toThrow(new RegExp(`manifest ${bad.digest}: content does not match its digest`));
    // A tag alone in a subdirectory's layout is qualified by the directory's name.
    expect(store.resolve("sub:v2").digest).toBe(sm.digest);
    expect(store.resolve("good:1").digest).toBe(good.digest);
  });

  it("refuses unsupported layer media types and mismatched diff_ids by name", () => {
    const s = tmp();
    const m = image(s, ["a"], { manifest: "application/vnd.oci.image.manifest.v1+json", config: "application/vnd.oci.image.config.v1+json", layer: "application/x-foreign" });
    writeIndex(s, [{ ...m, annotations: { "org.opencontainers.image.ref.name": "odd:1" } }]);
    expect(() => new ImageStore(s).resolve("odd:1")).toThrow(/unsupported media type application\/x-foreign/);
  });
});

describe("contained paths", () => {
  it("refuses entry names that climb out and strips leading slashes", () => {
    expect(entryPath("/etc/passwd")).toBe("etc/passwd");
    expect(entryPath("./a/b/")).toBe("a/b");
    expect(entryPath("a/../b")).toBe("b");
    expect(() => entryPath("../x")).toThrow(/points outside the layer/);
    expect(() => entryPath("a/../../x")).toThrow(/points outside the layer/);
  });

  it("follows symlinks as if the tree were /", () => {
    const root = tmp();
    fs.mkdirSync(path.join(root, "real/dir"), { recursive: true });
    fs.symlinkSync("/real", path.join(root, "abs"));
    fs.symlinkSync("../../../../real", path.join(root, "climb"));
    fs.writeFileSync(path.join(root, "real/dir/f"), "inside");
    fs.symlinkSync("/etc/hostname", path.join(root, "real/host"));
    const t = new ContainedTree(root);
    expect(t.dir("abs/dir", false)).toBe(path.join(root, "real/dir"));
    expect(t.dir("climb/dir", false)).toBe(path.join(root, "real/dir"));
    expect(t.readFile("abs/dir/f")).toBe("inside");
    // The guest's /etc/hostname is not reachable through a link in the tree.
    expect(t.readFile("real/host")).toBeUndefined();
    expect(t.dir("abs/new/deeper", true)).toBe(path.join(root, "real/new/deeper"));
    expect(fs.existsSync(path.join(root, "real/new/deeper"))).toBe(true);
  });
});
