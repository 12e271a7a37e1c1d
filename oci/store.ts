// An image store: a directory holding OCI image layouts (index.json at its
// root or in subdirectories) and docker-archive tarballs (`docker save`,
// `skopeo copy ... docker-archive:`). It is read-only here: the host shares
// it into the guest over 9p or virtiofs, or any file system both can mount.
// Every blob read is checked against its digest; a layer's content is
// checked against the config's diff_ids by the unpacker.
import fs from "node:fs";
import path from "node:path";
import { checkDigest, chainIds, digestOf, hex } from "./digest.js";
import { ImageError } from "./errors.js";
import { indexTar, type TarMember } from "./tar-index.js";

/** A byte range in a file: a whole blob file, or a member of an archive. */
/** This machine's architecture in OCI's (Go's) names: images are chosen for it. */
const OCI_ARCH = process.arch === "x64" ? "amd64" : process.arch;

export interface BlobSource {
  file: string;
  offset: number;
  /** Bytes; -1 means "to the end of the file". */
  size: number;
  /** What to call it in errors. */
  label: string;
}

export type Compression = "none" | "gzip" | "zstd";

export interface Layer {
  /** Digest of the blob as stored (compressed); undefined when the format does not name it. */
  digest?: string;
  diffId: string;
  chainId: string;
  mediaType: string;
  size: number;
  compression: Compression;
  source: BlobSource;
}

/** The parts of an image config a container is made from. */
export interface RunConfig {
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Env?: string[] | null;
  WorkingDir?: string;
  User?: string;
}

export interface Image {
  /** name:tag, or "" when only the digest names it. */
  reference: string;
  digest: string;
  config: RunConfig;
  layers: Layer[];
  size: number;
  /** "oci-layout DIR" or "docker-archive FILE", relative to the store. */
  source: string;
}

const INDEX_TYPES = new Set(["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"]);
const MANIFEST_TYPES = new Set(["application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"]);
const CONFIG_TYPES = new Set(["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"]);
const LAYER_TYPES: Record<string, Compression> = {
  "application/vnd.oci.image.layer.v1.tar": "none",
  "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
  "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
  "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
  "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
  "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
  "application/vnd.docker.image.rootfs.diff.tar": "none",
  "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
  "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
};
/** The annotation an OCI layout names its images by. */
export const REF_NAME = "org.opencontainers.image.ref.name";
/** Where `fractal-host image unpack` puts layers, one directory per ChainID. */
export const UNPACKED_DIR = "unpacked";
/** JSON documents (index, manifest, config) larger than this are refused. */
const MAX_JSON = 4 << 20;
/** Verified manifests and configs kept in memory, by file and digest. */
const verifiedJson = new Map<string, unknown>();
const MAX_CACHED_JSON = 1024;

interface Descriptor {
  mediaType?: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { os?: string; architecture?: string; variant?: string };
}

function readRange(src: BlobSource, max: number): Buffer {
  let fd: number;
  try {
    fd = fs.openSync(src.file, "r");
  } catch (err) {
    throw new ImageError("corrupt", `${src.label}: cannot open ${src.file}: ${(err as Error).message}`);
  }
  try {
    const size = src.size >= 0 ? src.size : fs.fstatSync(fd).size - src.offset;
    if (size > max) throw new ImageError("invalid", `${src.label}: ${size} bytes is larger than the ${max}-byte limit for JSON documents`);
    const buf = Buffer.alloc(size);
    const n = fs.readSync(fd, buf, 0, size, src.offset);
    if (n !== size) throw new ImageError("corrupt", `${src.label}: truncated (${n} of ${size} bytes)`);
    return buf;
  } finally {
    fs.closeSync(fd);
  }
}

function parseJson(buf: Buffer, label: string): unknown {
  try {
    return JSON.parse(buf.toString("utf8"));
  } catch (err) {
    throw new ImageError("corrupt", `${label}: not valid JSON (${(err as Error).message})`);
  }
}

