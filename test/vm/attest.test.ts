// Attestation end to end under TCG with Debian's OVMF and swtpm: a normal
// boot attests; an initramfs with one byte of the agent changed boots but
// fails, naming the initramfs, and run --attested refuses it; a machine that
// booted another kernel command line than the host asked for fails naming
// it; a replayed quote and another VM's TPM are refused.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentClient, type AttestEvidence } from "../../host/client.js";
import { attest, type Attester } from "../../host/attest/attest.js";
import { attestVm, vmCriteria } from "../../host/attest/vm.js";
import { AttestationError } from "../../host/attest/verify.js";
import { vmEndpoint } from "../../host/vm/manager.js";
import { readRecord } from "../../host/vm/state.js";
import { ROOT, runCli } from "../helpers/agent.js";

const state = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-attest-test-"));
const work = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-attest-work-"));
const env = { FRACTAL_STATE: state };
const cli = (args: string[]) => runCli(args, { env });
const EXPECT = path.join(ROOT, "build/expected-measurements.json");
const tampered = path.join(work, "tampered.cpio");
const qemuWrapper = path.join(work, "qemu-other-cmdline");
const IMAGES = ["--images", path.join(ROOT, "build/images")];

async function failedOf(p: Promise<unknown>): Promise<string[]> {
  try {
    await p;
  } catch (err) {
    if (err instanceof AttestationError) return err.failed;
    throw err;
  }
  return [];
}

const connect = (vm: string) => AgentClient.connect(vmEndpoint(readRecord(vm)!), { keyFile: process.env.FRACTAL_KEY });

beforeAll(async () => {
  // One byte of the agent, in the compiled (bytecode) form of a log message
  // it prints at start: the guest still boots, and says so.
  const cpio = fs.readFileSync(path.join(ROOT, "build/initramfs.cpio"));
  const message = Buffer.from("boot: agent started at uptime ");
  let at = -1;
  for (let i = cpio.indexOf(message); i >= 0; i = cpio.indexOf(message, i + 1)) if (cpio[i + message.length] !== "$".charCodeAt(0)) at = i;
  if (at < 0) throw new Error("the agent's start message is not in the initramfs");
  cpio[at + 6] = "A".charCodeAt(0);
  fs.writeFileSync(tampered, cpio);
  // A launcher that boots another kernel command line than the one it was given.
  fs.writeFileSync(qemuWrapper, `#!/bin/bash\nargs=(); prev=; for a in "$@"; do [ "$prev" = -append ] && a="$a init_on_alloc=1"; args+=("$a"); prev=$a; done\nexec qemu-system-x86_64 "\${args[@]}"\n`, { mode: 0o755 });
  process.env.FRACTAL_STATE = state;
  const boots = await Promise.all([
    cli(["boot", "--name", "good", "--attest", "--mem", "1G", ...IMAGES, "--detach"]),
    cli(["boot", "--name", "bad", "--tpm", "--initrd", tampered, "--mem", "1G", ...IMAGES, "--detach"]),
  ]);
  for (const b of boots) if (b.code !== 0) throw new Error(`boot failed (${b.code}):\n${b.stderr}`);
  if (!boots[0]!.stdout.toString().includes("good: attestation passed")) throw new Error(`boot --attest did not say it passed:\n${boots[0]!.stdout}`);
}, 600_000);

afterAll(async () => {
  await Promise.all(["good", "bad", "other"].map((n) => cli(["vm", "stop", n])));
  for (const d of [state, work]) fs.rmSync(d, { recursive: true, force: true });
}, 120_000);

