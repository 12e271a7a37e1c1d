// Checks a machine's evidence, as keylime's verifier does: the EK is the
// machine's (pinned, or certified by a trusted CA), the AK is bound to it
// (the credential came back decrypted), the quote is signed by the AK over
// our nonce, the event log replays to the quoted PCRs, and the log's kernel,
// initramfs and command-line digests are the expected ones.
import { createHash, createPublicKey, verify as verifySignature, X509Certificate, type webcrypto } from "node:crypto";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import { AK_ATTRIBUTES, EK_POLICY, TPM_ALG, parseEcdsaSignature, parsePublic, parseQuote, publicJwk, type TpmPublic } from "../../proto/tpm2.js";
import { EV, LINUX_TAG, linuxTag, parseEventLog, pcrValue, replay } from "./eventlog.js";
import type { AttestEvidence as Evidence, AttestKeys as Keys } from "../client.js";
import type { BootExpectation } from "./expected.js";

/** The PCRs a quote covers: firmware (0-7) and the kernel's EFI stub (9: initrd and command line). */
export const QUOTED_PCRS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];

/** Which check failed, for the CLI's message and --json. */
export type Failed = "ek" | "ak" | "credential" | "signature" | "nonce" | "event log" | "kernel" | "initramfs" | "kernel command line";

export class AttestationError extends FractalError {
  constructor(
    readonly failed: Failed[],
    message: string,
  ) {
    super(ErrorCode.ATTESTATION_FAILED, message);
  }
}

export type { AttestKeys as Keys, AttestEvidence as Evidence } from "../client.js";

/** How the EK is trusted: the certificate made for this VM's TPM, or CAs (a real TPM's manufacturer). */
export type EkTrust = { pinned: X509Certificate } | { cas: X509Certificate[] };

export interface Check {
  name: "kernel" | "initramfs" | "kernel command line";
  expected: string;
  measured: string | undefined;
  ok: boolean;
}

export interface Report {
  ek: string;
  ak: string;
  pcrs: Record<string, string>;
  checks: Check[];
}

function fail(failed: Failed, message: string): never {
  throw new AttestationError([failed], message);
}

function sameRsaKey(cert: X509Certificate, ek: TpmPublic): boolean {
  const jwk = cert.publicKey.export({ format: "jwk" }) as webcrypto.JsonWebKey;
  return ek.key.type === "rsa" && jwk.n === ek.key.modulus.toString("base64url");
}

/** Checks the keys before a credential is made for them: returns the parsed EK and AK. */
export function checkKeys(keys: Keys, trust: EkTrust): { ek: TpmPublic; ak: TpmPublic } {
  const ek = parsePublic(keys.ekPublic);
  if (!ek.authPolicy.equals(EK_POLICY) || ek.key.type !== "rsa") fail("ek", "the TPM's endorsement key is not one of the EK Credential Profile's template (RSA 2048)");
  if ("pinned" in trust) {
    if (!sameRsaKey(trust.pinned, ek)) fail("ek", "the quote comes from another TPM: its endorsement key is not the one made for this machine at its first boot");
  } else {
    if (keys.ekCertificate.length === 0) fail("ek", "the TPM has no EK certificate (NV index 0x01c00002) to check against the CAs given");
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(keys.ekCertificate);
    } catch (err) {
      fail("ek", `the TPM's EK certificate does not parse: ${(err as Error).message}`);
    }
    if (!sameRsaKey(cert, ek)) fail("ek", "the TPM's EK certificate is for another key than its endorsement key");
    if (!chainsTo(cert, trust.cas)) fail("ek", `the TPM's EK certificate (issuer ${cert.issuer}) is not signed by a trusted CA`);
  }
  const ak = parsePublic(keys.akPublic);
  if ((ak.attributes & AK_ATTRIBUTES) !== AK_ATTRIBUTES || ak.key.type !== "ecc") {
    fail("ak", "the attestation key is not a restricted signing key fixed to its TPM");
  }
  return { ek, ak };
}

