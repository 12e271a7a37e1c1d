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
    if (fs.existsSync(f)) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `${f} exists: not overwriting it (remove it first)`);
  }
  const { privatePem, publicLine } = generateKey(comment);
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  // wx: never follow or truncate something that appeared meanwhile.
  fs.writeFileSync(file, privatePem, { mode: 0o600, flag: "wx" });
  fs.writeFileSync(`${file}.pub`, `${publicLine}\n`, { mode: 0o644, flag: "wx" });
  return publicLine;
}
