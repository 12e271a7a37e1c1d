// The agent is the guest's init: no peer may make it grow without bound or
// hold a connection for nothing. Pipelined requests that are never read,
// requests held in flight, a frame that stalls, a connection that idles and
// a flood of connections from one address each meet a limit, and a
// bystander connection is served throughout.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentClient } from "../../host/client.js";
import { ErrorCode } from "../../proto/errors.js";
import { HEADER_SIZE, encodeFrame } from "../../proto/frame.js";
import { MAX_IN_FLIGHT } from "../../proto/session.js";
import { rssMiB, runCli, startAgent, type RunningAgent } from "../helpers/agent.js";
import { handshake, rawTcp } from "../helpers/raw.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let agent: RunningAgent;
beforeAll(async () => {
  agent = await startAgent({ args: ["--frame-timeout", "1", "--idle-timeout", "2"] });
});
afterAll(async () => {
  await agent?.stop();
});

/** Pings every 50 ms on its own connection until stopped; returns the slowest answer in ms. */
async function bystander(url: string): Promise<{ stop: () => Promise<number> }> {
  const c = await AgentClient.connect(url);
  let slowest = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      slowest = Math.max(slowest, await c.ping());
      await sleep(50);
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      c.close();
      return slowest;
    },
  };
}

describe("a client that pipelines and never reads", () => {
  it("is paused, not buffered: 4,000,000 requests grow the agent by less than 64 MiB, and pings stay under 1 s", async () => {
    const a = await startAgent();
    try {
      const pinger = await bystander(a.tcp);
      const r = await rawTcp(a.tcp);
      await handshake(r);
      r.socket.pause(); // never read a single answer
      const before = rssMiB(a.proc.pid!);
      // 52 MB of requests (more than the kernel's socket buffers hold:
      // tcp_rmem may grow to 32 MiB here) whose answers would be 400 MB.
      const batch = Buffer.concat(Array.from({ length: 1000 }, (_, i) => encodeFrame({ request: { id: i + 1, version: {} } })));
      let peak = before;
      for (let i = 0; i < 4000; i++) {
        r.socket.write(batch);
        if (i % 100 === 0) peak = Math.max(peak, rssMiB(a.proc.pid!));
      }
      // The agent stops reading once its answers back up: what it has not
      // taken stays in this process, and its memory stays flat.
      for (let i = 0; i < 20; i++) {
        await sleep(250);
        peak = Math.max(peak, rssMiB(a.proc.pid!));
      }
      const slowest = await pinger.stop();
      const figures = `agent RSS ${before.toFixed(0)} -> peak ${peak.toFixed(0)} MiB; slowest ping ${slowest.toFixed(0)} ms; ${(r.socket.writableLength / 1e6).toFixed(0)} MB never taken`;
      console.log(`4,000,000 pipelined requests, never read: ${figures}`);
      expect(r.socket.writableLength, figures).toBeGreaterThan(0);
      expect(peak - before, figures).toBeLessThan(64);
      expect(slowest, figures).toBeLessThan(1000);
      r.socket.destroy();
    } finally {
      await a.stop();
    }
  });

  it(`answers requests over ${MAX_IN_FLIGHT} in flight with RESOURCE_EXHAUSTED, and the rest when they finish`, async () => {
    const c = await AgentClient.connect(agent.tcp);
    const proc = await c.exec({ argv: ["sleep", "3"] });
    const extra = 100;
    const waits = Array.from({ length: MAX_IN_FLIGHT + extra }, () => c.session.request({ wait: { process: proc.handle } }));
    const answers = await Promise.all(waits);
    const refused = answers.filter((a) => a.error?.code === ErrorCode.RESOURCE_EXHAUSTED);
    expect(refused).toHaveLength(extra);
    expect(refused[0]!.error!.message).toMatch(/requests are already in flight on this connection/);
    expect(answers.filter((a) => a.exit && a.exit.code === 0)).toHaveLength(MAX_IN_FLIGHT);
    // Answered, the connection takes requests again.
    expect(await c.ping()).toBeLessThan(1000);
    c.close();
  });
});

describe("stalled and idle peers", () => {
  const header = (length: number) => {
    const h = Buffer.alloc(HEADER_SIZE);
    h[0] = 0xf7;
    h[1] = 0x46;
    h.writeUInt32BE(length, 2);
    return h;
  };

  it("drops a peer that sends a frame header and stalls, after the frame timeout", async () => {
    const r = await rawTcp(agent.tcp);
    await handshake(r);
    const t0 = Date.now();
    r.send(Buffer.concat([header(1000), Buffer.alloc(10)]));
    const e = (await r.next((f) => !!f.protocolError)).protocolError!;
    expect(e.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
    expect(e.message).toMatch(/still incomplete/);
    await r.closed;
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it("times each frame, not the stream: frames that each arrive in time never trip the timeout", async () => {
    const r = await rawTcp(agent.tcp);
    await handshake(r);
    // Six pings, each split across two writes 400 ms apart, so that some
    // frame is always half there for 2.4 s: more than the 1 s frame timeout,
    // though no single frame takes more than 0.4 s.
    const pings = Array.from({ length: 6 }, (_, i) => encodeFrame({ request: { id: 100 + i, ping: { nonce: i } } }));
    let carry = Buffer.alloc(0);
    for (const p of pings) {
      const half = p.length >> 1;
      r.send(Buffer.concat([carry, p.subarray(0, half)]));
      carry = Buffer.from(p.subarray(half));
      await sleep(400);
    }
    r.send(carry);
    for (let i = 0; i < 6; i++) expect((await r.next((f) => f.response?.id === 100 + i)).response!.ping!.nonce ?? 0).toBe(i);
    r.socket.destroy();
  });

  it("drops a connection that authenticates and then idles, but not one waiting for a process", async () => {
    const idle = await rawTcp(agent.tcp);
    await handshake(idle);
    const busy = await AgentClient.connect(agent.tcp);
    const proc = await busy.exec({ argv: ["sleep", "4"] });
    const e = (await idle.next((f) => !!f.protocolError)).protocolError!;
    expect(e.code).toBe(ErrorCode.DEADLINE_EXCEEDED);
    expect(e.message).toMatch(/idle for \d+ s/);
    await idle.closed;
    // Waiting on a process is not idle: the answer comes after the timeout.
    expect(await proc.wait()).toEqual({ kind: "exited", code: 0 });
    expect(await busy.ping()).toBeLessThan(1000);
    busy.close();
  });
});

describe("connections from one address", () => {
  it("refuses more than the cap with a clear error, and admits again once one closes", async () => {
    // An agent of its own: connections of the other tests would count.
    const a = await startAgent({ args: ["--max-connections-per-address", "6"] });
    try {
      await capped(a);
    } finally {
      await a.stop();
    }
  });
});

async function capped(agent: RunningAgent): Promise<void> {
  {
    const held = await Promise.all(Array.from({ length: 6 }, () => AgentClient.connect(agent.tcp)));
    const r = await runCli(["--connect", agent.tcp, "ping"]);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/RESOURCE_EXHAUSTED.*too many connections from 127\.0\.0\.1 \(at most 6 at once\)/);
    for (const c of held) expect(await c.ping()).toBeLessThan(1000);
    // Host-only channels are not counted.
    expect((await runCli(["--connect", agent.unix, "ping"])).code).toBe(0);
    held.pop()!.close();
    await sleep(200);
    expect((await runCli(["--connect", agent.tcp, "ping"])).code).toBe(0);
    for (const c of held) c.close();
  }
}
