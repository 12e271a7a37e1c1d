// Lower layers for container root file systems. A layer the host already
// unpacked into the store (`fractal-host image unpack`) is used in place,
// straight off the share; any other is unpacked once into the guest's layer
// cache, keyed by diff_id, and shared by every container that uses it. Two
// runs that need the same layer at the same time wait for one unpack.
import fs from "node:fs";
import path from "node:path";
import { hex } from "../../oci/digest.js";
import { unpackLayer } from "../../oci/layer.js";
import type { Image, ImageStore, Layer } from "../../oci/store.js";

/** The guest's layer cache: on /run, a tmpfs, which keeps overlay's xattrs. */
export const LAYER_CACHE = "/run/fractal/layers";

export type Progress = (line: string) => void;

export class LayerCache {
  private readonly inFlight = new Map<string, Promise<string>>();

  constructor(
    private readonly store: ImageStore,
    readonly dir = LAYER_CACHE,
  ) {}

  private cached(l: Layer): string {
    return path.join(this.dir, hex(l.diffId));
  }

  /** Where the layer is ready to use, or undefined if it must be unpacked first. */
  ready(l: Layer): string | undefined {
    const shared = this.store.unpackedDir(l);
    if (fs.existsSync(shared)) return shared;
    const local = this.cached(l);
    return fs.existsSync(local) ? local : undefined;
  }

  /** The image's layers as overlay lower directories, topmost first. */
  async lowerDirs(img: Image, progress?: Progress): Promise<string[]> {
    const dirs: string[] = [];
    for (const l of img.layers) dirs.unshift(this.ready(l) ?? (await this.unpack(l, progress)));
    return dirs;
  }

  private unpack(l: Layer, progress?: Progress): Promise<string> {
    const key = l.diffId;
    let p = this.inFlight.get(key);
    if (!p) {
      const dest = this.cached(l);
      let done = 0;
      let last = 0;
      const name = (l.digest ?? l.diffId).slice(0, 19);
      p = unpackLayer(l, dest, {
        opaque: "xattr",
        progress: progress
          ? (n) => {
              done += n;
              const now = Date.now();
              if (now - last > 200 || done === l.size) {
                last = now;
                progress(`unpacking ${name}: ${mb(done)} / ${mb(l.size)}`);
              }
            }
          : undefined,
      })
        .then(() => dest)
        .finally(() => this.inFlight.delete(key));
      this.inFlight.set(key, p);
    }
    return p;
  }
}

const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;
