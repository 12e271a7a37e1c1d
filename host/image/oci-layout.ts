// Writes OCI image layouts (image-spec v1.1: oci-layout, index.json,
// blobs/sha256/...) from in-memory layers. Deterministic by construction:
// the same inputs give the same bytes, so the same digests.
import { digestOf, hex } from "../../oci/digest.js";
import { REF_NAME } from "../../oci/store.js";
import fs from "node:fs";
import path from "node:path";
import { gzipSync } from "node:zlib";

export const MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json";
export const MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip";
export { REF_NAME };

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { architecture: string; os: string };
}

export interface ImageSpec {
  /** e.g. "busybox:latest" */
  ref: string;
  /** Uncompressed tar layers, bottom first. */
  layers: Buffer[];
  config: { Env?: string[]; Cmd?: string[]; Entrypoint?: string[]; WorkingDir?: string; User?: string };
  created?: string;
  /** OCI architecture (GOARCH names); default amd64. */
  architecture?: string;
}

function writeBlob(dir: string, data: Buffer, mediaType: string): Descriptor {
  const digest = digestOf(data);
  const file = path.join(dir, "blobs", "sha256", hex(digest));
  fs.mkdirSync(path.dirname(file), { recursive: true });
  if (!fs.existsSync(file)) fs.writeFileSync(file, data);
  return { mediaType, digest, size: data.length };
}

/** Adds an image to the layout at `dir` (created if needed); returns its manifest descriptor. */
export function writeImage(dir: string, img: ImageSpec): Descriptor {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }) + "\n");
  // gzip with level 9 and no name or mtime in the header: reproducible.
  const layers = img.layers.map((tar) => writeBlob(dir, gzipSync(tar, { level: 9 }), MEDIA_LAYER_GZIP));
  const config = {
    created: img.created ?? "1970-01-01T00:00:00Z",
    architecture: img.architecture ?? "amd64",
    os: "linux",
    config: img.config,
    rootfs: { type: "layers", diff_ids: img.layers.map((l) => digestOf(l)) },
    history: img.layers.map(() => ({ created: img.created ?? "1970-01-01T00:00:00Z", created_by: "fractal image builder" })),
  };
  const configDesc = writeBlob(dir, Buffer.from(JSON.stringify(config)), MEDIA_CONFIG);
  const manifest = { schemaVersion: 2, mediaType: MEDIA_MANIFEST, config: configDesc, layers };
  const manDesc: Descriptor = {
    ...writeBlob(dir, Buffer.from(JSON.stringify(manifest)), MEDIA_MANIFEST),
    annotations: { [REF_NAME]: img.ref },
    platform: { architecture: img.architecture ?? "amd64", os: "linux" },
  };
  const indexFile = path.join(dir, "index.json");
  const index = fs.existsSync(indexFile)
    ? (JSON.parse(fs.readFileSync(indexFile, "utf8")) as { manifests: Descriptor[] }) // written by us or another OCI tool
    : { schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: [] as Descriptor[] };
  index.manifests = [...index.manifests.filter((m) => m.annotations?.[REF_NAME] !== img.ref), manDesc];
  fs.writeFileSync(indexFile, JSON.stringify(index, null, 2) + "\n");
  return manDesc;
}
