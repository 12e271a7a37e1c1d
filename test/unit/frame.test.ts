import { coalesceSmall, COALESCE_MAX } from "../../proto/link.js";
import { describe, expect, it } from "vitest";
import { ErrorCode, ProtocolViolation } from "../../proto/errors.js";
import { FrameDecoder, HEADER_SIZE, MAX_FRAME, encodeDataPrefix, encodeFrame } from "../../proto/frame.js";
import { pb } from "../../proto/wire.js";

function header(length: number): Uint8Array {
  const h = new Uint8Array(HEADER_SIZE);
  h[0] = 0xf7;
  h[1] = 0x46;
  new DataView(h.buffer).setUint32(2, length);
  return h;
}

function violation(fn: () => unknown): ProtocolViolation {
  try {
    fn();
  } catch (err) {
    if (err instanceof ProtocolViolation) return err;
    throw err;
  }
  throw new Error("expected a ProtocolViolation");
}

describe("frame codec", () => {
  it("round-trips a request frame", () => {
    const d = new FrameDecoder();
    const bytes = encodeFrame({ request: { id: 7, ping: { nonce: 42 } } });
    expect([...bytes.subarray(0, HEADER_SIZE)]).toEqual([...header(bytes.length - HEADER_SIZE)]);
    const frames = d.push(bytes);
    expect(frames).toHaveLength(1);
    expect(frames[0]!.request!.id).toBe(7);
    expect(frames[0]!.request!.ping!.nonce).toBe(42);
  });

  it("hand-encoded data frames are byte-identical to protobufjs", () => {
    for (const [stream, len] of [
      [1, 0],
      [3, 1],
      [127, 127],
      [128, 128],
      [16385, 70000],
      [0, 5],
    ] as const) {
      const payload = new Uint8Array(len).map((_, i) => i * 7);
      const viaPb = encodeFrame({ data: { stream, payload } });
      const prefix = encodeDataPrefix(stream, payload);
      const ours = new Uint8Array(prefix.length + payload.length);
      ours.set(prefix);
      ours.set(payload, prefix.length);
      expect(Buffer.from(ours).equals(Buffer.from(viaPb))).toBe(true);
    }
  });

  it("reassembles frames fed one byte at a time, in order", () => {
    const bytes = Buffer.concat([
      encodeFrame({ windowUpdate: { stream: 1, credit: 10 } }),
      encodeFrame({ streamEnd: { stream: 3 } }),
      encodeFrame({ data: { stream: 5, payload: new Uint8Array([1, 2, 3]) } }),
    ]);
    const d = new FrameDecoder();
    const out = [];
    for (const b of bytes) out.push(...d.push(Uint8Array.of(b)));
    expect(out.map((f) => (f as { kind?: string }).kind)).toEqual(["windowUpdate", "streamEnd", "data"]);
    expect([...out[2]!.data!.payload!]).toEqual([1, 2, 3]);
    expect(d.pending).toBe(0);
  });

  it("decodes several frames from one chunk without bleeding into each other", () => {
    const bytes = Buffer.concat([encodeFrame({ streamEnd: { stream: 2 } }), encodeFrame({ streamEnd: { stream: 4 } })]);
    const frames = new FrameDecoder().push(bytes);
    expect(frames.map((f) => f.streamEnd!.stream)).toEqual([2, 4]);
  });

  it("rejects a length prefix over the limit before buffering the payload", () => {
    const v = violation(() => new FrameDecoder().push(header(MAX_FRAME + 1)));
    expect(v.code).toBe(ErrorCode.FRAME_TOO_LARGE);
    expect(v.fatal).toBe(true);
    // Every byte of the length counts, read unsigned: the top one too.
    for (const n of [0x01020304, 0x80000000, 0xffffffff]) {
      expect(violation(() => new FrameDecoder().push(header(n))).message).toBe(`frame length ${n} exceeds the limit of ${MAX_FRAME} bytes`);
    }
  });

  it("rejects bytes that are not a frame, naming the protocol the peer speaks when its first bytes show it", () => {
    const says = (bytes: Uint8Array | string) => violation(() => new FrameDecoder().push(Buffer.from(bytes))).message;
    const v = violation(() => new FrameDecoder().push(Buffer.from("GET / HTTP/1.1\r\n")));
    expect(v.code).toBe(ErrorCode.MALFORMED_FRAME);
    expect(v.message).toBe("bad frame magic 0x4745 (the peer speaks HTTP: WebSocket listeners take ws:// or wss:// URLs)");
    expect(says("HTTP/1.1 400 Bad Request\r\n")).toMatch(/0x4854 \(the peer speaks HTTP/);
    expect(says("<!DOCTYPE HTML>\n")).toMatch(/the peer speaks HTTP/); // an HTTP/0.9-style answer: no status line
    expect(says("SSH-2.0-dropbear\r\n")).toMatch(/the peer speaks SSH/);
    expect(says(Uint8Array.of(0x16, 0x03, 0x01, 0x02, 0x00, 0x01))).toMatch(/the peer speaks TLS: TLS listeners take tls:\/\/ or wss:\/\//);
    expect(says("xyzzy!")).toMatch(/0x7879 \(is the peer a fractal endpoint\?\)/);
  });

  it("rejects a payload that is not a protobuf Frame", () => {
    const junk = Uint8Array.of(0xff, 0xff, 0xff, 0xff);
    const v = violation(() => new FrameDecoder().push(Buffer.concat([header(junk.length), junk])));
    expect(v.code).toBe(ErrorCode.MALFORMED_FRAME);
  });

  it("reports an unknown frame type as a frame with no kind", () => {
    // Field 15, varint 1: well-formed protobuf, but no Frame field.
    const body = Uint8Array.of((15 << 3) | 0, 1);
    const frames = new FrameDecoder().push(Buffer.concat([header(body.length), body]));
    expect(frames).toHaveLength(1);
    expect((frames[0] as { kind?: string }).kind).toBeUndefined();
  });

  it("resynchronises after junk bytes on a serial link", () => {
    const d = new FrameDecoder({ resync: true });
    const good = encodeFrame({ request: { id: 1, ping: { nonce: 9 } } });
    const torn = good.subarray(3); // the tail of a frame from an earlier session
    const frames = d.push(Buffer.concat([Buffer.from("\x00\xf7junk\xf7"), torn, good]));
    expect(frames).toHaveLength(1);
    expect(frames[0]!.request!.ping!.nonce).toBe(9);
    expect(d.skipped).toBeGreaterThan(0);
  });

  it("keeps payload bytes exact across chunk boundaries", () => {
    const payload = new Uint8Array(300_000).map(() => Math.floor(Math.random() * 256));
    const bytes = encodeFrame({ data: { stream: 1, payload } });
    const d = new FrameDecoder();
    const got = [];
    for (let i = 0; i < bytes.length; i += 65_537) got.push(...d.push(bytes.subarray(i, i + 65_537)));
    expect(Buffer.from(got[0]!.data!.payload!).equals(Buffer.from(payload))).toBe(true);
    // The generated decoder agrees on where the frame ends.
    expect(pb.Frame.decode(bytes.subarray(HEADER_SIZE)).data!.stream).toBe(1);
  });
});

describe("socket writes", () => {
  it("sends a small frame's header and payload in one write, and a large payload uncopied", () => {
    const header = Buffer.from([1, 2, 3]);
    const small = coalesceSmall([header, Buffer.from("x")]);
    expect(small).toHaveLength(1);
    expect(Buffer.from(small[0]!).equals(Buffer.from([1, 2, 3, 120]))).toBe(true);
    const big = Buffer.alloc(COALESCE_MAX);
    const large = coalesceSmall([header, big]);
    expect(large).toHaveLength(2);
    expect(large[1]).toBe(big);
  });
});
