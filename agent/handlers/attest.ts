// Attestation handlers: the TPM's keys, then evidence for a verifier's
// credential and nonce (agent/attest/evidence.ts).
import type { ResponseBody } from "../../proto/session.js";
import { keys, quote } from "../attest/evidence.js";
import type { AttestQuoteCommand } from "../commands.js";

export async function attestKeys(): Promise<ResponseBody> {
  return { attestKeys: await keys() };
}

export async function attestQuote(q: AttestQuoteCommand): Promise<ResponseBody> {
  return { attestEvidence: await quote(q) };
}
