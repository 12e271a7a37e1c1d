// The TPM commands attestation needs, marshalled by hand (TCG TPM 2.0
// Library, Part 3): CreatePrimary, Quote, PCR_Read, ActivateCredential with
// the EK's policy session, NV reads of the EK certificate, FlushContext.
// Eight commands do not justify the TSS libraries (and curl, which
// tpm2-tools pulls in) in every initramfs; test/unit/tpm2.test.ts runs them
// against swtpm and checks the results with tpm2-tools.
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import net from "node:net";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import { EK_CERT_NV_INDEX, TPM_ALG, TPM_RH, TPM_ST, TpmReader, TpmWriter, pcrSelection, readPcrSelection } from "../../proto/tpm2.js";

const CC = {
  NV_Read: 0x14e,
  ActivateCredential: 0x147,
  PolicySecret: 0x151,
  Quote: 0x158,
  FlushContext: 0x165,
  NV_ReadPublic: 0x169,
  StartAuthSession: 0x176,
  PCR_Read: 0x17e,
  CreatePrimary: 0x131,
} as const;

const TPM_SE_POLICY = 0x01;
const RC_HANDLE_NOT_FOUND = 0x18b; // TPM_RC_HANDLE, for the first handle
const RC_AGAIN = new Set([0x908, 0x90a, 0x922]); // TPM_RC_YIELDED, TPM_RC_TESTING, TPM_RC_RETRY

/** One command in, one response out: the kernel's /dev/tpmrm0, or swtpm's socket in tests. */
export interface TpmTransport {
  transmit(command: Buffer): Promise<Buffer>;
  close(): Promise<void>;
}

/** The kernel's resource-managed TPM device: each session's handles are its own and flushed when it closes. */
export async function openDevice(path = "/dev/tpmrm0"): Promise<TpmTransport> {
  let fh: fs.FileHandle;
  try {
    fh = await fs.open(path, "r+");
  } catch (err) {
    throw new FractalError(ErrorCode.NOT_FOUND, `no TPM in this machine (${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); boot it with --tpm`);
  }
  return {
    async transmit(command) {
      await fh.write(command);
      const buf = Buffer.alloc(8192);
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      return buf.subarray(0, bytesRead);
    },
    close: () => fh.close(),
  };
}

/** swtpm's data socket (raw commands and responses), for tests on a host without a TPM device. */
export function openSocket(port: number, host = "127.0.0.1"): Promise<TpmTransport> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, host);
    let pending: { want: number; got: Buffer[]; done: (b: Buffer) => void } | undefined;
    sock.on("data", (chunk: Buffer) => {
      if (!pending) return;
      pending.got.push(chunk);
      const all = Buffer.concat(pending.got);
      if (pending.want === 0 && all.length >= 6) pending.want = all.readUInt32BE(2);
      if (pending.want > 0 && all.length >= pending.want) {
        const p = pending;
        pending = undefined;
        p.done(all.subarray(0, p.want));
      }
    });
    sock.once("error", reject);
    sock.once("connect", () =>
      resolve({
        transmit: (command) =>
          new Promise((done) => {
            pending = { want: 0, got: [], done };
            sock.write(command);
          }),
        close: async () => void sock.destroy(),
      }),
    );
  });
}

/** A TPM error, with the response code (TPM 2.0 Part 2, 6.6) for logs. */
export class TpmError extends FractalError {
  constructor(
    readonly command: string,
    readonly rc: number,
  ) {
    super(ErrorCode.INTERNAL, `TPM ${command} failed: response code 0x${rc.toString(16)}`);
  }
}

const PASSWORD = new TpmWriter().u32(TPM_RH.PW).sized(Buffer.alloc(0)).u8(0).sized(Buffer.alloc(0)).done();

function policyAuth(session: number): Buffer {
  // A policy session whose policy needs no auth value carries no HMAC.
  return new TpmWriter().u32(session).sized(Buffer.alloc(0)).u8(0).sized(Buffer.alloc(0)).done();
}

export interface Quote {
  attest: Buffer;
  signature: Buffer;
}

export class Tpm {
  constructor(private readonly t: TpmTransport) {}

  /** Sends one command; returns the response after its header (and, with sessions, the parameter size). */
  private async run(name: keyof typeof CC, handles: number[], auths: Buffer[], params: Buffer, responseHandles = 0): Promise<{ handles: number[]; params: TpmReader }> {
    const w = new TpmWriter();
    const body = new TpmWriter();
    for (const h of handles) body.u32(h);
    if (auths.length > 0) {
      const area = Buffer.concat(auths);
      body.u32(area.length).bytes(area);
    }
    body.bytes(params);
    const b = body.done();
    w.u16(auths.length > 0 ? TPM_ST.SESSIONS : TPM_ST.NO_SESSIONS).u32(10 + b.length).u32(CC[name]).bytes(b);
    const command = w.done();
    let r: TpmReader;
    let tag: number;
    for (let attempt = 0; ; attempt++) {
      r = new TpmReader(await this.t.transmit(command), `TPM ${name} response`);
      tag = r.u16();
      r.u32();
      const rc = r.u32();
      if (rc === 0) break;
      // A TPM may ask for the same command again (busy with self-test or
      // another locality): it did not run it.
      if (!RC_AGAIN.has(rc) || attempt >= 20) throw new TpmError(name, rc);
      await new Promise((res) => setTimeout(res, 5 * (attempt + 1)));
    }
    const out: number[] = [];
    for (let i = 0; i < responseHandles; i++) out.push(r.u32());
    if (tag === TPM_ST.SESSIONS) {
      const size = r.u32();
      return { handles: out, params: new TpmReader(r.bytes(size), `TPM ${name} parameters`) };
    }
    return { handles: out, params: r };
  }