function asDescriptor(d: unknown, what: string): Descriptor {
  const o = d as Partial<Descriptor> | null;
  if (!o || typeof o !== "object") throw new ImageError("invalid", `${what}: not a descriptor`);
  checkDigest(o.digest, `${what} digest`);
  if (typeof o.size !== "number" || !Number.isSafeInteger(o.size) || o.size < 0) throw new ImageError("invalid", `${what}: bad size ${String(o.size)}`);
  return o as Descriptor;
}

function configOf(raw: unknown, label: string): { run: RunConfig; diffIds: string[] } {
  const c = raw as { config?: RunConfig; rootfs?: { type?: string; diff_ids?: unknown[] } } | null;
  if (!c || typeof c !== "object" || !c.rootfs || !Array.isArray(c.rootfs.diff_ids)) throw new ImageError("invalid", `${label}: image config has no rootfs.diff_ids`);
  const diffIds = c.rootfs.diff_ids.map((d, i) => checkDigest(d, `${label} diff_ids[${i}]`));
  return { run: c.config ?? {}, diffIds };
}

/** An OCI image layout directory. */
class Layout {
  constructor(
    readonly dir: string,
    readonly name: string,
  ) {}

  blob(d: Descriptor, what: string): BlobSource {
    return { file: path.join(this.dir, "blobs", "sha256", hex(d.digest)), offset: 0, size: d.size, label: `${what} ${d.digest}` };
  }

  readJson(d: Descriptor, what: string): unknown {
    const src = this.blob(d, what);
    // Blobs are content-addressed: one that was read and verified under a
    // digest can be trusted from memory the next time (a run resolves its
    // image anew each time; re-reading it over 9p was most of a run's set-up).
    const key = `${src.file}\0${d.digest}`;
    const hit = verifiedJson.get(key);
    if (hit !== undefined) return hit;
    const buf = readRange(src, MAX_JSON);
    if (digestOf(buf) !== d.digest) throw new ImageError("corrupt", `${src.label}: content does not match its digest (corrupt blob)`);
    const doc = parseJson(buf, src.label);
    if (verifiedJson.size >= MAX_CACHED_JSON) verifiedJson.delete(verifiedJson.keys().next().value!);
    verifiedJson.set(key, doc);
    return doc;
  }

  /** Every image in the layout; a broken entry is reported without hiding the others. */
  images(problem: (source: string, message: string) => void): Image[] {
    const idx = parseJson(readRange({ file: path.join(this.dir, "index.json"), offset: 0, size: -1, label: `${this.name}/index.json` }, MAX_JSON), `${this.name}/index.json`) as { manifests?: unknown[] };
    if (!Array.isArray(idx.manifests)) throw new ImageError("invalid", `${this.name}/index.json: no manifests array`);
    const out: Image[] = [];
    idx.manifests.forEach((m, i) => {
      const where = `${this.name}/index.json manifests[${i}]`;
      try {
        const d = asDescriptor(m, where);
        const refName = d.annotations?.[REF_NAME] ?? "";
        const manifest = this.pickManifest(d, 0);
        if (manifest) out.push(this.image(manifest, this.reference(refName)));
      } catch (err) {
        if (!(err instanceof ImageError)) throw err;
        problem(where, err.message);
      }
    });
    return out;
  }

  /** A tag alone ("latest", as umoci writes it) is qualified by the layout's directory name. */
  private reference(refName: string): string {
    if (refName === "") return "";
    return refName.includes(":") || this.name === "." ? refName : `${this.name}:${refName}`;
  }

  /** Follows nested indexes down to the manifest for linux on this machine's architecture. */
  private pickManifest(d: Descriptor, depth: number): Descriptor | undefined {
    if (depth > 4) throw new ImageError("invalid", `${this.name}: indexes nested too deeply at ${d.digest}`);
    if (d.mediaType && MANIFEST_TYPES.has(d.mediaType)) return d;
    if (d.mediaType && !INDEX_TYPES.has(d.mediaType)) throw new ImageError("unsupported", `${this.name}: ${d.digest} has unsupported media type ${d.mediaType}`);
    const doc = this.readJson(d, "index") as { mediaType?: string; manifests?: unknown[]; config?: unknown };
    if (!d.mediaType && doc.config) return { ...d, mediaType: "application/vnd.oci.image.manifest.v1+json" };
    const subs = (doc.manifests ?? []).map((m, i) => asDescriptor(m, `index ${d.digest} manifests[${i}]`));
    const pick = subs.find((s) => (s.platform?.os ?? "linux") === "linux" && (s.platform?.architecture ?? OCI_ARCH) === OCI_ARCH);
    return pick ? this.pickManifest(pick, depth + 1) : undefined;
  }