describe("attestation", () => {
  it("attests a normal boot (boot --attest, attest --json), and run --attested runs on it", async () => {
    const r = await cli(["attest", "--vm", "good", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout.toString());
    expect(report.passed).toBe(true);
    const expected = JSON.parse(fs.readFileSync(EXPECT, "utf8"));
    expect(report.checks.map((c: { name: string; ok: boolean }) => `${c.name}:${c.ok}`)).toEqual(["kernel:true", "initramfs:true", "kernel command line:true"]);
    // The initramfs digest the guest's firmware log shows is the file make build measured.
    expect(report.checks[1].measured).toBe(expected.initramfs.sha256);
    const ls = JSON.parse((await cli(["ls", "--json"])).stdout.toString()).vms.find((v: { name: string }) => v.name === "good");
    expect(ls.tpm).toBe(true);
    expect(ls.attestation.passed).toBe(true);
    const run = await cli(["run", "--vm", "good", "--attested", "--rm", "busybox", "echo", "trusted"]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout.toString()).toBe("trusted\n");
  });

  it("boots a tampered initramfs but fails it, naming the initramfs; run --attested refuses the VM", async () => {
    // The tampered agent is what runs.
    expect(fs.readFileSync(path.join(state, "bad", "console.log"), "utf8")).toContain("boot: Agent started at uptime");
    const before = await cli(["run", "--vm", "bad", "--attested", "--rm", "busybox", "true"]);
    expect(before.code).toBe(125);
    expect(before.stderr.toString()).toContain("has not been attested since it booted");
    const r = await cli(["attest", "--vm", "bad"]);
    expect(r.code).toBe(125);
    const err = r.stderr.toString();
    expect(err).toContain("initramfs differs");
    expect(err).not.toContain("kernel differs");
    expect(err).not.toContain("kernel command line differs");
    const run = await cli(["run", "--vm", "bad", "--attested", "--rm", "busybox", "true"]);
    expect(run.code).toBe(125);
    expect(run.stderr.toString()).toMatch(/VM bad failed attestation at .*initramfs differs/);
    // Without --attested the VM still runs containers: attestation is a policy, not a lock.
    expect((await cli(["run", "--vm", "bad", "--rm", "busybox", "true"])).code).toBe(0);
  });

  it("fails a machine that booted another kernel command line than the host gave it, naming it", async () => {
    const b = await runCli(["boot", "--name", "other", "--attest", "--mem", "1G", ...IMAGES, "--detach"], { env: { ...env, FRACTAL_QEMU: qemuWrapper } });
    expect(b.code).toBe(125);
    const err = b.stderr.toString();
    expect(err).toContain("attestation failed");
    expect(err).toContain("kernel command line differs");
    expect(err).not.toContain("initramfs differs");
    // Left running, marked failed.
    expect(readRecord("other")?.attestation?.failed).toEqual(["kernel command line"]);
    expect((await cli(["run", "--vm", "other", "--attested", "--rm", "busybox", "true"])).code).toBe(125);
  });

  it("refuses a quote replayed with an old nonce", async () => {
    const c = await connect("good");
    try {
      let recorded: AttestEvidence | undefined;
      const recorder: Attester = {
        attestKeys: () => c.attestKeys(),
        attestQuote: async (q) => (recorded = await c.attestQuote(q)),
      };
      await attestVm("good", EXPECT, undefined, recorder);
      // A machine that activates the new credential (it has the TPM) but answers with the old quote.
      const replayer: Attester = {
        attestKeys: () => c.attestKeys(),
        attestQuote: async (q) => ({ ...(await c.attestQuote(q)), attest: recorded!.attest, signature: recorded!.signature }),
      };
      expect(await failedOf(attestVm("good", EXPECT, undefined, replayer))).toEqual(["nonce"]);
      expect(readRecord("good")?.attestation?.passed).toBe(false);
      // A fresh attestation passes again.
      await attestVm("good", EXPECT);
      expect(readRecord("good")?.attestation?.passed).toBe(true);
    } finally {
      c.close();
    }
  });

  it("refuses a quote from another VM's TPM", async () => {
    const good = await connect("good");
    const bad = await connect("bad");
    try {
      const { trust, expect: want } = vmCriteria(readRecord("good")!, EXPECT);
      // Everything from the other VM's TPM: its EK is not the one pinned for this VM.
      expect(await failedOf(attest(bad, trust, want))).toEqual(["ek"]);
      // This VM's keys, the other's quote: the other TPM cannot activate a credential made for this EK.
      const mixed: Attester = { attestKeys: () => good.attestKeys(), attestQuote: (q) => bad.attestQuote(q) };
      expect(await failedOf(attest(mixed, trust, want))).toEqual(["credential"]);
    } finally {
      good.close();
      bad.close();
    }
  });
});