  /** Creates (derives) a primary key of the endorsement hierarchy from a template; returns its handle and TPM2B_PUBLIC. */
  async createPrimary(template: Buffer): Promise<{ handle: number; public: Buffer }> {
    const params = new TpmWriter()
      .sized(new TpmWriter().sized(Buffer.alloc(0)).sized(Buffer.alloc(0)).done()) // inSensitive: no auth, no data
      .sized(template)
      .sized(Buffer.alloc(0)) // outsideInfo
      .u32(0) // creationPCR: none
      .done();
    const { handles, params: r } = await this.run("CreatePrimary", [TPM_RH.ENDORSEMENT], [PASSWORD], params, 1);
    const pub = r.sized();
    return { handle: handles[0]!, public: new TpmWriter().sized(pub).done() };
  }

  async flush(handle: number): Promise<void> {
    await this.run("FlushContext", [], [], new TpmWriter().u32(handle).done());
  }

  /** Signs the selected PCRs' digest and the nonce with the AK (ECDSA, SHA-256). */
  async quote(ak: number, nonce: Buffer, pcrs: number[]): Promise<Quote> {
    const params = new TpmWriter().sized(nonce).u16(TPM_ALG.ECDSA).u16(TPM_ALG.SHA256).bytes(pcrSelection(pcrs)).done();
    const { params: r } = await this.run("Quote", [ak], [PASSWORD], params);
    const attest = r.sized();
    return { attest, signature: r.rest.length > 0 ? Buffer.from(r.rest) : Buffer.alloc(0) };
  }

  /** The SHA-256 bank's values of the given PCRs (a TPM returns at most 8 per call). */
  async pcrRead(pcrs: number[]): Promise<Map<number, Buffer>> {
    const out = new Map<number, Buffer>();
    let left = [...pcrs];
    while (left.length > 0) {
      const { params: r } = await this.run("PCR_Read", [], [], pcrSelection(left));
      r.u32(); // update counter
      const got = readPcrSelection(r).get(TPM_ALG.SHA256) ?? [];
      const n = r.u32();
      if (got.length !== n || n === 0) throw new FractalError(ErrorCode.INTERNAL, "TPM PCR_Read returned no SHA-256 values (is the bank active?)");
      got.forEach((p) => out.set(p, r.sized()));
      left = left.filter((p) => !out.has(p));
    }
    return out;
  }

  /**
   * Decrypts a credential made for the AK's name with the EK's public key:
   * the TPM does so only if both keys are loaded in it, which is what proves
   * the AK is this TPM's. The EK's policy is PolicySecret(endorsement).
   */
  async activateCredential(ak: number, ek: number, credentialBlob: Buffer, secret: Buffer): Promise<Buffer> {
    const start = new TpmWriter().sized(randomBytes(32)).sized(Buffer.alloc(0)).u8(TPM_SE_POLICY).u16(TPM_ALG.NULL).u16(TPM_ALG.SHA256).done();
    const { handles, params: sr } = await this.run("StartAuthSession", [TPM_RH.NULL, TPM_RH.NULL], [], start, 1);
    sr.sized(); // nonceTPM
    const session = handles[0]!;
    try {
      const ps = new TpmWriter().sized(Buffer.alloc(0)).sized(Buffer.alloc(0)).sized(Buffer.alloc(0)).u32(0).done();
      await this.run("PolicySecret", [TPM_RH.ENDORSEMENT, session], [PASSWORD], ps);
      const params = new TpmWriter().sized(credentialBlob).sized(secret).done();
      const { params: r } = await this.run("ActivateCredential", [ak, ek], [PASSWORD, policyAuth(session)], params);
      return r.sized();
    } catch (err) {
      await this.flush(session).catch(() => {});
      throw err;
    }
    // On success the TPM ends the session itself (continueSession clear).
  }

  /** The EK certificate a manufacturer (or swtpm_setup) stored, or undefined when there is none. */
  async ekCertificate(): Promise<Buffer | undefined> {
    let size: number;
    try {
      const { params: r } = await this.run("NV_ReadPublic", [EK_CERT_NV_INDEX], [], Buffer.alloc(0));
      const pub = new TpmReader(r.sized(), "TPMS_NV_PUBLIC");
      pub.u32();
      pub.u16();
      pub.u32();
      pub.sized();
      size = pub.u16();
    } catch (err) {
      if (err instanceof TpmError && (err.rc & 0xfff) === RC_HANDLE_NOT_FOUND) return undefined;
      throw err;
    }
    const parts: Buffer[] = [];
    for (let off = 0; off < size; ) {
      const n = Math.min(512, size - off);
      const { params: r } = await this.run("NV_Read", [TPM_RH.OWNER, EK_CERT_NV_INDEX], [PASSWORD], new TpmWriter().u16(n).u16(off).done());
      const chunk = r.sized();
      parts.push(chunk);
      off += chunk.length;
      if (chunk.length === 0) break;
    }
    return Buffer.concat(parts);
  }

  close(): Promise<void> {
    return this.t.close();
  }
}
