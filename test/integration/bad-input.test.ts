// Hostile and broken peers against the compiled agent: each gets a clear
// protocol error, and every other connection keeps being served.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorCode } from "../../proto/errors.js";
import { HEADER_SIZE, encodeFrame } from "../../proto/frame.js";
import type { Frame } from "../../proto/wire.js";
import { AgentClient } from "../../host/client.js";
import { startAgent, type RunningAgent } from "../helpers/agent.js";
import { handshake, rawTcp, type Raw } from "../helpers/raw.js";

let agent: RunningAgent;
let bystander: AgentClient;
beforeAll(async () => {
  agent = await startAgent();
  bystander = await AgentClient.connect(agent.tcp);
});
afterAll(async () => {
  bystander?.close();
  await agent?.stop();
});

async function raw(withHandshake = true): Promise<Raw> {
  const r = await rawTcp(agent.tcp);
  if (withHandshake) await handshake(r);
  return r;
}

function header(length: number): Buffer {
  const h = Buffer.alloc(HEADER_SIZE);
  h[0] = 0xf7;
  h[1] = 0x46;
  h.writeUInt32BE(length, 2);
  return h;
}

const isError = (f: Frame) => !!f.protocolError;

async function othersStillServed(): Promise<void> {
  expect(await bystander.ping()).toBeLessThan(1000);
  expect(agent.proc.exitCode).toBeNull();
}

describe("agent under bad input", () => {
  it("closes a connection that sends a malformed frame, with MALFORMED_FRAME", async () => {
    const r = await raw();
    const junk = Buffer.from([0xff, 0xff, 0xff, 0xff]);
    r.send(Buffer.concat([header(junk.length), junk]));
    const e = (await r.next(isError)).protocolError!;
    expect(e.code).toBe(ErrorCode.MALFORMED_FRAME);
    expect(e.fatal).toBe(true);
    await r.closed;
    await othersStillServed();
  });

  it("closes a connection whose length prefix is over the limit, with FRAME_TOO_LARGE", async () => {
    const r = await raw();
    r.send(header(0x7fffffff));
    const e = (await r.next(isError)).protocolError!;
    expect(e.code).toBe(ErrorCode.FRAME_TOO_LARGE);
    expect(e.message).toMatch(/2147483647/);
    await r.closed;
    await othersStillServed();
  });

  it("answers an unknown frame type with UNKNOWN_MESSAGE and keeps the connection", async () => {
    const r = await raw();
    const body = Buffer.from([(15 << 3) | 0, 1]);
    r.send(Buffer.concat([header(body.length), body]));
    const e = (await r.next(isError)).protocolError!;
    expect(e.code).toBe(ErrorCode.UNKNOWN_MESSAGE);
    expect(e.fatal).toBe(false);
    r.send(encodeFrame({ request: { id: 1, ping: { nonce: 77 } } }));
    expect((await r.next((f) => !!f.response)).response!.ping!.nonce).toBe(77);
  });

  it("answers an unknown request type with an error response", async () => {
    const r = await raw();
    // Request{id: 5, field 99 (an RPC from the future)}: 0x08 0x05 then tag 99 varint.
    const req = Buffer.from([0x08, 0x05, 0x98, 0x06, 0x01]);
    const frame = Buffer.concat([Buffer.from([(3 << 3) | 2, req.length]), req]);
    r.send(Buffer.concat([header(frame.length), frame]));
    const res = (await r.next((f) => !!f.response)).response!;
    expect(res.id).toBe(5);
    expect(res.error!.code).toBe(ErrorCode.UNKNOWN_MESSAGE);
  });

  it("answers data on a stream that is not open with STREAM_NOT_OPEN and keeps serving", async () => {
    const r = await raw();
    r.send(encodeFrame({ data: { stream: 77, payload: Buffer.from("hello") } }));
    const e = (await r.next(isError)).protocolError!;
    expect(e.code).toBe(ErrorCode.STREAM_NOT_OPEN);
    expect(e.message).toMatch(/stream 77/);
    r.send(encodeFrame({ request: { id: 2, ping: { nonce: 1 } } }));
    expect((await r.next((f) => !!f.response)).response!.id).toBe(2);
  });

  it("refuses an unsupported protocol version with UNSUPPORTED_VERSION", async () => {
    const r = await raw(false);
    r.send(encodeFrame({ hello: { minVersion: 9, maxVersion: 12 } }));
    const e = (await r.next(isError)).protocolError!;
    expect(e.code).toBe(ErrorCode.UNSUPPORTED_VERSION);
    expect(e.message).toMatch(/9\.\.12/);
    await r.closed;
    await othersStillServed();
  });

  it("requires the handshake before any request", async () => {
    const r = await raw(false);
    r.send(encodeFrame({ request: { id: 1, ping: { nonce: 1 } } }));
    const e = (await r.next(isError)).protocolError!;
    expect(e.code).toBe(ErrorCode.HANDSHAKE_REQUIRED);
    await r.closed;
  });

  it("rejects a peer that is not speaking fractal at all", async () => {
    const r = await raw(false);
    r.send(Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    const e = (await r.next(isError)).protocolError!;
    expect(e.code).toBe(ErrorCode.MALFORMED_FRAME);
    expect(e.message).toMatch(/magic/);
    await r.closed;
    await othersStillServed();
  });

  it("survives a client that vanishes mid-exec, hanging up its process", async () => {
    const c = await AgentClient.connect(agent.tcp);
    const p = await c.exec({ argv: ["sh", "-c", "trap 'exit 0' HUP; while :; do sleep 0.05; done"] });
    const pid = p.pid;
    c.session.link.close();
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && alive(pid)) await new Promise((r) => setTimeout(r, 50));
    expect(alive(pid)).toBe(false);
    await othersStillServed();
  });
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

