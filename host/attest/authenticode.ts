// The Authenticode digest of a PE/COFF image: what UEFI firmware extends into
// PCR 4 when it starts an EFI application, such as the kernel's EFI stub.
// It is the image's hash without the fields a signature changes (the
// checksum, the certificate table's directory entry and the table itself),
// with the sections hashed in file order.
import { createHash } from "node:crypto";
import { ErrorCode, FractalError } from "../../proto/errors.js";

function bad(what: string): never {
  throw new FractalError(ErrorCode.INVALID_ARGUMENT, `not a PE image: ${what}`);
}

export function authenticodeDigest(image: Uint8Array, alg = "sha256"): Buffer {
  const b = Buffer.from(image.buffer, image.byteOffset, image.byteLength);
  if (b.length < 0x40 || b.readUInt16LE(0) !== 0x5a4d) bad("no MZ header");
  const pe = b.readUInt32LE(0x3c);
  if (pe + 24 > b.length || b.readUInt32LE(pe) !== 0x00004550) bad("no PE signature");
  const sections = b.readUInt16LE(pe + 6);
  const optSize = b.readUInt16LE(pe + 20);
  const opt = pe + 24;
  const magic = b.readUInt16LE(opt);
  if (magic !== 0x10b && magic !== 0x20b) bad(`optional header magic 0x${magic.toString(16)}`);
  const checksum = opt + 64;
  // The data directories start 96 (PE32) or 112 (PE32+) bytes in; the
  // certificate table is the fifth, each entry 8 bytes.
  const dirs = opt + (magic === 0x20b ? 112 : 96);
  const numDirs = b.readUInt32LE(dirs - 4);
  const certEntry = dirs + 4 * 8;
  const sizeOfHeaders = b.readUInt32LE(opt + 60);
  if (sizeOfHeaders > b.length || certEntry + 8 > opt + optSize) bad("headers out of range");
  const certSize = numDirs > 4 ? b.readUInt32LE(certEntry + 4) : 0;

  const h = createHash(alg);
  h.update(b.subarray(0, checksum));
  if (numDirs > 4) {
    h.update(b.subarray(checksum + 4, certEntry));
    h.update(b.subarray(certEntry + 8, sizeOfHeaders));
  } else {
    h.update(b.subarray(checksum + 4, sizeOfHeaders));
  }
  let hashed = sizeOfHeaders;
  const table = opt + optSize;
  const raw: { offset: number; size: number }[] = [];
  for (let i = 0; i < sections; i++) {
    const s = table + i * 40;
    if (s + 40 > b.length) bad("section table out of range");
    const size = b.readUInt32LE(s + 16);
    const offset = b.readUInt32LE(s + 20);
    if (size === 0) continue;
    if (offset + size > b.length) bad(`section ${i} out of range`);
    raw.push({ offset, size });
  }
  raw.sort((x, y) => x.offset - y.offset);
  for (const r of raw) {
    h.update(b.subarray(r.offset, r.offset + r.size));
    hashed += r.size;
  }
  // Bytes after the last section that are not the signature are hashed too.
  if (b.length > hashed + certSize) h.update(b.subarray(hashed, b.length - certSize));
  return h.digest();
}