function chainsTo(cert: X509Certificate, cas: X509Certificate[]): boolean {
  let cur = cert;
  for (let depth = 0; depth < 8; depth++) {
    const issuer = cas.find((ca) => cur.checkIssued(ca) && cur.verify(ca.publicKey));
    if (!issuer) return false;
    if (issuer.checkIssued(issuer) || cas.includes(issuer)) return true;
    cur = issuer;
  }
  return false;
}

const hex = (b: Buffer | undefined) => b?.toString("hex");

/**
 * Checks the evidence against the nonce and secret this attestation sent and
 * the boot's expected measurements. Throws AttestationError naming every
 * measurement that differs; returns the report when all hold.
 */
export function verifyEvidence({ ek, ak }: { ek: TpmPublic; ak: TpmPublic }, ev: Evidence, sent: { nonce: Buffer; secret: Buffer; pcrs: number[] }, expect: BootExpectation): Report {
  if (!ev.secret.equals(sent.secret)) fail("credential", "the attestation key is not bound to the TPM's endorsement key (credential activation returned another secret)");
  const key = createPublicKey({ key: publicJwk(ak.key), format: "jwk" });
  let sig: { hash: number; p1363: Buffer };
  try {
    sig = parseEcdsaSignature(ev.signature);
  } catch (err) {
    fail("signature", `the quote's signature: ${(err as Error).message}`);
  }
  if (sig.hash !== TPM_ALG.SHA256 || !verifySignature("sha256", ev.attest, { key, dsaEncoding: "ieee-p1363" }, sig.p1363)) {
    fail("signature", "the quote's signature does not verify with the attestation key");
  }
  const q = parseQuote(ev.attest);
  if (!q.extraData.equals(sent.nonce)) fail("nonce", "the quote is not over this attestation's nonce: a replayed quote");
  const selected = q.pcrs.get(TPM_ALG.SHA256) ?? [];
  if (selected.join(",") !== sent.pcrs.join(",")) fail("signature", `the quote covers PCRs ${selected.join(",")} instead of ${sent.pcrs.join(",")}`);

  const events = parseEventLog(ev.eventLog);
  const replayed = replay(events);
  const digest = createHash("sha256");
  for (const p of selected) digest.update(pcrValue(replayed, p));
  if (!digest.digest().equals(q.pcrDigest)) fail("event log", "the firmware event log does not replay to the quoted PCR values");

  const kernels = events.filter((e) => e.pcr === 4 && e.type === EV.EFI_BOOT_SERVICES_APPLICATION);
  const tagged = (tag: number) => events.find((e) => e.pcr === 9 && linuxTag(e) === tag);
  const checks: Check[] = [
    { name: "kernel", expected: expect.kernel, measured: hex(kernels.at(-1)?.sha256), ok: false },
    { name: "initramfs", expected: expect.initramfs, measured: hex(tagged(LINUX_TAG.INITRD)?.sha256), ok: false },
    { name: "kernel command line", expected: expect.cmdline, measured: hex(tagged(LINUX_TAG.LOAD_OPTIONS)?.sha256), ok: false },
  ];
  for (const c of checks) c.ok = c.measured === c.expected;
  const pcrs = Object.fromEntries(selected.map((p) => [String(p), pcrValue(replayed, p).toString("hex")]));
  const bad = checks.filter((c) => !c.ok);
  if (bad.length > 0) {
    const what = bad.map((c) => `${c.name} differs (measured ${c.measured ? `sha256:${c.measured}` : "nothing"}, expected sha256:${c.expected}${c.name === "kernel command line" ? `, i.e. "${expect.cmdlineText}"` : ""})`);
    throw new AttestationError(bad.map((c) => c.name), what.join("; "));
  }
  return { ek: ek.name.toString("hex"), ak: ak.name.toString("hex"), pcrs, checks };
}
