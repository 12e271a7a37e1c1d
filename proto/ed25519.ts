// The node:crypto half of key handling (auth.ts has the rest): making a key
// pair (keygen, boot), checking a signature and naming a key by its
// fingerprint (the agent). Apart so that the CLI's exec path, which only
// signs, never loads node:crypto.
import crypto from "node:crypto";
import { formatPublicKey, signedMessage, sshBlob } from "./auth.js";

// DER prefix of an Ed25519 SubjectPublicKeyInfo; the raw key follows it.
const SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex");

/** A new key pair: PKCS#8 PEM private key and the OpenSSH public line. */
export function generateKey(comment: string): { privatePem: string; publicLine: string } {
  const { privateKey, publicKey } = crypto.generateKeyPairSync("ed25519");
  const der = publicKey.export({ format: "der", type: "spki" });
  return {
    privatePem: privateKey.export({ format: "pem", type: "pkcs8" }).toString(),
    publicLine: formatPublicKey(new Uint8Array(der.subarray(der.length - 32)), comment),
  };
}

/**
 * Keys that have signed a good answer, parsed: making the key object took a
 * third of a signature check under TCG, in every connection's handshake.
 * Only proven keys get in, so strangers cannot grow it; bounded all the same.
 */
const proven = new Map<string, crypto.KeyObject>();
const MAX_PROVEN = 64;

/** Checks a signature made by `publicKey` over the challenge; never throws. */
export function verifySignature(publicKey: Uint8Array, signature: Uint8Array, challenge: Uint8Array): boolean {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  try {
    const id = Buffer.from(publicKey).toString("hex");
    const key = proven.get(id) ?? crypto.createPublicKey({ key: Buffer.concat([SPKI_PREFIX, publicKey]), format: "der", type: "spki" });
    const good = crypto.verify(null, signedMessage(challenge), key, signature);
    if (good && !proven.has(id)) {
      if (proven.size >= MAX_PROVEN) proven.delete(proven.keys().next().value!);
      proven.set(id, key);
    }
    return good;
  } catch {
    return false;
  }
}

/** SHA256:... as ssh-keygen -l prints it, to name a key in logs and errors. */
export function fingerprint(key: Uint8Array): string {
  return `SHA256:${crypto.createHash("sha256").update(sshBlob(key)).digest("base64").replace(/=+$/, "")}`;
}
