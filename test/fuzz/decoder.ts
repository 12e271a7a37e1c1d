// In-process fuzzing of the frame decoder, both modes: inputs split into
// random chunks must yield frames or a ProtocolViolation (never another
// exception), buffer no more than one maximal frame, and in resync mode
// (serial links) never throw at all.
import { ProtocolViolation } from "../../proto/errors.js";
import { FrameDecoder, HEADER_SIZE, MAX_FRAME } from "../../proto/frame.js";
import { Rng, mutatedFrame, structuredFrame } from "./frames.js";

export interface DecoderReport {
  inputs: number;
  frames: number;
  violations: number;
  maxPending: number;
  seconds: number;
}

export function fuzzDecoder(inputs: number, seed: number): DecoderReport {
  const t0 = performance.now();
  const r = new Rng(seed);
  const report = { inputs: 0, frames: 0, violations: 0, maxPending: 0, seconds: 0 };
  let strict = new FrameDecoder();
  const resync = new FrameDecoder({ resync: true });
  let last = structuredFrame(r);
  for (let i = 0; i < inputs; i++) {
    last = r.chance(0.5) ? structuredFrame(r) : mutatedFrame(r, last);
    report.inputs++;
    for (let off = 0; off < last.length; ) {
      const n = 1 + r.int(last.length - off);
      const piece = last.subarray(off, off + n);
      off += n;
      try {
        report.frames += strict.push(piece).length;
      } catch (err) {
        if (!(err instanceof ProtocolViolation)) throw new Error(`decoder threw ${String(err)} on input ${i} (seed ${seed})`);
        report.violations++;
        strict = new FrameDecoder(); // a connection ends at its first violation
      }
      try {
        report.frames += resync.push(piece).length;
      } catch (err) {
        throw new Error(`resync decoder threw ${String(err)} on input ${i} (seed ${seed})`);
      }
      report.maxPending = Math.max(report.maxPending, strict.pending, resync.pending);
      if (strict.pending > MAX_FRAME + HEADER_SIZE + 64 * 1024 || resync.pending > MAX_FRAME + HEADER_SIZE + 64 * 1024) {
        throw new Error(`decoder holds ${Math.max(strict.pending, resync.pending)} bytes on input ${i} (seed ${seed})`);
      }
    }
  }
  report.seconds = (performance.now() - t0) / 1000;
  return report;
}
