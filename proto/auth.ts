// Ed25519 keys for connection authentication, shared by both sides: the host
// signs an agent's challenge, the agent checks the signature against its list
// of authorised keys. Public keys use OpenSSH's one-line form
// ("ssh-ed25519 BASE64 comment") so they can be read, pasted and diffed like
// an authorized_keys file; private keys are PKCS#8 PEM, which node:crypto and
// openssl read natively.
import crypto from "node:crypto";
import { ErrorCode, FractalError } from "./errors.js";

/** What a signature covers: a fixed context, then the connection's challenge. */
const CONTEXT = Buffer.from("fractal-auth-v1\0");
export const CHALLENGE_BYTES = 32;
const KEY_TYPE = "ssh-ed25519";
// DER prefix of an Ed25519 SubjectPublicKeyInfo; the raw key follows it.
const SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex");

export function newChallenge(): Uint8Array {
  return crypto.randomBytes(CHALLENGE_BYTES);
}

export function signedMessage(challenge: Uint8Array): Buffer {
  return Buffer.concat([CONTEXT, challenge]);
}

/** The client's half: a key that can answer a challenge. */
export interface Signer {
  readonly publicKey: Uint8Array;
  sign(challenge: Uint8Array): Uint8Array;
}

export function signerFromPem(pem: string, where: string): Signer {
  let key: crypto.KeyObject;
  try {
    key = crypto.createPrivateKey(pem);
  } catch (err) {
    throw new FractalError(ErrorCode.INVALID_ARGUMENT, `${where}: not a private key (${(err as Error).message})`);
  }
  if (key.asymmetricKeyType !== "ed25519") {
    throw new FractalError(ErrorCode.INVALID_ARGUMENT, `${where}: a ${key.asymmetricKeyType} key; fractal keys are Ed25519 (make one with fractal-host keygen)`);
  }
  const publicKey = rawPublicKey(crypto.createPublicKey(key));
  return { publicKey, sign: (challenge) => crypto.sign(null, signedMessage(challenge), key) };
}

/** A new key pair: PKCS#8 PEM private key and the OpenSSH public line. */
export function generateKey(comment: string): { privatePem: string; publicLine: string } {
  const { privateKey, publicKey } = crypto.generateKeyPairSync("ed25519");
  return {
    privatePem: privateKey.export({ format: "pem", type: "pkcs8" }).toString(),
    publicLine: formatPublicKey(rawPublicKey(publicKey), comment),
  };
}

function rawPublicKey(k: crypto.KeyObject): Uint8Array {
  const der = k.export({ format: "der", type: "spki" });
  return new Uint8Array(der.subarray(der.length - 32));
}

/** Checks a signature made by `publicKey` over the challenge; never throws. */
export function verifySignature(publicKey: Uint8Array, signature: Uint8Array, challenge: Uint8Array): boolean {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  try {
    const key = crypto.createPublicKey({ key: Buffer.concat([SPKI_PREFIX, publicKey]), format: "der", type: "spki" });
    return crypto.verify(null, signedMessage(challenge), key, signature);
  } catch {
    return false;
  }
}

/** OpenSSH's wire encoding of an Ed25519 public key: two length-prefixed strings. */
function sshBlob(key: Uint8Array): Buffer {
  const t = Buffer.from(KEY_TYPE);
  const b = Buffer.alloc(4 + t.length + 4 + key.length);
  b.writeUInt32BE(t.length, 0);
  t.copy(b, 4);
  b.writeUInt32BE(key.length, 4 + t.length);
  Buffer.from(key).copy(b, 8 + t.length);
  return b;
}

export function formatPublicKey(key: Uint8Array, comment = ""): string {
  return `${KEY_TYPE} ${sshBlob(key).toString("base64")}${comment ? ` ${comment}` : ""}`;
}

/** The base64 blob alone, as it goes on a kernel command line. */
export function publicKeyBlob(key: Uint8Array): string {
  return sshBlob(key).toString("base64");
}

/** Decodes the base64 blob of an ssh-ed25519 public key to the raw 32 bytes. */
export function parsePublicKeyBlob(b64: string, where: string): Uint8Array {
  const bad = (why: string) => new FractalError(ErrorCode.INVALID_ARGUMENT, `${where}: ${why}`);
  if (!/^[A-Za-z0-9+/]+=*$/.test(b64)) throw bad("the key is not base64");
  const b = Buffer.from(b64, "base64");
  const tlen = b.length >= 4 ? b.readUInt32BE(0) : -1;
  if (tlen < 0 || 8 + tlen > b.length || b.subarray(4, 4 + tlen).toString() !== KEY_TYPE) throw bad(`not an ${KEY_TYPE} key`);
  const klen = b.readUInt32BE(4 + tlen);
  if (klen !== 32 || b.length !== 8 + tlen + 32) throw bad("an ssh-ed25519 key of the wrong length");
  return new Uint8Array(b.subarray(8 + tlen));
}

/** SHA256:... as ssh-keygen -l prints it, to name a key in logs and errors. */
export function fingerprint(key: Uint8Array): string {
  return `SHA256:${crypto.createHash("sha256").update(sshBlob(key)).digest("base64").replace(/=+$/, "")}`;
}
