// TPM 2.0 structures both sides read or write (TCG TPM 2.0 Library, Part 2):
// big-endian integers and size-prefixed buffers. The agent marshals the few
// commands it sends (agent/attest/tpm.ts); the host reads what the TPM
// signed (host/attest/verify.ts). The part is small on purpose and tested
// against tpm2-tools and swtpm (test/unit/tpm2.test.ts).
import { createHash, type webcrypto } from "node:crypto";
import { ErrorCode, FractalError } from "./errors.js";

export const TPM_ALG = { RSA: 0x0001, SHA256: 0x000b, AES: 0x0006, NULL: 0x0010, ECDSA: 0x0018, ECC: 0x0023, CFB: 0x0043 } as const;
export const TPM_ST = { NO_SESSIONS: 0x8001, SESSIONS: 0x8002, ATTEST_QUOTE: 0x8018 } as const;
export const TPM_RH = { OWNER: 0x40000001, NULL: 0x40000007, ENDORSEMENT: 0x4000000b, PW: 0x40000009 } as const;
export const TPM_GENERATED = 0xff544347;
export const ECC_NIST_P256 = 0x0003;
/** Where a TPM's manufacturer (or swtpm_setup) keeps the RSA 2048 EK certificate (TCG EK Credential Profile). */
export const EK_CERT_NV_INDEX = 0x01c00002;

// TPMA_OBJECT bits.
const FIXED_TPM = 1 << 1;
const FIXED_PARENT = 1 << 4;
const SENSITIVE_DATA_ORIGIN = 1 << 5;
const USER_WITH_AUTH = 1 << 6;
const ADMIN_WITH_POLICY = 1 << 7;
const RESTRICTED = 1 << 16;
const DECRYPT = 1 << 17;
const SIGN = 1 << 18;

/** An attestation key must be bound to this TPM and sign only what the TPM made. */
export const AK_ATTRIBUTES = FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | USER_WITH_AUTH | RESTRICTED | SIGN;
/** The EK's authPolicy: PolicySecret(TPM_RH_ENDORSEMENT), as the EK Credential Profile gives it. */
export const EK_POLICY = Buffer.from("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa", "hex");

function malformed(what: string): never {
  throw new FractalError(ErrorCode.INVALID_ARGUMENT, `malformed TPM structure: ${what}`);
}

export class TpmWriter {
  private parts: Buffer[] = [];
  u8(v: number): this {
    this.parts.push(Buffer.from([v & 0xff]));
    return this;
  }
  u16(v: number): this {
    const b = Buffer.alloc(2);
    b.writeUInt16BE(v);
    this.parts.push(b);
    return this;
  }
  u32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(v >>> 0);
    this.parts.push(b);
    return this;
  }
  bytes(b: Uint8Array): this {
    this.parts.push(Buffer.from(b));
    return this;
  }
  /** A TPM2B: a 16-bit size, then the bytes. */
  sized(b: Uint8Array): this {
    return this.u16(b.length).bytes(b);
  }
  done(): Buffer {
    return Buffer.concat(this.parts);
  }
}

export class TpmReader {
  private off = 0;
  constructor(
    private readonly b: Buffer,
    private readonly what: string,
  ) {}
  private need(n: number): void {
    if (this.off + n > this.b.length) malformed(`${this.what} is truncated`);
  }
  u8(): number {
    this.need(1);
    return this.b[this.off++]!;
  }
  u16(): number {
    this.need(2);
    const v = this.b.readUInt16BE(this.off);
    this.off += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.b.readUInt32BE(this.off);
    this.off += 4;
    return v;
  }
  u64(): bigint {
    this.need(8);
    const v = this.b.readBigUInt64BE(this.off);
    this.off += 8;
    return v;
  }
  bytes(n: number): Buffer {
    this.need(n);
    const v = this.b.subarray(this.off, this.off + n);
    this.off += n;
    return v;
  }
  sized(): Buffer {
    return this.bytes(this.u16());
  }
  get offset(): number {
    return this.off;
  }
  get rest(): Buffer {
    return this.b.subarray(this.off);
  }
}

