// The overlay mount's option string for a container root. mount(2) copies
// at most one page of option data (copy_mount_options in fs/namespace.c),
// so sixty layers at /run/fractal/layers/<64 hex digits> do not fit. As
// docker's overlay2 driver does with its l/ directory, a layer then takes
// part through a short symlink, /run/fractal/l/<12 hex digits>, which
// overlayfs follows when it resolves lowerdir. Short images keep the real
// paths, so /proc/mounts still says which layer directories a root uses.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { ErrorCode, FractalError } from "../../proto/errors.js";

/** Longest option string mount(2) takes: one 4 KiB page, NUL included. */
export const MOUNT_DATA_MAX = 4095;
export const LINK_DIR = "/run/fractal/l";

/** `lowerdir=…,upperdir=…,workdir=…` for these lower directories (topmost first); no upper: a read-only overlay. */
export function overlayData(lowers: string[], upper = "", work = "", linkDir = LINK_DIR): string {
  const data = (dirs: string[]) => `lowerdir=${dirs.join(":")}${upper ? `,upperdir=${upper},workdir=${work}` : ""}`;
  const direct = data(lowers);
  if (direct.length <= MOUNT_DATA_MAX) return direct;
  const short = data(lowers.map((dir) => shortLink(dir, linkDir)));
  if (short.length > MOUNT_DATA_MAX) {
    throw new FractalError(ErrorCode.INVALID_ARGUMENT, `the image has ${lowers.length} layers, more than one overlay mount can stack (${MOUNT_DATA_MAX} bytes of mount options)`);
  }
  return short;
}

/** A short, stable name for a layer directory: the same directory always gets the same link. */
function shortLink(dir: string, linkDir: string): string {
  const link = path.join(linkDir, createHash("sha256").update(dir).digest("hex").slice(0, 12));
  if (readLinkQuiet(link) === dir) return link;
  fs.mkdirSync(linkDir, { recursive: true });
  // Made aside and renamed over: two runs racing for one link both succeed.
  const tmp = `${link}.${process.pid}.${Math.random().toString(36).slice(2, 8)}`;
  fs.symlinkSync(dir, tmp);
  fs.renameSync(tmp, link);
  return link;
}

function readLinkQuiet(p: string): string | undefined {
  try {
    return fs.readlinkSync(p);
  } catch {
    return undefined;
  }
}
