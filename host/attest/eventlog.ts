// The firmware's TPM event log in the crypto-agile format (TCG PC Client
// Platform Firmware Profile, 10.2): a legacy header event naming the banks,
// then one record per measurement with a digest for each bank. Replaying the
// SHA-256 digests gives the PCR values the TPM must hold if the log is true.
import { createHash } from "node:crypto";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import { TPM_ALG } from "../../proto/tpm2.js";

export const EV = {
  NO_ACTION: 0x3,
  SEPARATOR: 0x4,
  ACTION: 0x5,
  EVENT_TAG: 0x6,
  EFI_BOOT_SERVICES_APPLICATION: 0x80000003,
} as const;

/** The Linux EFI stub's tagged events in PCR 9 (drivers/firmware/efi/libstub). */
export const LINUX_TAG = { INITRD: 0x8f3b22ec, LOAD_OPTIONS: 0x8f3b22ed } as const;

export interface LogEvent {
  pcr: number;
  type: number;
  /** SHA-256 digest; undefined when the log's bank list lacks it. */
  sha256?: Buffer;
  data: Buffer;
}

function bad(what: string): never {
  throw new FractalError(ErrorCode.ATTESTATION_FAILED, `the firmware event log is malformed: ${what}`);
}

export function parseEventLog(log: Buffer): LogEvent[] {
  let off = 0;
  const need = (n: number) => {
    if (off + n > log.length) bad(`truncated at byte ${off}`);
  };
  const u32 = () => {
    need(4);
    const v = log.readUInt32LE(off);
    off += 4;
    return v;
  };
  const u16 = () => {
    need(2);
    const v = log.readUInt16LE(off);
    off += 2;
    return v;
  };
  const take = (n: number) => {
    need(n);
    const v = log.subarray(off, off + n);
    off += n;
    return v;
  };
  // The header: TCG_PCR_EVENT with a SHA-1 sized digest, holding the Spec ID event.
  u32();
  if (u32() !== EV.NO_ACTION) bad("the first event is not the Spec ID event");
  take(20);
  const spec = take(u32());
  if (spec.subarray(0, 16).toString("latin1") !== "Spec ID Event03\0") bad("not a crypto-agile (TPM 2.0) log");
  const algCount = spec.readUInt32LE(24);
  const sizes = new Map<number, number>();
  for (let i = 0; i < algCount; i++) sizes.set(spec.readUInt16LE(28 + i * 4), spec.readUInt16LE(30 + i * 4));
  const events: LogEvent[] = [];
  while (off < log.length) {
    const pcr = u32();
    const type = u32();
    const count = u32();
    let sha256: Buffer | undefined;
    for (let i = 0; i < count; i++) {
      const alg = u16();
      const size = sizes.get(alg);
      if (size === undefined) bad(`digest of algorithm 0x${alg.toString(16)} not named in the header`);
      const d = take(size);
      if (alg === TPM_ALG.SHA256) sha256 = Buffer.from(d);
    }
    const data = Buffer.from(take(u32()));
    if (pcr > 23) bad(`PCR ${pcr}`);
    events.push({ pcr, type, sha256, data });
  }
  return events;
}

/** Replays the SHA-256 bank. A StartupLocality event sets PCR 0's starting value. */
export function replay(events: LogEvent[]): Map<number, Buffer> {
  const pcrs = new Map<number, Buffer>();
  for (const e of events) {
    if (e.type === EV.NO_ACTION) {
      if (e.pcr === 0 && e.data.subarray(0, 16).toString("latin1") === "StartupLocality\0") {
        const start = Buffer.alloc(32);
        start[31] = e.data[16] ?? 0;
        pcrs.set(0, start);
      }
      continue;
    }
    if (!e.sha256) bad(`event in PCR ${e.pcr} has no SHA-256 digest`);
    pcrs.set(e.pcr, createHash("sha256").update(pcrs.get(e.pcr) ?? Buffer.alloc(32)).update(e.sha256).digest());
  }
  return pcrs;
}

/** The value a PCR the log never touched holds: zeros. */
export function pcrValue(pcrs: Map<number, Buffer>, pcr: number): Buffer {
  return pcrs.get(pcr) ?? Buffer.alloc(32);
}

/** A Linux EFI stub tagged event's tag (the first 4 bytes of its data), or undefined. */
export function linuxTag(e: LogEvent): number | undefined {
  return e.type === EV.EVENT_TAG && e.data.length >= 8 ? e.data.readUInt32LE(0) : undefined;
}
