// Bounded fuzzing for CI (make bench-reliability runs the long version): the
// decoder in-process, then the compiled agent over many connections while a
// bystander connection keeps pinging it.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fuzzDecoder } from "../fuzz/decoder.js";
import { fuzzAgent } from "../fuzz/drive.js";
import { startAgent, type RunningAgent } from "../helpers/agent.js";

const SEED = Number(process.env.FUZZ_SEED ?? 20261129);

let agent: RunningAgent;
beforeAll(async () => {
  agent = await startAgent();
});
afterAll(async () => {
  await agent?.stop();
});

describe("fuzzing", () => {
  it("decodes 50,000 random and damaged frames into frames or protocol errors, holding at most one frame", () => {
    const r = fuzzDecoder(50_000, SEED);
    expect(r.inputs).toBe(50_000);
    // Both outcomes must occur, or the inputs were not reaching the decoder's paths.
    expect(r.frames).toBeGreaterThan(10_000);
    expect(r.violations).toBeGreaterThan(1_000);
  });

  it("keeps the agent up, answering another connection, through 5,000 hostile frames", async () => {
    const r = await fuzzAgent({ unix: agent.unix, tcp: agent.tcp, pid: agent.proc.pid!, inputs: 5_000, seed: SEED });
    expect(r.inputs).toBeGreaterThanOrEqual(5_000);
    expect(r.mutated).toBeGreaterThan(50);
    expect(r.agentAlive).toBe(true);
    expect(agent.proc.exitCode).toBeNull();
    expect(r.pings).toBeGreaterThan(5);
    expect(r.maxPingMs).toBeLessThan(2_000);
    expect(r.fds.after).toBeLessThanOrEqual(r.fds.before);
    expect(agent.log()).not.toMatch(/uncaught|unhandled rejection/);
  });
});
