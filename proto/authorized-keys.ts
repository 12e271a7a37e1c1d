// The authorised-keys format, shared by the agent (which reads it) and the
// host (which checks what `boot --authorize` hands the guest): one key per
// line, as in an authorized_keys file,
//
//   [allow=TYPE,TYPE...] ssh-ed25519 BASE64 [comment]
//
// and on a kernel command line fractal.key=[TYPE,TYPE...:]BASE64. TYPE is a
// request type as fractal.proto names it (exec, run, container_list, ...),
// "logs" (attach without stdin), or a group: "all" (the default) or
// "observer". Also here: which channels must authenticate at all.
import { parsePublicKeyBlob, publicKeyBlob } from "./auth.js";
import { fingerprint } from "./ed25519.js";
import { ErrorCode, FractalError } from "./errors.js";

/**
 * Which channels must authenticate: those others can reach (TCP, WebSocket,
 * TLS, vsock — any local user of a host with vhost-vsock can connect to a
 * guest's CID), every one, or none. Only channels private to the VM's owner
 * (the virtio-serial socket and unix sockets in its state directory, a
 * serial line) are exempt under "network".
 */
export type AuthMode = "network" | "all" | "none";

export function parseAuthMode(s: string, where: string): AuthMode {
  if (s === "network" || s === "all" || s === "none") return s;
  throw new FractalError(ErrorCode.INVALID_ARGUMENT, `${where}: auth mode "${s}" is not one of network, all, none`);
}

/** Every request type, named as in fractal.proto, plus "logs": attach without stdin. */
export const REQUEST_TYPES = [
  "ping", "version", "exec", "signal", "resize", "close_stdin", "wait", "shutdown", "images", "run",
  "container_wait", "attach", "logs", "container_kill", "container_stop", "container_remove",
  "container_list", "container_resize", "image_unpack", "port_forward", "copy", "layer_add", "layer_remove", "layer_list",
  "attest_keys", "attest_quote",
] as const;

const GROUPS: Record<string, readonly string[]> = {
  all: ["all"],
  // May look, never touch: list images and containers, read their output.
  observer: ["ping", "version", "images", "container_list", "container_wait", "logs", "layer_list", "attest_keys", "attest_quote"],
};

export function parseAllowList(text: string, where: string): string[] {
  const out = new Set<string>();
  for (const t of text.split(",")) {
    if (GROUPS[t]) GROUPS[t].forEach((x) => out.add(x));
    else if ((REQUEST_TYPES as readonly string[]).includes(t)) out.add(t);
    else throw new FractalError(ErrorCode.INVALID_ARGUMENT, `${where}: unknown request type "${t}" in allow= (known: ${Object.keys(GROUPS).join(", ")}, ${REQUEST_TYPES.join(", ")})`);
  }
  return [...out];
}

export interface AuthorizedKey {
  key: Uint8Array;
  /** The comment, or the fingerprint when there is none: how logs name the key. */
  name: string;
  allowed: readonly string[];
}

export function parseAuthorizedKeys(text: string, where: string): AuthorizedKey[] {
  const keys: AuthorizedKey[] = [];
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const at = `${where}:${i + 1}`;
    const words = line.split(/\s+/);
    let allowed: readonly string[] = ["all"];
    if (words[0]!.startsWith("allow=")) allowed = parseAllowList(words.shift()!.slice("allow=".length), at);
    const [type, blob, ...comment] = words;
    if (type !== "ssh-ed25519" || !blob) {
      throw new FractalError(ErrorCode.INVALID_ARGUMENT, `${at}: expected "[allow=TYPES] ssh-ed25519 BASE64 [comment]", got "${line.slice(0, 60)}"`);
    }
    const key = parsePublicKeyBlob(blob, at);
    keys.push({ key, name: comment.join(" ") || fingerprint(key), allowed });
  });
  return keys;
}

/** fractal.key=[ALLOW:]BASE64, ALLOW being TYPE,TYPE... as in the file. */
export function parseCmdlineKey(value: string): AuthorizedKey {
  const colon = value.lastIndexOf(":");
  const where = "fractal.key";
  const allowed = colon < 0 ? ["all"] : parseAllowList(value.slice(0, colon), where);
  const key = parsePublicKeyBlob(value.slice(colon + 1), where);
  return { key, name: fingerprint(key), allowed };
}

/** The value of fractal.key= for a key: parseCmdlineKey's inverse. */
export function cmdlineKey(k: AuthorizedKey): string {
  const blob = publicKeyBlob(k.key);
  return k.allowed.includes("all") ? blob : `${k.allowed.join(",")}:${blob}`;
}
