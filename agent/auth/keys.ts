// Authorised keys and what each may do, read from an authorized_keys-style
// file (baked into the initramfs at /etc/fractal/authorized_keys) and from the
// kernel command line (fractal.key=[ALLOW:]BASE64). One line per key:
//
//   [allow=TYPE,TYPE...] ssh-ed25519 BASE64 [comment]
//
// TYPE is a request type as fractal.proto names it (exec, run, attach,
// container_list, ...), or a group: "all" (the default) or "observer".
import { fingerprint, parsePublicKeyBlob } from "../../proto/auth.js";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import { parseAllowList } from "./policy.js";

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
