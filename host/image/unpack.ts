// `fractal-host image unpack`: the host unpacks an image's layers once into
// the store (STORE/unpacked/<ChainID>/), so guests mount them as overlay
// lower layers straight off the share, with no copy in the guest. Layers
// are keyed by ChainID, not diff_id, because of opaque directories: overlay
// marks those with a trusted.* xattr, which 9p (and NFS) do not carry, so
// here each one is spelled out as whiteouts of whatever the layers beneath
// hold in that directory -- which depends on those layers, hence the chain.
import fs from "node:fs";
import path from "node:path";
import { unpackLayer } from "../../oci/layer.js";
import type { Image, ImageStore } from "../../oci/store.js";
import { mknod, S_IFCHR } from "../../proto/libc.js";

type Kind = "dir" | "other" | "whiteout";

function kindOf(st: fs.Stats): Kind {
  if (st.isCharacterDevice() && st.rdev === 0) return "whiteout";
  return st.isDirectory() ? "dir" : "other";
}

/** What the stacked layers `lowers` (topmost first) show in directory `rel`. */
function lowerView(lowers: string[], rel: string): Map<string, Kind> {
  const seen = new Map<string, Kind>();
  for (const l of lowers) {
    let st: fs.Stats;
    try {
      st = fs.lstatSync(path.join(l, rel));
    } catch {
      continue; // this layer does not touch the directory
    }
    if (!st.isDirectory()) break; // a file or whiteout here hides everything beneath
    for (const name of fs.readdirSync(path.join(l, rel))) {
      if (!seen.has(name)) seen.set(name, kindOf(fs.lstatSync(path.join(l, rel, name))));
    }
  }
  for (const [k, v] of seen) if (v === "whiteout") seen.delete(k);
  return seen;
}

/** Makes directory `rel` of `root` opaque toward `lowers` using whiteouts only. */
function spellOutOpaque(root: string, rel: string, lowers: string[]): number {
  let made = 0;
  for (const [name, kind] of lowerView(lowers, rel)) {
    const mine = path.join(root, rel, name);
    let st: fs.Stats | undefined;
    try {
      st = fs.lstatSync(mine);
    } catch {
      st = undefined;
    }
    if (!st) {
      mknod(mine, S_IFCHR, 0, 0, 0);
      made++;
    } else if (st.isDirectory() && kind === "dir") {
      // Both have a directory here: overlay would merge them, so the lower
      // one's contents must be hidden one level down as well.
      made += spellOutOpaque(root, path.join(rel, name), lowers);
    }
  }
  return made;
}

export interface UnpackReport {
  chainId: string;
  dir: string;
  fresh: boolean;
  entries: number;
}

export async function unpackImage(store: ImageStore, img: Image, progress?: (line: string) => void): Promise<UnpackReport[]> {
  const lowers: string[] = [];
  const out: UnpackReport[] = [];
  for (const [i, l] of img.layers.entries()) {
    const dest = store.unpackedDir(l);
    let entries = 0;
    const fresh = !fs.existsSync(dest);
    if (fresh) {
      progress?.(`layer ${i + 1}/${img.layers.length} ${l.diffId.slice(0, 19)}: unpacking`);
      const snapshot = [...lowers];
      const r = await unpackLayer(l, dest, {
        opaque: "record",
        finish: (dir, res) => {
          for (const rel of res.opaque) spellOutOpaque(dir, rel, snapshot);
        },
      });
      entries = r.entries;
    }
    out.push({ chainId: l.chainId, dir: dest, fresh, entries });
    lowers.unshift(dest);
  }
  return out;
}
