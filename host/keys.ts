// The host user's key: where it lives and loading it to sign an agent's
// challenge (keygen.ts makes one). Like ssh, the private key file must not be
// readable by others.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { signerFromPem, type Signer } from "../proto/auth.js";
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
export async function loadSigner(explicit?: string): Promise<Signer | undefined> {
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