/** A PCR selection in one bank, as TPML_PCR_SELECTION with one entry. */
export function pcrSelection(pcrs: number[], hash: number = TPM_ALG.SHA256): Buffer {
  const bitmap = Buffer.alloc(3);
  for (const p of pcrs) {
    if (!Number.isInteger(p) || p < 0 || p > 23) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `PCR ${p} is not 0-23`);
    bitmap[p >> 3]! |= 1 << (p & 7);
  }
  return new TpmWriter().u32(1).u16(hash).u8(3).bytes(bitmap).done();
}

/** Reads a TPML_PCR_SELECTION into bank -> sorted PCR numbers. */
export function readPcrSelection(r: TpmReader): Map<number, number[]> {
  const out = new Map<number, number[]>();
  const count = r.u32();
  if (count > 16) malformed("PCR selection with more than 16 banks");
  for (let i = 0; i < count; i++) {
    const hash = r.u16();
    const map = r.bytes(r.u8());
    const pcrs: number[] = [];
    map.forEach((byte, j) => {
      for (let bit = 0; bit < 8; bit++) if (byte & (1 << bit)) pcrs.push(j * 8 + bit);
    });
    out.set(hash, pcrs);
  }
  return out;
}

/** The EK template of the TCG EK Credential Profile (L-1: RSA 2048, AES-128-CFB). Its key is the one the EK certificate names. */
export function ekTemplate(): Buffer {
  return new TpmWriter()
    .u16(TPM_ALG.RSA)
    .u16(TPM_ALG.SHA256)
    .u32(FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | ADMIN_WITH_POLICY | RESTRICTED | DECRYPT)
    .sized(EK_POLICY)
    .u16(TPM_ALG.AES).u16(128).u16(TPM_ALG.CFB) // symmetric
    .u16(TPM_ALG.NULL) // scheme
    .u16(2048).u32(0) // keyBits, exponent (0: 65537)
    .sized(Buffer.alloc(256))
    .done();
}

/**
 * The attestation key: a primary ECC P-256 key of the endorsement
 * hierarchy, restricted to signing what the TPM itself produced. A primary
 * key is derived from the hierarchy's seed and this template, so the same
 * TPM gives the same AK every time without storing anything.
 */
export function akTemplate(): Buffer {
  return new TpmWriter()
    .u16(TPM_ALG.ECC)
    .u16(TPM_ALG.SHA256)
    .u32(AK_ATTRIBUTES)
    .sized(Buffer.alloc(0))
    .u16(TPM_ALG.NULL) // symmetric
    .u16(TPM_ALG.ECDSA).u16(TPM_ALG.SHA256)
    .u16(ECC_NIST_P256)
    .u16(TPM_ALG.NULL) // kdf
    .sized(Buffer.alloc(0)).sized(Buffer.alloc(0))
    .done();
}

export type PublicKey =
  | { type: "rsa"; modulus: Buffer; exponent: number; symmetric: number }
  | { type: "ecc"; curve: number; x: Buffer; y: Buffer; scheme: number; schemeHash: number };

/** A TPMT_PUBLIC: what a key is, and its name (nameAlg || H(TPMT_PUBLIC)), which credentials and quotes refer to. */
export interface TpmPublic {
  nameAlg: number;
  attributes: number;
  authPolicy: Buffer;
  key: PublicKey;
  name: Buffer;
}