  private image(d: Descriptor, reference: string): Image {
    const m = this.readJson(d, "manifest") as { config?: unknown; layers?: unknown[] };
    const cfgDesc = asDescriptor(m.config, `manifest ${d.digest} config`);
    if (cfgDesc.mediaType && !CONFIG_TYPES.has(cfgDesc.mediaType)) throw new ImageError("unsupported", `manifest ${d.digest}: unsupported config media type ${cfgDesc.mediaType}`);
    const { run, diffIds } = configOf(this.readJson(cfgDesc, "config"), `config ${cfgDesc.digest}`);
    const layerDescs = (m.layers ?? []).map((l, i) => asDescriptor(l, `manifest ${d.digest} layers[${i}]`));
    if (layerDescs.length !== diffIds.length) throw new ImageError("invalid", `manifest ${d.digest}: ${layerDescs.length} layers but the config lists ${diffIds.length} diff_ids`);
    const chains = chainIds(diffIds);
    const layers = layerDescs.map((l, i): Layer => {
      const compression = LAYER_TYPES[l.mediaType ?? ""];
      if (compression === undefined) throw new ImageError("unsupported", `layer ${l.digest}: unsupported media type ${l.mediaType ?? "(none)"}`);
      return { digest: l.digest, diffId: diffIds[i]!, chainId: chains[i]!, mediaType: l.mediaType!, size: l.size, compression, source: this.blob(l, "layer") };
    });
    const size = cfgDesc.size + layers.reduce((a, l) => a + l.size, 0);
    return { reference, digest: d.digest, config: run, layers, size, source: `oci-layout ${this.name}` };
  }
}

