// The project's own default image: busybox from Debian's busybox-static,
// as an OCI layout, so the main job needs no registry. One layer: the
// static binary, a symlink per applet, and the few files containers expect.
//
// usage (bun): busybox.ts BUSYBOX_BINARY OUT_LAYOUT_DIR [ARCH LIST_BINARY]
// For another architecture (arm64), the applet list comes from LIST_BINARY,
// the host's build of the same Debian busybox-static, which this host can
// run: one source package, one configuration, the same applets.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import tar from "tar-stream";
import { writeImage } from "./oci-layout.js";

interface Entry {
  name: string;
  type: "file" | "directory" | "symlink";
  mode: number;
  data?: Buffer;
  linkname?: string;
}

/** Packs entries into a tar with fixed owners and mtimes, in the order given. */
export function packTar(entries: Entry[]): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const pack = tar.pack();
    const chunks: Buffer[] = [];
    pack.on("data", (c: unknown) => void chunks.push(c as Buffer)); // tar-stream emits Buffers
    pack.on("end", () => resolve(Buffer.concat(chunks)));
    pack.on("error", reject);
    for (const e of entries) {
      const header = { name: e.name, type: e.type, mode: e.mode, uid: 0, gid: 0, uname: "root", gname: "root", mtime: new Date(0), linkname: e.linkname };
      if (e.data) pack.entry(header, e.data);
      else pack.entry(header);
    }
    pack.finalize();
  });
}

export function busyboxEntries(binary: Buffer, applets: string[]): Entry[] {
  const dir = (name: string, mode = 0o755): Entry => ({ name, type: "directory", mode });
  const file = (name: string, text: string, mode = 0o644): Entry => ({ name, type: "file", mode, data: Buffer.from(text) });
  const entries: Entry[] = [
    dir("bin"),
    { name: "bin/busybox", type: "file", mode: 0o755, data: binary },
    dir("dev"),
    dir("etc"),
    file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
    file("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
    dir("proc"),
    dir("root", 0o700),
    dir("sys"),
    dir("tmp", 0o1777),
    dir("var"),
  ];
  for (const a of [...new Set(applets)].sort()) {
    if (a === "busybox") continue;
    entries.push({ name: `bin/${a}`, type: "symlink", mode: 0o777, linkname: "busybox" });
  }
  return entries;
}

async function main(): Promise<void> {
  const [bin, out, architecture, lister] = process.argv.slice(2);
  if (!bin || !out || (architecture !== undefined && !lister)) {
    process.stderr.write("usage: busybox.ts BUSYBOX_BINARY OUT_LAYOUT_DIR [ARCH LIST_BINARY]\n");
    process.exit(2);
  }
  const list = spawnSync(lister ?? bin, ["--list"], { encoding: "utf8" });
  if (list.status !== 0) throw new Error(`${lister ?? bin} --list failed: ${list.stderr}`);
  const layer = await packTar(busyboxEntries(fs.readFileSync(bin), list.stdout.split("\n").filter((x) => x !== "")));
  const d = writeImage(out, {
    ref: "busybox:latest",
    layers: [layer],
    config: { Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], Cmd: ["sh"] },
    architecture,
  });
  process.stdout.write(`image busybox:latest ${d.digest} in ${out}\n`);
}

if (import.meta.main) await main();
