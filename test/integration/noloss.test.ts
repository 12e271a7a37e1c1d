// No byte lost or reordered on any socket link: stdin into `cat` and back,
// with a reader that keeps pausing (make bench-reliability moves 1 GiB; the
// VM tier does virtio-serial).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startAgent, type RunningAgent } from "../helpers/agent.js";
import { catThrough } from "../helpers/noloss.js";

const BYTES = 64 << 20;
let agent: RunningAgent;
beforeAll(async () => {
  agent = await startAgent();
});
afterAll(async () => {
  await agent?.stop();
});

describe("no loss", () => {
  for (const link of ["tcp", "ws", "unix"] as const) {
    it(`carries 64 MiB through cat over ${link} with a pausing reader, byte for byte`, async () => {
      const r = await catThrough(["--connect", agent[link]], BYTES, link.length);
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      expect(r.bytes).toBe(BYTES);
      expect(r.pauses).toBeGreaterThan(3);
      expect(r.received).toBe(r.sent);
    });
  }
});