/** A docker-archive tarball (manifest.json + config + uncompressed layer tars). */
function archiveImages(file: string, name: string): Image[] {
  const members = indexTar(file);
  const member = (n: string, what: string): TarMember => {
    const m = members.get(n.replace(/^\.\//, ""));
    if (!m) throw new ImageError("corrupt", `${name}: ${what} ${n} is missing from the archive`);
    return m;
  };
  const src = (m: TarMember, label: string): BlobSource => ({ file, offset: m.offset, size: m.size, label });
  const manifest = parseJson(readRange(src(member("manifest.json", "manifest"), `${name} manifest.json`), MAX_JSON), `${name} manifest.json`) as unknown[];
  if (!Array.isArray(manifest)) throw new ImageError("invalid", `${name} manifest.json: not a list`);
  return manifest.flatMap((e, i) => {
    const entry = e as { Config?: string; RepoTags?: string[] | null; Layers?: string[] };
    if (typeof entry.Config !== "string" || !Array.isArray(entry.Layers)) throw new ImageError("invalid", `${name} manifest.json[${i}]: needs Config and Layers`);
    const cfgMember = member(entry.Config, "config");
    const cfgBuf = readRange(src(cfgMember, `${name} ${entry.Config}`), MAX_JSON);
    const digest = digestOf(cfgBuf);
    // The config's file name is its digest in every docker-archive writer.
    const named = /([0-9a-f]{64})(\.json)?$/.exec(entry.Config);
    if (named && named[1] !== hex(digest)) throw new ImageError("corrupt", `${name}: config ${entry.Config} does not match its digest (corrupt blob)`);
    const { run, diffIds } = configOf(parseJson(cfgBuf, `${name} ${entry.Config}`), `${name} ${entry.Config}`);
    if (entry.Layers.length !== diffIds.length) throw new ImageError("invalid", `${name}: ${entry.Layers.length} layers but the config lists ${diffIds.length} diff_ids`);
    const chains = chainIds(diffIds);
    const layers = entry.Layers.map((l, j): Layer => {
      const m = member(l, "layer");
      return { diffId: diffIds[j]!, chainId: chains[j]!, mediaType: "application/vnd.docker.image.rootfs.diff.tar", size: m.size, compression: "none", source: src(m, `layer ${l} of ${name}`) };
    });
    const size = cfgMember.size + layers.reduce((a, l) => a + l.size, 0);
    const tags = entry.RepoTags?.length ? entry.RepoTags : [""];
    return tags.map((t) => ({ reference: t, digest, config: run, layers, size, source: `docker-archive ${name}` }));
  });
}

/** Archives already read, by path, size and mtime: reading one means walking all its tar headers. */
const archives = new Map<string, { stamp: string; images: Image[] }>();

function cachedArchive(file: string, name: string): Image[] {
  const st = fs.statSync(file);
  const stamp = `${st.size}:${st.mtimeMs}:${st.ino}`;
  const hit = archives.get(file);
  if (hit?.stamp === stamp) return hit.images;
  const images = archiveImages(file, name);
  archives.set(file, { stamp, images });
  return images;
}

export interface StoreProblem {
  source: string;
  message: string;
}

export class ImageStore {
  constructor(readonly dir: string) {}

  /** Every image, and what could not be read (a broken entry never hides the others). */
  scan(): { images: Image[]; problems: StoreProblem[] } {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(this.dir, { withFileTypes: true });
    } catch (err) {
      throw new ImageError("not-found", `image store ${this.dir}: ${(err as Error).message}`);
    }
    const images: Image[] = [];
    const problems: StoreProblem[] = [];
    const problem = (source: string, message: string) => problems.push({ source, message });
    const attempt = (source: string, f: () => Image[]) => {
      try {
        images.push(...f());
      } catch (err) {
        problem(source, (err as Error).message);
      }
    };
    if (fs.existsSync(path.join(this.dir, "index.json"))) attempt("index.json", () => new Layout(this.dir, ".").images(problem));
    for (const e of entries.sort((a, b) => a.name.localeCompare(b.name))) {
      if (e.name === UNPACKED_DIR || e.name === "blobs") continue;
      const full = path.join(this.dir, e.name);
      if (e.isDirectory() && fs.existsSync(path.join(full, "index.json"))) attempt(e.name, () => new Layout(full, e.name).images(problem));
      else if (e.isFile() && e.name.endsWith(".tar")) attempt(e.name, () => cachedArchive(full, e.name));
    }
    return { images, problems };
  }

  /** Finds an image by reference (NAME defaults to NAME:latest), digest or digest prefix. */
  resolve(ref: string): Image {
    if (ref === "") throw new ImageError("invalid", "no image given");
    const { images, problems } = this.scan();
    const want = normalizeRef(ref);
    const h = ref.replace(/^sha256:/, "");
    const found =
      images.find((i) => i.reference !== "" && normalizeRef(i.reference) === want) ??
      (/^[0-9a-f]{6,64}$/.test(h) ? images.find((i) => hex(i.digest).startsWith(h)) : undefined);
    if (found) return found;
    const broken = problems.length ? ` (unreadable: ${problems.map((p) => `${p.source}: ${p.message}`).join("; ")})` : "";
    throw new ImageError("not-found", `image ${ref} not found in ${this.dir}${broken}`);
  }

  /** The shared-unpacked directory of a layer (by ChainID), if `image unpack` made it. */
  unpackedDir(layer: Layer): string {
    return path.join(this.dir, UNPACKED_DIR, hex(layer.chainId));
  }
}

/** busybox, busybox:latest, docker.io/library/busybox:latest: one image. */
export function normalizeRef(ref: string): string {
  const r = ref.replace(/^docker\.io\/(library\/)?/, "");
  const lastSlash = r.lastIndexOf("/");
  return r.slice(lastSlash + 1).includes(":") ? r : `${r}:latest`;
}

/**
 * Entrypoint + (command or Cmd), as docker combines them. A replaced
 * entrypoint (run --entrypoint) drops the image's Cmd too, as docker's does.
 */
export function processArgs(cfg: RunConfig, command: string[], entrypoint?: string[]): string[] {
  if (entrypoint) return [...entrypoint, ...command];
  return [...(cfg.Entrypoint ?? []), ...(command.length > 0 ? command : (cfg.Cmd ?? []))];
}
