// Ed25519 keys for connection authentication, shared by both sides: the host
// signs an agent's challenge, the agent checks the signature against its list
// of authorised keys. Public keys use OpenSSH's one-line form
// ("ssh-ed25519 BASE64 comment") so they can be read, pasted and diffed like
// an authorized_keys file; private keys are PKCS#8 PEM, which node:crypto and
// openssl read natively.
//
// Nothing here loads node:crypto: in Bun it builds node's stream classes
// first, about 10 ms of every `fractal-host exec` that only signs one
// challenge. Signing goes through WebCrypto (native, asynchronous); making
// keys and checking signatures, which the CLI's exec path never does, are in
// ed25519.ts.
import { ErrorCode, FractalError } from "./errors.js";

/** What a signature covers: a fixed context, then the connection's challenge. */
const CONTEXT = Buffer.from("fractal-auth-v1\0");
export const CHALLENGE_BYTES = 32;
const KEY_TYPE = "ssh-ed25519";

export function newChallenge(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(CHALLENGE_BYTES));
}

export function signedMessage(challenge: Uint8Array): Buffer {
  return Buffer.concat([CONTEXT, challenge]);
}

const TICKET_MARK = Buffer.from("ticket\0");

/**
 * What a ticket's signature answers, in place of a challenge: marked, so a
 * signature over a ticket never passes for one over a challenge or the other
 * way round (a challenge is 32 bytes, a ticket's message 39).
 */
export function ticketMessage(ticket: Uint8Array): Uint8Array {
  return Buffer.concat([TICKET_MARK, ticket]);
}

/** A ticket and its key's signature over it: what a Hello opens with (Hello.ticket, Hello.ticket_auth). */
export interface TicketProof {
  ticket: Uint8Array;
  publicKey: Uint8Array;
  signature: Uint8Array;
}

/**
 * Signs a ticket as soon as it comes, so the next connection's Hello needs no
 * key at all. The proof opens one connection, as the key would: kept only
 * where the key itself is kept.
 */
export async function signTicket(key: Signer, ticket: Uint8Array): Promise<TicketProof> {
  return { ticket, publicKey: key.publicKey, signature: await key.sign(ticketMessage(ticket)) };
}

/** The client's half: a key that can answer a challenge. */
export interface Signer {
  readonly publicKey: Uint8Array;
  sign(challenge: Uint8Array): Promise<Uint8Array>;
}

// PKCS#8 algorithm OIDs (DER contents), to name what a wrong key is.
const KEY_ALGORITHMS: Record<string, string> = {
  "2b6570": "ed25519",
  "2a864886f70d010101": "rsa",
  "2a8648ce3d0201": "ec",
  "2b6571": "ed448",
  "2b656e": "x25519",
  "2b656f": "x448",
  "2a8648ce380401": "dsa",
};

export async function signerFromPem(pem: string, where: string): Promise<Signer> {
  const bad = (why: string) => new FractalError(ErrorCode.INVALID_ARGUMENT, `${where}: ${why}`);
  const m = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/.exec(pem);
  if (!m) throw bad("not a private key (no PEM block)");
  if (m[1] === "OPENSSH PRIVATE KEY") throw bad("an OpenSSH-format key; fractal reads PKCS#8 PEM keys (make one with fractal-host keygen)");
  if (m[1] === "ENCRYPTED PRIVATE KEY") throw bad("an encrypted key; fractal reads unencrypted PKCS#8 PEM keys, kept private by the file's mode");
  if (m[1] !== "PRIVATE KEY") throw bad(`not a PKCS#8 private key (PEM label "${m[1]}")`);
  const der = new Uint8Array(Buffer.from(m[2]!.replace(/\s+/g, ""), "base64"));
  const alg = pkcs8Algorithm(der);
  if (alg === undefined) throw bad("not a private key (malformed PKCS#8)");
  const type = KEY_ALGORITHMS[alg] ?? `OID ${alg}`;
  if (type !== "ed25519") throw bad(`a ${type} key; fractal keys are Ed25519 (make one with fractal-host keygen)`);
  let key: CryptoKey;
  let x: string | undefined;
  try {
    key = await crypto.subtle.importKey("pkcs8", der, { name: "Ed25519" }, true, ["sign"]);
    x = (await crypto.subtle.exportKey("jwk", key)).x;
  } catch (err) {
    throw bad(`not a private key (${(err as Error).message})`);
  }
  if (!x) throw bad("not a private key (no public half)");
  const publicKey = new Uint8Array(Buffer.from(x, "base64url"));
  return { publicKey, sign: async (challenge) => new Uint8Array(await crypto.subtle.sign("Ed25519", key, new Uint8Array(signedMessage(challenge)))) };
}

/**
 * The algorithm OID's contents (hex) of a PKCS#8 PrivateKeyInfo:
 * SEQUENCE { INTEGER version, SEQUENCE { OID, ... }, ... }; undefined if
 * the DER is not shaped so.
 */
function pkcs8Algorithm(der: Uint8Array): string | undefined {
  let at = 0;
  // Returns the content's [start, end) of the TLV at `at` with the tag expected.
  const tlv = (tag: number): [number, number] | undefined => {
    if (der[at] !== tag || at + 2 > der.length) return undefined;
    let len = der[at + 1]!;
    let start = at + 2;
    if (len & 0x80) {
      const n = len & 0x7f;
      if (n === 0 || n > 3 || start + n > der.length) return undefined;
      len = 0;
      for (let i = 0; i < n; i++) len = len * 256 + der[start + i]!;
      start += n;
    }
    return start + len <= der.length ? [start, start + len] : undefined;
  };
  const outer = tlv(0x30);
  if (!outer) return undefined;
  at = outer[0];
  const version = tlv(0x02);
  if (!version) return undefined;
  at = version[1];
  const algId = tlv(0x30);
  if (!algId) return undefined;
  at = algId[0];
  const oid = tlv(0x06);
  return oid ? Buffer.from(der.subarray(oid[0], oid[1])).toString("hex") : undefined;
}

/** OpenSSH's wire encoding of an Ed25519 public key: two length-prefixed strings. */
export function sshBlob(key: Uint8Array): Buffer {
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