/** Reads a TPM2B_PUBLIC (size-prefixed TPMT_PUBLIC). */
export function parsePublic(tpm2b: Uint8Array): TpmPublic {
  const outer = new TpmReader(Buffer.from(tpm2b), "TPM2B_PUBLIC");
  const area = outer.sized();
  if (outer.rest.length !== 0) malformed("TPM2B_PUBLIC has trailing bytes");
  const r = new TpmReader(area, "TPMT_PUBLIC");
  const type = r.u16();
  const nameAlg = r.u16();
  if (nameAlg !== TPM_ALG.SHA256) malformed(`name algorithm 0x${nameAlg.toString(16)} (only SHA-256 is accepted)`);
  const attributes = r.u32();
  const authPolicy = r.sized();
  let key: PublicKey;
  if (type === TPM_ALG.RSA) {
    const symmetric = r.u16();
    if (symmetric !== TPM_ALG.NULL) r.bytes(4); // keyBits, mode
    const scheme = r.u16();
    if (scheme !== TPM_ALG.NULL) r.u16();
    r.u16(); // keyBits
    const exponent = r.u32() || 65537;
    key = { type: "rsa", modulus: r.sized(), exponent, symmetric };
  } else if (type === TPM_ALG.ECC) {
    const symmetric = r.u16();
    if (symmetric !== TPM_ALG.NULL) r.bytes(4);
    const scheme = r.u16();
    const schemeHash = scheme !== TPM_ALG.NULL ? r.u16() : TPM_ALG.NULL;
    const curve = r.u16();
    const kdf = r.u16();
    if (kdf !== TPM_ALG.NULL) r.u16();
    key = { type: "ecc", curve, x: r.sized(), y: r.sized(), scheme, schemeHash };
  } else {
    malformed(`key type 0x${type.toString(16)}`);
  }
  if (r.rest.length !== 0) malformed("TPMT_PUBLIC has trailing bytes");
  const name = Buffer.concat([new TpmWriter().u16(nameAlg).done(), createHash("sha256").update(area).digest()]);
  return { nameAlg, attributes, authPolicy, key, name };
}

/** The key as a JSON Web Key node's crypto can use. */
export function publicJwk(key: PublicKey): webcrypto.JsonWebKey {
  const b64 = (b: Buffer) => b.toString("base64url");
  if (key.type === "rsa") {
    const e = Buffer.alloc(4);
    e.writeUInt32BE(key.exponent);
    let i = 0;
    while (i < 3 && e[i] === 0) i++;
    return { kty: "RSA", n: b64(key.modulus), e: b64(e.subarray(i)) };
  }
  if (key.curve !== ECC_NIST_P256) malformed(`ECC curve 0x${key.curve.toString(16)} (only NIST P-256 is accepted)`);
  return { kty: "EC", crv: "P-256", x: b64(key.x), y: b64(key.y) };
}

/** A TPMS_ATTEST of a quote: who signed it, over which nonce, which PCRs and their digest. */
export interface QuoteInfo {
  qualifiedSigner: Buffer;
  extraData: Buffer;
  clock: bigint;
  resetCount: number;
  restartCount: number;
  firmwareVersion: bigint;
  pcrs: Map<number, number[]>;
  pcrDigest: Buffer;
}

export function parseQuote(attest: Uint8Array): QuoteInfo {
  const r = new TpmReader(Buffer.from(attest), "TPMS_ATTEST");
  if (r.u32() !== TPM_GENERATED) malformed("TPMS_ATTEST was not made by a TPM (magic)");
  if (r.u16() !== TPM_ST.ATTEST_QUOTE) malformed("TPMS_ATTEST is not a quote");
  const qualifiedSigner = r.sized();
  const extraData = r.sized();
  const clock = r.u64();
  const resetCount = r.u32();
  const restartCount = r.u32();
  r.u8(); // safe
  const firmwareVersion = r.u64();
  const pcrs = readPcrSelection(r);
  const pcrDigest = r.sized();
  if (r.rest.length !== 0) malformed("TPMS_ATTEST has trailing bytes");
  return { qualifiedSigner, extraData, clock, resetCount, restartCount, firmwareVersion, pcrs, pcrDigest };
}

/** A TPMT_SIGNATURE made with ECDSA, as r || s (IEEE P1363, each 32 bytes for P-256). */
export function parseEcdsaSignature(sig: Uint8Array): { hash: number; p1363: Buffer } {
  const r = new TpmReader(Buffer.from(sig), "TPMT_SIGNATURE");
  const alg = r.u16();
  if (alg !== TPM_ALG.ECDSA) malformed(`signature algorithm 0x${alg.toString(16)} (ECDSA expected)`);
  const hash = r.u16();
  const pad = (b: Buffer) => {
    if (b.length > 32) malformed("ECDSA signature component longer than 32 bytes");
    return Buffer.concat([Buffer.alloc(32 - b.length), b]);
  };
  const sr = pad(r.sized());
  const ss = pad(r.sized());
  if (r.rest.length !== 0) malformed("TPMT_SIGNATURE has trailing bytes");
  return { hash, p1363: Buffer.concat([sr, ss]) };
}
