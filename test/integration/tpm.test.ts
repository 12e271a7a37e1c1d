// The hand-written TPM part, against real parts: the agent's commands run
// against swtpm and their results are checked by tpm2-tools (tpm2_createek,
// tpm2_checkquote, tpm2_makecredential, tpm2_eventlog) and pesign; the
// verifier refuses each kind of bad evidence, naming it.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { keys, quote } from "../../agent/attest/evidence.js";
import { Tpm, openSocket } from "../../agent/attest/tpm.js";
import { akTemplate, ekTemplate } from "../../proto/tpm2.js";
import { authenticodeDigest } from "../../host/attest/authenticode.js";
import { makeCredential } from "../../host/attest/credential.js";
import { parseEventLog, replay } from "../../host/attest/eventlog.js";
import { loadOptionsDigest } from "../../host/attest/expected.js";
import { AttestationError, QUOTED_PCRS, checkKeys, verifyEvidence, type Evidence } from "../../host/attest/verify.js";
import { ensureTpmState, localCa, pinnedEk } from "../../host/vm/tpm.js";

const fixture = path.join(import.meta.dirname, "../fixtures/attest/ovmf-eventlog.bin");
const root = path.resolve(import.meta.dirname, "../..");

function freePorts(): Promise<number> {
  // swtpm's TCTI wants the control port right after the data port.
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p < 65000 ? p : 40000));
    });
  });
}

interface Swtpm {
  port: number;
  state: string;
  proc: ChildProcess;
}

