// `fractal-host attest`: check what a machine booted, with its TPM.
import { X509Certificate } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import type { AgentClient } from "../client.js";
import { attest } from "../attest/attest.js";
import { plainBootExpectation, readExpected } from "../attest/expected.js";
import { attestVm } from "../attest/vm.js";
import { AttestationError, type Report } from "../attest/verify.js";
import { flag, parseFlags, usageError, value, values } from "./args.js";
import { defaultArtifact } from "./vm.js";

export const attestHelp = `usage: fractal-host attest [--vm NAME] [--expect FILE] [--json]
       fractal-host --connect URL attest --ek-ca FILE... --cmdline TEXT [--expect FILE] [--json]

Proves what a machine booted (docs/attestation.md). The agent answers a fresh
nonce with a TPM quote of PCRs 0-9, signed by an attestation key whose
binding to the TPM's endorsement key is checked by credential activation,
and the firmware's event log. The log must replay to the quoted PCRs, and its
kernel, initramfs and kernel command-line digests must be the expected ones.
A VM (booted with --tpm) must answer with the TPM made for it at its first
boot; the result is kept until its next boot, for run --attested.

      --vm NAME       the VM (default: the global --vm)
      --expect FILE   expected measurements (default:
                      build/expected-measurements.json, which make build writes)
      --json          print the report (or the failure) as JSON
      --ek-ca FILE    with --connect (hardware): a CA certificate (PEM or DER)
                      the TPM's EK certificate must chain to; repeatable
      --cmdline TEXT  with --connect: the kernel command line as the boot
                      loader passed it
  -h, --help          this text

Exit status 0 when attestation passed; 125 with the failed checks named.
`;

export interface AttestCommand {
  vm?: string;
  expect: string;
  json: boolean;
  ekCas: string[];
  cmdline?: string;
}

export function parseAttest(args: string[]): AttestCommand | "help" {
  const p = parseFlags(args, [{ long: "vm", value: true }, { long: "expect", value: true }, { long: "json" }, { long: "ek-ca", value: true, repeat: true }, { long: "cmdline", value: true }, { long: "help", short: "h" }], "attest");
  if (flag(p, "help")) return "help";
  if (p.rest.length > 0) throw usageError("attest", `unexpected argument "${p.rest[0]}"`);
  return { vm: value(p, "vm"), expect: path.resolve(value(p, "expect") ?? defaultArtifact("expected-measurements.json", "FRACTAL_EXPECT")), json: flag(p, "json"), ekCas: values(p, "ek-ca"), cmdline: value(p, "cmdline") };
}

function readCa(file: string): X509Certificate {
  try {
    return new X509Certificate(fs.readFileSync(file));
  } catch (err) {
    throw new FractalError(ErrorCode.INVALID_ARGUMENT, `--ek-ca ${file}: ${(err as Error).message}`);
  }
}

export function reportText(who: string, r: Report): string {
  const lines = [`${who}: attestation passed`];
  for (const c of r.checks) lines.push(`  ${c.name.padEnd(20)} sha256:${c.measured}`);
  lines.push(`  quote over PCRs ${Object.keys(r.pcrs).join(",")} (SHA-256), AK ${r.ak.slice(0, 20)}…`);
  return `${lines.join("\n")}\n`;
}

/** Runs attest; `connect` is used only without a VM (--connect URL). */
export async function runAttest(cmd: AttestCommand, vm: string | undefined, connect: () => Promise<AgentClient>, keyFile?: string): Promise<number> {
  const name = cmd.vm ?? vm;
  let who = name ? `VM ${name}` : "machine";
  try {
    let report: Report;
    if (name) {
      report = await attestVm(name, cmd.expect, keyFile);
    } else {
      if (cmd.ekCas.length === 0) throw usageError("attest", "without --vm, give --ek-ca: the CA the TPM's EK certificate must chain to");
      if (cmd.cmdline === undefined) throw usageError("attest", "without --vm, give --cmdline: the kernel command line the machine was booted with");
      const client = await connect();
      who = "machine";
      try {
        report = await attest(client, { cas: cmd.ekCas.map(readCa) }, plainBootExpectation(readExpected(cmd.expect), cmd.cmdline));
      } finally {
        client.close();
      }
    }
    process.stdout.write(cmd.json ? `${JSON.stringify({ passed: true, ...report }, null, 2)}\n` : reportText(who, report));
    return 0;
  } catch (err) {
    if (cmd.json && err instanceof AttestationError) {
      process.stdout.write(`${JSON.stringify({ passed: false, failed: err.failed, message: err.message }, null, 2)}\n`);
    }
    if (err instanceof AttestationError) throw new FractalError(err.code, `${who} failed attestation: ${err.message}`);
    throw err;
  }
}
