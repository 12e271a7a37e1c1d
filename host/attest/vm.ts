// Attestation of a fractal VM: its pinned TPM, the measurements its boot
// must show (from the expected-measurements file and what the host gave
// QEMU), and the result kept in the VM's record until its next boot.
import { ErrorCode, FractalError } from "../../proto/errors.js";
import { AgentClient } from "../client.js";
import { requireVm, vmEndpoint } from "../vm/manager.js";
import { readRecord, tpmDir, writeRecord, type AttestationRecord, type VmRecord } from "../vm/state.js";
import { pinnedEk } from "../vm/tpm.js";
import { attest, type Attester } from "./attest.js";
import { qemuBootExpectation, readExpected, type BootExpectation } from "./expected.js";
import { AttestationError, type EkTrust, type Report } from "./verify.js";

/** What a VM's attestation is checked against. */
export function vmCriteria(rec: VmRecord, expectFile: string): { trust: EkTrust; expect: BootExpectation } {
  if (!rec.boot?.tpm) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `VM ${rec.name} was booted without --tpm: it has no TPM to attest`);
  const pinned = pinnedEk(tpmDir(rec.name));
  if (!pinned) throw new FractalError(ErrorCode.NOT_FOUND, `VM ${rec.name}: its TPM's EK certificate is missing from ${tpmDir(rec.name)}`);
  return { trust: { pinned }, expect: qemuBootExpectation(readExpected(expectFile), rec.boot.kernel, rec.memMiB, rec.boot.cmdline) };
}

/**
 * Attests VM `name` and records the outcome (passed or the failure's
 * message) in its record, which `run --attested` reads. `machine` replaces
 * the VM's agent (tests stand in a replaying one).
 */
export async function attestVm(name: string, expectFile: string, keyFile?: string, machine?: Attester): Promise<Report> {
  const rec = requireVm(name);
  const record = (a: AttestationRecord) => {
    const now = readRecord(name);
    if (now && now.pid === rec.pid) writeRecord({ ...now, attestation: a });
  };
  const at = new Date().toISOString();
  let client: AgentClient | undefined;
  try {
    const { trust, expect } = vmCriteria(rec, expectFile);
    client = machine ? undefined : await AgentClient.connect(vmEndpoint(rec), { keyFile });
    const report = await attest(machine ?? client!, trust, expect);
    record({ at, passed: true, failed: [], message: "" });
    return report;
  } catch (err) {
    if (err instanceof AttestationError) record({ at, passed: false, failed: err.failed, message: err.message });
    throw err;
  } finally {
    client?.close();
  }
}

/** run --attested: the VM must have passed attestation since its boot. */
export function requireAttested(name: string): void {
  const rec = requireVm(name);
  const a = rec.attestation;
  if (!a) throw new FractalError(ErrorCode.ATTESTATION_FAILED, `VM ${name} has not been attested since it booted: run fractal-host attest --vm ${name} (or boot it with --attest)`);
  if (!a.passed) throw new FractalError(ErrorCode.ATTESTATION_FAILED, `VM ${name} failed attestation at ${a.at}: ${a.message}`);
}
