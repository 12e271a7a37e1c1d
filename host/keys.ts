// The host user's key: where it lives, loading it to sign an agent's
// challenge, and making one. Like ssh, the private key file must not be
// readable by others and is never overwritten.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { generateKey, signerFromPem, type Signer } from "../proto/auth.js";
import { ErrorCode, FractalError } from "../proto/errors.js";

/** ~/.config/fractal/key, or under $XDG_CONFIG_HOME. */
export function defaultKeyPath(): string {
  const base = process.env.XDG_CONFIG_HOME || path.join(os.homedir(), ".config");
  return path.join(base, "fractal", "key");
}

/**
 * The key to authenticate with: `explicit` (--key or FRACTAL_KEY) must
 * exist; the default one is used when present, and its absence only matters
 * if an agent asks for a key.
 */
export function loadSigner(explicit?: string): Signer | undefined {
  const file = explicit ?? defaultKeyPath();
  let pem: string;
  try {
    pem = fs.readFileSync(file, "utf8");
  } catch (err) {
    if (!explicit && (err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new FractalError(ErrorCode.INVALID_ARGUMENT, `cannot read key ${file}: ${(err as Error).message}`);
  }
  const mode = fs.statSync(file).mode;
  if (mode & 0o077) throw new FractalError(ErrorCode.PERMISSION_DENIED, `key ${file} is readable by others (mode ${(mode & 0o777).toString(8)}): chmod 600 it`);
  return signerFromPem(pem, file);
}

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
