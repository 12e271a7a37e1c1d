// Making the host user's key. Apart from keys.ts because making a key needs
// node:crypto, which the exec path (only loading and signing) never loads.
// Like ssh, an existing key file is never overwritten.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { generateKey } from "../proto/ed25519.js";
import { ErrorCode, FractalError } from "../proto/errors.js";

/** Writes a new key pair to FILE and FILE.pub; refuses to replace either. */
export function writeNewKey(file: string, comment = `${process.env.USER || os.userInfo().username}@${os.hostname()}`): string {
  for (const f of [file, `${file}.pub`]) {
    if (fs.existsSync(f)) throw exists(f);
  }
  const { privatePem, publicLine } = generateKey(comment);
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  // Each file is written whole under a private name and linked into place:
  // link never replaces, and a reader (another boot making the same default
  // key at the same moment) sees no file or a complete one, never half a key.
  placeWhole(file, privatePem, 0o600);
  placeWhole(`${file}.pub`, `${publicLine}\n`, 0o644);
  return publicLine;
}

/**
 * Makes FILE's key pair unless FILE is there (or another process makes it
 * meanwhile). True if this call made it.
 */
export function ensureKey(file: string, comment?: string): boolean {
  try {
    writeNewKey(file, comment);
    return true;
  } catch (err) {
    if (fs.existsSync(file)) return false;
    throw err;
  }
}

function placeWhole(file: string, text: string, mode: number): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.rmSync(tmp, { force: true }); // left by a process of the same pid that died here
  // wx: never follow or truncate something that appeared meanwhile.
  fs.writeFileSync(tmp, text, { mode, flag: "wx" });
  try {
    linkExclusive(tmp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") throw exists(file);
    throw err;
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

/** Links `tmp` at `file`, failing with EEXIST if it is there. */
function linkExclusive(tmp: string, file: string): void {
  try {
    fs.linkSync(tmp, file);
  } catch (err) {
    // A file system without hard links: an exclusive copy, which a racing reader may see half-written.
    if (!["EPERM", "ENOTSUP", "EOPNOTSUPP", "ENOSYS"].includes((err as NodeJS.ErrnoException).code ?? "")) throw err;
    fs.copyFileSync(tmp, file, fs.constants.COPYFILE_EXCL);
  }
}

function exists(file: string): FractalError {
  return new FractalError(ErrorCode.INVALID_ARGUMENT, `${file} exists: not overwriting it (remove it first)`);
}
