// Assembles the agent's authentication settings from its flags, the files
// baked into the initramfs and the kernel command line.
import fs from "node:fs";
import type { ListenOptions } from "../../proto/listen.js";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import { log } from "../log.js";
import { parseAuthMode, parseAuthorizedKeys, type AuthMode, type AuthorizedKey } from "../../proto/authorized-keys.js";
import { AuthGate } from "./authenticator.js";

/** Where the initramfs build puts authorised keys and an optional TLS identity. */
export const BAKED_KEYS = "/etc/fractal/authorized_keys";
export const BAKED_TLS = { cert: "/etc/fractal/tls.crt", key: "/etc/fractal/tls.key" };

export interface AuthFlags {
  auth?: string;
  authorizedKeys?: string;
  tlsCert?: string;
  tlsKey?: string;
  /** Guest init: the baked-in files are read when present, and the command line adds to them. */
  init?: { keys: AuthorizedKey[]; auth?: AuthMode };
}

function read(file: string, what: string): string {
  try {
    return fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new FractalError(ErrorCode.INVALID_ARGUMENT, `cannot read ${what} ${file}: ${(err as Error).message}`);
  }
}

export function authGate(f: AuthFlags): AuthGate {
  const keys: AuthorizedKey[] = [];
  const file = f.authorizedKeys ?? (f.init && fs.existsSync(BAKED_KEYS) ? BAKED_KEYS : undefined);
  if (file) keys.push(...parseAuthorizedKeys(read(file, "authorized keys"), file));
  keys.push(...(f.init?.keys ?? []));
  const mode = f.auth !== undefined ? parseAuthMode(f.auth, "--auth") : (f.init?.auth ?? "network");
  if (mode !== "none" && keys.length === 0) log("warn", `no authorised keys: ${mode === "all" ? "every" : "TCP and WebSocket"} connection will be refused`);
  return new AuthGate(mode, keys);
}

export function tlsIdentity(f: AuthFlags): ListenOptions["tls"] {
  if (f.tlsCert || f.tlsKey) {
    if (!f.tlsCert || !f.tlsKey) throw new FractalError(ErrorCode.INVALID_ARGUMENT, "--tls-cert and --tls-key go together");
    return { cert: read(f.tlsCert, "certificate"), key: read(f.tlsKey, "TLS key") };
  }
  if (f.init && fs.existsSync(BAKED_TLS.cert) && fs.existsSync(BAKED_TLS.key)) {
    return { cert: read(BAKED_TLS.cert, "certificate"), key: read(BAKED_TLS.key, "TLS key") };
  }
  return undefined;
}
