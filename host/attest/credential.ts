// TPM2_MakeCredential done by the verifier (TPM 2.0 Part 1, 24): a secret
// only the TPM holding the EK can decrypt, and only for a key loaded beside
// it whose name is the AK's. Seed encrypted to the RSA EK with OAEP (label
// "IDENTITY"); the secret encrypted with AES-128-CFB under KDFa(seed,
// "STORAGE", name) and sealed with an HMAC under KDFa(seed, "INTEGRITY").
import { constants, createCipheriv, createHmac, createPublicKey, publicEncrypt, randomBytes } from "node:crypto";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import { TPM_ALG, TpmWriter, publicJwk, type TpmPublic } from "../../proto/tpm2.js";

/** KDFa with HMAC-SHA-256 (TPM 2.0 Part 1, 11.4.10.2). */
export function kdfa(key: Buffer, label: string, contextU: Buffer, contextV: Buffer, bits: number): Buffer {
  const out: Buffer[] = [];
  const labelZ = Buffer.from(`${label}\0`, "latin1");
  const bitsBE = new TpmWriter().u32(bits).done();
  for (let i = 1, have = 0; have * 8 < bits; i++) {
    const block = createHmac("sha256", key).update(new TpmWriter().u32(i).done()).update(labelZ).update(contextU).update(contextV).update(bitsBE).digest();
    out.push(block);
    have += block.length;
  }
  return Buffer.concat(out).subarray(0, bits / 8);
}

export interface Credential {
  /** TPM2B_ID_OBJECT's contents. */
  blob: Buffer;
  /** TPM2B_ENCRYPTED_SECRET's contents. */
  encryptedSecret: Buffer;
}

export function makeCredential(ek: TpmPublic, akName: Buffer, secret: Buffer): Credential {
  if (ek.key.type !== "rsa" || ek.key.symmetric !== TPM_ALG.AES) {
    throw new FractalError(ErrorCode.INVALID_ARGUMENT, "attest: the EK is not an RSA key with AES (the EK Credential Profile's template L-1)");
  }
  const seed = randomBytes(32);
  const encryptedSecret = publicEncrypt(
    { key: createPublicKey({ key: publicJwk(ek.key), format: "jwk" }), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256", oaepLabel: Buffer.from("IDENTITY\0", "latin1") },
    seed,
  );
  const symKey = kdfa(seed, "STORAGE", akName, Buffer.alloc(0), 128);
  const cipher = createCipheriv("aes-128-cfb", symKey, Buffer.alloc(16));
  const encIdentity = Buffer.concat([cipher.update(new TpmWriter().sized(secret).done()), cipher.final()]);
  const hmacKey = kdfa(seed, "INTEGRITY", Buffer.alloc(0), Buffer.alloc(0), 256);
  const integrity = createHmac("sha256", hmacKey).update(encIdentity).update(akName).digest();
  return { blob: new TpmWriter().sized(integrity).bytes(encIdentity).done(), encryptedSecret };
}
