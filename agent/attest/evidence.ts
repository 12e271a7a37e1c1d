// What the agent gives a verifier: its TPM's endorsement key (and the
// certificate stored with it) and attestation key, then — for a credential
// the verifier made and a fresh nonce — the credential's secret, a quote of
// the boot PCRs and the firmware's event log. The keys are primary keys,
// derived again for each request, so nothing is stored between the two.
import fs from "node:fs/promises";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import { akTemplate, ekTemplate } from "../../proto/tpm2.js";
import { Tpm, TpmError, openDevice, type TpmTransport } from "./tpm.js";

export const EVENT_LOG = "/sys/kernel/security/tpm0/binary_bios_measurements";

export interface Keys {
  ekPublic: Buffer;
  ekCertificate: Buffer;
  akPublic: Buffer;
}

export interface QuoteRequest {
  credentialBlob: Buffer;
  encryptedSecret: Buffer;
  nonce: Buffer;
  pcrs: number[];
}

export interface Evidence {
  secret: Buffer;
  attest: Buffer;
  signature: Buffer;
  pcrValues: Buffer[];
  eventLog: Buffer;
}

export type Opener = () => Promise<TpmTransport>;

async function withKeys<T>(open: Opener, body: (tpm: Tpm, ek: { handle: number; public: Buffer }, ak: { handle: number; public: Buffer }) => Promise<T>): Promise<T> {
  const tpm = new Tpm(await open());
  const handles: number[] = [];
  try {
    const ek = await tpm.createPrimary(ekTemplate());
    handles.push(ek.handle);
    const ak = await tpm.createPrimary(akTemplate());
    handles.push(ak.handle);
    return await body(tpm, ek, ak);
  } finally {
    for (const h of handles) await tpm.flush(h).catch(() => {});
    await tpm.close();
  }
}

export function keys(open: Opener = openDevice): Promise<Keys> {
  return withKeys(open, async (tpm, ek, ak) => ({
    ekPublic: ek.public,
    ekCertificate: (await tpm.ekCertificate()) ?? Buffer.alloc(0),
    akPublic: ak.public,
  }));
}

export async function quote(q: QuoteRequest, open: Opener = openDevice, eventLog = EVENT_LOG): Promise<Evidence> {
  if (q.nonce.length < 16 || q.nonce.length > 64) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `attest: the nonce must be 16 to 64 bytes, not ${q.nonce.length}`);
  if (q.pcrs.length === 0) throw new FractalError(ErrorCode.INVALID_ARGUMENT, "attest: no PCRs to quote");
  let log: Buffer;
  try {
    log = await fs.readFile(eventLog);
  } catch (err) {
    throw new FractalError(ErrorCode.NOT_FOUND, `attest: no firmware event log at ${eventLog} (${(err as NodeJS.ErrnoException).code}): was the machine booted through UEFI with a TPM?`);
  }
  return withKeys(open, async (tpm, ek, ak) => {
    let secret: Buffer;
    try {
      secret = await tpm.activateCredential(ak.handle, ek.handle, q.credentialBlob, q.encryptedSecret);
    } catch (err) {
      if (!(err instanceof TpmError)) throw err;
      throw new FractalError(ErrorCode.ATTESTATION_FAILED, `this TPM cannot activate the credential (TPM response 0x${err.rc.toString(16)}): it was made for another TPM's endorsement key or another attestation key`);
    }
    const { attest, signature } = await tpm.quote(ak.handle, q.nonce, q.pcrs);
    const values = await tpm.pcrRead(q.pcrs);
    return { secret, attest, signature, pcrValues: q.pcrs.map((p) => values.get(p)!), eventLog: log };
  });
}
