// One attestation: the machine's keys, a credential for its AK made with its
// EK and a fresh nonce, its evidence, checked (./verify.ts). The machine is
// anything that answers like an agent, so tests can stand a replaying or
// forwarding one in its place.
import { randomBytes } from "node:crypto";
import type { AgentClient, AttestEvidence, AttestKeys } from "../client.js";
import { makeCredential } from "./credential.js";
import type { BootExpectation } from "./expected.js";
import { AttestationError, QUOTED_PCRS, checkKeys, verifyEvidence, type EkTrust, type Report } from "./verify.js";
import { ErrorCode, FractalError } from "../../proto/errors.js";

export interface Attester {
  attestKeys(): Promise<AttestKeys>;
  attestQuote(q: { credentialBlob: Buffer; encryptedSecret: Buffer; nonce: Buffer; pcrs: number[] }): Promise<AttestEvidence>;
}

export async function attest(machine: Attester | AgentClient, trust: EkTrust, expect: BootExpectation): Promise<Report> {
  const keys = await machine.attestKeys();
  const parsed = checkKeys(keys, trust);
  const secret = randomBytes(32);
  const nonce = randomBytes(32);
  const cred = makeCredential(parsed.ek, parsed.ak.name, secret);
  let ev: AttestEvidence;
  try {
    ev = await machine.attestQuote({ credentialBlob: cred.blob, encryptedSecret: cred.encryptedSecret, nonce, pcrs: QUOTED_PCRS });
  } catch (err) {
    if (err instanceof FractalError && err.code === ErrorCode.ATTESTATION_FAILED) throw new AttestationError(["credential"], `the attestation key is not bound to the TPM's endorsement key: ${err.message}`);
    throw err;
  }
  return verifyEvidence(parsed, ev, { nonce, secret, pcrs: QUOTED_PCRS }, expect);
}
