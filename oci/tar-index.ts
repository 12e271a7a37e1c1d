// Random access to the members of a tar file (a docker-archive), by reading
// only its 512-byte headers. Members are then read in place as byte ranges:
// a layer inside a multi-gigabyte archive costs no copy.
import fs from "node:fs";
import path from "node:path";
import { ImageError } from "./errors.js";

export interface TarMember {
  name: string;
  offset: number;
  size: number;
}

const BLOCK = 512;

function field(h: Buffer, start: number, len: number): string {
  const s = h.subarray(start, start + len);
  const nul = s.indexOf(0);
  return s.subarray(0, nul < 0 ? len : nul).toString("utf8");
}

function octal(h: Buffer, start: number, len: number, file: string): number {
  // GNU base-256 for sizes over 8 GiB: high bit of the first byte set.
  if (h[start]! & 0x80) {
    let n = 0;
    for (let i = start + 1; i < start + len; i++) n = n * 256 + h[i]!;
    return n;
  }
  const s = field(h, start, len).trim();
  if (s === "") return 0;
  if (!/^[0-7]+$/.test(s)) throw new ImageError("corrupt", `${file}: bad tar header (size field "${s}")`);
  return parseInt(s, 8);
}

function paxPath(data: Buffer): string | undefined {
  let i = 0;
  let path: string | undefined;
  while (i < data.length) {
    const sp = data.indexOf(0x20, i);
    if (sp < 0) break;
    const len = Number(data.subarray(i, sp).toString());
    if (!(len > 0)) break;
    const rec = data.subarray(sp + 1, i + len - 1).toString("utf8");
    const eq = rec.indexOf("=");
    if (rec.slice(0, eq) === "path") path = rec.slice(eq + 1);
    i += len;
  }
  return path;
}

/** Lists the regular-file members of a tar archive. */
export function indexTar(file: string): Map<string, TarMember> {
  const fd = fs.openSync(file, "r");
  try {
    const total = fs.fstatSync(fd).size;
    const out = new Map<string, TarMember>();
    const h = Buffer.alloc(BLOCK);
    let pos = 0;
    let longName: string | undefined;
    const links = new Map<string, string>();
    while (pos + BLOCK <= total) {
      if (fs.readSync(fd, h, 0, BLOCK, pos) !== BLOCK) break;
      if (h.every((b) => b === 0)) break;
      const size = octal(h, 124, 12, file);
      const type = String.fromCharCode(h[156]!);
      const dataAt = pos + BLOCK;
      if (dataAt + size > total) throw new ImageError("corrupt", `${file}: truncated (member at ${pos} runs past the end)`);
      const magic = field(h, 257, 6);
      const prefix = magic.startsWith("ustar") ? field(h, 345, 155) : "";
      let name = longName ?? (prefix ? `${prefix}/${field(h, 0, 100)}` : field(h, 0, 100));
      longName = undefined;
      if (type === "x" || type === "L") {
        const data = Buffer.alloc(size);
        fs.readSync(fd, data, 0, size, dataAt);
        longName = type === "L" ? field(data, 0, size) : paxPath(data);
      } else if (type === "0" || type === "\0" || type === "7") {
        name = name.replace(/^\.\//, "");
        out.set(name, { name, offset: dataAt, size });
      } else if (type === "2") {
        // docker save links <id>/layer.tar to the blob; follow within the archive.
        links.set(name.replace(/^\.\//, ""), path.posix.normalize(path.posix.join(path.posix.dirname(name), field(h, 157, 100))));
      }
      pos = dataAt + Math.ceil(size / BLOCK) * BLOCK;
    }
    for (const [name, target] of links) {
      const m = out.get(target.replace(/^\.\//, ""));
      if (m && !out.has(name)) out.set(name, { ...m, name });
    }
    return out;
  } finally {
    fs.closeSync(fd);
  }
}