async function startSwtpm(dir: string, ca: string): Promise<Swtpm> {
  ensureTpmState(dir, ca);
  const port = await freePorts();
  const proc = spawn("swtpm", ["socket", "--tpm2", "--tpmstate", `dir=${dir}`, "--server", `type=tcp,port=${port},bindaddr=127.0.0.1`, "--ctrl", `type=tcp,port=${port + 1},bindaddr=127.0.0.1`, "--flags", "not-need-init,startup-clear"], { stdio: "ignore" });
  for (let i = 0; i < 50; i++) {
    const ok = await new Promise<boolean>((r) => net.connect(port, "127.0.0.1").once("connect", function (this: net.Socket) { this.destroy(); r(true); }).once("error", () => r(false)));
    if (ok) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return { port, state: dir, proc };
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-tpm-"));
const ca = path.join(tmp, "ca");
let a: Swtpm;
let b: Swtpm;
// A log with only its header replays to a fresh TPM's PCRs (all zero).
const headerOnly = path.join(tmp, "header-only.log");

beforeAll(async () => {
  a = await startSwtpm(path.join(tmp, "a"), ca);
  b = await startSwtpm(path.join(tmp, "b"), ca);
  const log = fs.readFileSync(fixture);
  fs.writeFileSync(headerOnly, log.subarray(0, 32 + log.readUInt32LE(28)));
});

afterAll(() => {
  a?.proc.kill();
  b?.proc.kill();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const tcti = (s: Swtpm) => `swtpm:host=127.0.0.1,port=${s.port}`;

async function attestOnce(s: Swtpm, nonce = randomBytes(32)) {
  const k = await keys(() => openSocket(s.port));
  const parsed = checkKeys(k, { pinned: pinnedEk(s.state)! });
  const secret = randomBytes(32);
  const cred = makeCredential(parsed.ek, parsed.ak.name, secret);
  const ev = await quote({ credentialBlob: cred.blob, encryptedSecret: cred.encryptedSecret, nonce, pcrs: QUOTED_PCRS }, () => openSocket(s.port), headerOnly);
  return { k, parsed, secret, nonce, ev };
}

const expectNothing = { kernel: "00".repeat(32), initramfs: "00".repeat(32), cmdline: "00".repeat(32), cmdlineText: "" };

function failedOf(f: () => unknown): string[] {
  try {
    f();
  } catch (err) {
    if (err instanceof AttestationError) return err.failed;
    throw err;
  }
  return [];
}

describe("TPM commands against swtpm, checked with tpm2-tools", () => {
  it("derives the EK tpm2_createek derives, and reads the certificate swtpm_setup stored", async () => {
    const k = await keys(() => openSocket(a.port));
    const ekFile = path.join(tmp, "ek.pub");
    execFileSync("tpm2_createek", ["-T", tcti(a), "-G", "rsa", "-c", path.join(tmp, "ek.ctx"), "-u", ekFile]);
    expect(k.ekPublic.equals(fs.readFileSync(ekFile))).toBe(true);
    expect(k.ekCertificate.equals(fs.readFileSync(path.join(a.state, "ek-rsa2048.crt")))).toBe(true);
    // The same TPM gives the same AK every time (a primary key), another TPM another one.
    expect((await keys(() => openSocket(a.port))).akPublic.equals(k.akPublic)).toBe(true);
    expect((await keys(() => openSocket(b.port))).akPublic.equals(k.akPublic)).toBe(false);
  });

  it("quotes what tpm2_checkquote accepts, and activates a credential tpm2_makecredential made", async () => {
    const { k, parsed, ev, nonce } = await attestOnce(a);
    const f = (n: string, b: Buffer) => (fs.writeFileSync(path.join(tmp, n), b), path.join(tmp, n));
    execFileSync("tpm2_checkquote", ["-u", f("ak.pub", k.akPublic), "-m", f("q.msg", ev.attest), "-s", f("q.sig", ev.signature), "-q", nonce.toString("hex")]);
    expect(() => execFileSync("tpm2_checkquote", ["-u", path.join(tmp, "ak.pub"), "-m", path.join(tmp, "q.msg"), "-s", path.join(tmp, "q.sig"), "-q", randomBytes(32).toString("hex")], { stdio: "ignore" })).toThrow();

    const secret = randomBytes(24);
    const out = path.join(tmp, "cred.out");
    execFileSync("tpm2_makecredential", ["-T", "none", "-u", f("ek.pub", k.ekPublic), "-s", f("secret", secret), "-n", parsed.ak.name.toString("hex"), "-o", out]);
    // tpm2-tools' file: magic, version, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET.
    const file = fs.readFileSync(out);
    const blobLen = file.readUInt16BE(8);
    const blob = file.subarray(10, 10 + blobLen);
    const enc = file.subarray(12 + blobLen, 12 + blobLen + file.readUInt16BE(10 + blobLen));
    const tpm = new Tpm(await openSocket(a.port));
    try {
      const ek = await tpm.createPrimary(ekTemplate());
      const ak = await tpm.createPrimary(akTemplate());
      expect((await tpm.activateCredential(ak.handle, ek.handle, blob, enc)).equals(secret)).toBe(true);
      await tpm.flush(ek.handle);
      await tpm.flush(ak.handle);
    } finally {
      await tpm.close();
    }
  });

  it("passes evidence whose every check holds up to the measurements, and names what differs", async () => {
    const { parsed, ev, nonce, secret } = await attestOnce(a);
    // The header-only log replays to the fresh TPM's PCRs: credential, signature, nonce and log hold; no kernel was measured.
    expect(failedOf(() => verifyEvidence(parsed, ev, { nonce, secret, pcrs: QUOTED_PCRS }, expectNothing))).toEqual(["kernel", "initramfs", "kernel command line"]);
    expect(ev.pcrValues.every((v) => v.equals(Buffer.alloc(32)))).toBe(true);
  });

  it("refuses a replayed quote, a wrong secret, a forged signature, a log that does not replay, and another TPM", async () => {
    const { k, parsed, ev, nonce, secret } = await attestOnce(a);
    const sent = { nonce, secret, pcrs: QUOTED_PCRS };
    expect(failedOf(() => verifyEvidence(parsed, ev, { ...sent, nonce: randomBytes(32) }, expectNothing))).toEqual(["nonce"]);
    expect(failedOf(() => verifyEvidence(parsed, ev, { ...sent, secret: randomBytes(32) }, expectNothing))).toEqual(["credential"]);
    const forged: Evidence = { ...ev, attest: Buffer.from(ev.attest) };
    forged.attest[forged.attest.length - 1]! ^= 1;
    expect(failedOf(() => verifyEvidence(parsed, forged, sent, expectNothing))).toEqual(["signature"]);
    expect(failedOf(() => verifyEvidence(parsed, { ...ev, eventLog: fs.readFileSync(fixture) }, sent, expectNothing))).toEqual(["event log"]);
    // B's TPM, checked against A's pin; and B's quote for A's keys.
    const other = await attestOnce(b);
    expect(failedOf(() => checkKeys(other.k, { pinned: pinnedEk(a.state)! }))).toEqual(["ek"]);
    expect(failedOf(() => verifyEvidence(parsed, other.ev, sent, expectNothing))).toEqual(["credential"]);
    // Without a pin, the EK certificate must chain to the CA that made it.
    expect(() => checkKeys(k, { cas: localCa(ca).certs() })).not.toThrow();
    expect(failedOf(() => checkKeys(k, { cas: [] }))).toEqual(["ek"]);
  });
});

describe("measurements", () => {
  it("replays OVMF's event log to the PCR values tpm2_eventlog computes", () => {
    const yaml = execFileSync("tpm2_eventlog", [fixture], { encoding: "utf8" });
    const theirs = new Map([...yaml.matchAll(/^\s+(\d+)\s*: 0x([0-9a-f]{64})$/gim)].map((m) => [Number(m[1]), m[2]!.toLowerCase()]));
    const ours = replay(parseEventLog(fs.readFileSync(fixture)));
    expect(theirs.size).toBe(9);
    for (const [pcr, v] of theirs) expect(ours.get(pcr)?.toString("hex")).toBe(v);
  });

  it("finds the EFI stub's command-line event for the command line QEMU was given", () => {
    const events = parseEventLog(fs.readFileSync(fixture));
    const cmdline = "console=ttyS0 panic=-1 fractal.hostname=tpmx fractal.listen=virtio-serial://org.fractal.agent";
    expect(events.some((e) => e.pcr === 9 && e.sha256?.toString("hex") === loadOptionsDigest(cmdline))).toBe(true);
    expect(events.some((e) => e.pcr === 9 && e.sha256?.toString("hex") === loadOptionsDigest(`${cmdline} x`))).toBe(false);
  });

  it("computes the kernel's Authenticode digest as pesign does", () => {
    const kernel = path.join(root, "build/kernel/vmlinuz");
    const theirs = execFileSync("pesign", ["-h", "-d", "sha256", "-i", kernel], { encoding: "utf8" }).match(/hash: ([0-9a-f]{64})/)?.[1];
    expect(authenticodeDigest(fs.readFileSync(kernel)).toString("hex")).toBe(theirs);
    expect(createHash("sha256").update(fs.readFileSync(kernel)).digest("hex")).not.toBe(theirs);
  });
});


