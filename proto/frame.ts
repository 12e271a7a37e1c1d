// Frame codec: bytes in, typed frames out, and back. It never touches a
// socket; proto/session.ts wires it to a transport.
//
// Wire layout of one frame:
//
//   0      1      2      3      4      5      6 ...
//   +------+------+------+------+------+------+-----------------------+
//   | 0xF7 | 0x46 |  payload length (uint32 BE) | protobuf `Frame`    |
//   +------+------+------+------+------+------+-----------------------+
//
// The magic bytes cost two bytes per frame and buy resynchronisation on serial
// links (a host that reconnects mid-stream sees the tail of an old frame:
// the decoder in resync mode skips to the next magic whose frame decodes).
// On reliable links (TCP, unix, WebSocket, vsock) a bad magic is fatal.
import { ErrorCode, ProtocolViolation } from "./errors.js";
import { pb, type Frame } from "./wire.js";

export const MAGIC = Uint8Array.of(0xf7, 0x46);
export const HEADER_SIZE = 6;
/**
 * Hard limit on a frame's payload. Large enough for a full data chunk plus
 * its envelope, small enough that a hostile length prefix cannot make either
 * side allocate much.
 */
export const MAX_FRAME = 1 << 20;
/** Largest data payload a sender puts in one frame. */
export const MAX_DATA_CHUNK = 256 * 1024;

/** Encodes one frame: header and payload in a single buffer. */
export function encodeFrame(frame: Frame): Uint8Array {
  const body = pb.Frame.encode(frame).finish();
  const out = new Uint8Array(HEADER_SIZE + body.length);
  writeHeader(out, body.length);
  out.set(body, HEADER_SIZE);
  return out;
}

/**
 * Encodes a Data frame without copying the payload: returns the header plus
 * protobuf envelope, to be written followed by `payload` itself. The bytes are
 * exactly what pb.Frame.encode({data: {stream, payload}}) produces (a unit
 * test pins that), written by hand because stdout throughput is dominated by
 * this path and protobufjs would copy every payload once more.
 */
export function encodeDataPrefix(stream: number, payload: Uint8Array): Uint8Array {
  const len = payload.length;
  // Data message: field 1 varint (stream, omitted when 0 as proto3 does),
  // field 2 length-delimited (payload, omitted when empty).
  const streamPart = stream === 0 ? 0 : 1 + varintSize(stream);
  const payloadPart = len === 0 ? 0 : 1 + varintSize(len) + len;
  const dataLen = streamPart + payloadPart;
  // Frame message: field 5 length-delimited (Data).
  const frameLen = 1 + varintSize(dataLen) + dataLen;
  const prefixLen = HEADER_SIZE + frameLen - len;
  const out = new Uint8Array(prefixLen);
  writeHeader(out, frameLen);
  let p = HEADER_SIZE;
  out[p++] = (5 << 3) | 2;
  p = writeVarint(out, p, dataLen);
  if (stream !== 0) {
    out[p++] = (1 << 3) | 0;
    p = writeVarint(out, p, stream);
  }
  if (len !== 0) {
    out[p++] = (2 << 3) | 2;
    p = writeVarint(out, p, len);
  }
  return out;
}

// Header bytes by hand: a DataView needs the array's `.buffer`, which JSC
// materialises on first access (6% of the agent's sampled time in a guest's
// interactive echo under TCG).
function writeHeader(out: Uint8Array, length: number): void {
  out[0] = MAGIC[0]!;
  out[1] = MAGIC[1]!;
  out[2] = length >>> 24;
  out[3] = (length >>> 16) & 0xff;
  out[4] = (length >>> 8) & 0xff;
  out[5] = length & 0xff;
}

function readLength(head: Uint8Array): number {
  return head[2]! * 0x1000000 + ((head[3]! << 16) | (head[4]! << 8) | head[5]!);
}

function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

function writeVarint(out: Uint8Array, p: number, n: number): number {
  while (n >= 0x80) {
    out[p++] = (n & 0x7f) | 0x80;
    n = Math.floor(n / 128);
  }
  out[p++] = n;
  return p;
}

export interface DecoderOptions {
  /** Largest payload accepted; a bigger length prefix is a fatal error. */
  maxFrame?: number;
  /**
   * Serial links: skip junk until a frame decodes instead of failing. Used
   * only where bytes can be torn (a reconnect mid-frame), never on sockets.
   */
  resync?: boolean;
}

/**
 * Incremental frame decoder. Feed it chunks with push(); it returns the
 * complete frames they finish. It throws ProtocolViolation (always fatal) on
 * a bad magic, an oversized length or an undecodable payload, unless in
 * resync mode, where such bytes are skipped and counted in `skipped`.
 */
export class FrameDecoder {
  private readonly maxFrame: number;
  private readonly resync: boolean;
  private chunks: Uint8Array[] = [];
  private buffered = 0;
  /** Bytes discarded while resynchronising. */
  skipped = 0;

  constructor(opts: DecoderOptions = {}) {
    this.maxFrame = opts.maxFrame ?? MAX_FRAME;
    this.resync = opts.resync ?? false;
  }

  /** Bytes held waiting for the rest of a frame. */
  get pending(): number {
    return this.buffered;
  }

  /** Hands over every byte held, undecoded, and holds none after. */
  takeAll(): Uint8Array {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    this.chunks = [];
    this.buffered = 0;
    return all;
  }

  /** Appends bytes; frames are taken with next(). */
  feed(chunk: Uint8Array): void {
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
  }

  /** Appends bytes and decodes every complete frame now held. */
  push(chunk: Uint8Array): Frame[] {
    this.feed(chunk);
    const frames: Frame[] = [];
    for (;;) {
      const frame = this.next();
      if (frame === undefined) return frames;
      frames.push(frame);
    }
  }

  /** The next complete frame, or undefined until more bytes come; throws a ProtocolViolation on bad input. */
  next(): Frame | undefined {
    while (this.buffered >= HEADER_SIZE) {
      const head = this.peek(HEADER_SIZE);
      if (head[0] !== MAGIC[0] || head[1] !== MAGIC[1]) {
        if (!this.resync) {
          throw new ProtocolViolation(
            ErrorCode.MALFORMED_FRAME,
            `bad frame magic 0x${hex(head[0]!)}${hex(head[1]!)} (${notFractal(head)})`,
            true,
          );
        }
        this.skip(1);
        continue;
      }
      const length = readLength(head);
      if (length > this.maxFrame) {
        if (!this.resync) {
          throw new ProtocolViolation(
            ErrorCode.FRAME_TOO_LARGE,
            `frame length ${length} exceeds the limit of ${this.maxFrame} bytes`,
            true,
          );
        }
        this.skip(1);
        continue;
      }
      if (this.buffered < HEADER_SIZE + length) return undefined;
      const whole = this.peek(HEADER_SIZE + length);
      let frame: Frame;
      try {
        frame = pb.Frame.decode(whole.subarray(HEADER_SIZE, HEADER_SIZE + length));
      } catch (err) {
        if (!this.resync) {
          throw new ProtocolViolation(
            ErrorCode.MALFORMED_FRAME,
            `malformed frame of ${length} bytes: ${(err as Error).message}`,
            true,
          );
        }
        this.skip(1);
        continue;
      }
      this.consume(HEADER_SIZE + length);
      return frame;
    }
    return undefined;
  }

  /** The first n buffered bytes as one contiguous view (copies only when split). */
  private peek(n: number): Uint8Array {
    const first = this.chunks[0]!;
    if (first.length >= n) return first;
    const out = new Uint8Array(n);
    let off = 0;
    for (const c of this.chunks) {
      const take = Math.min(c.length, n - off);
      out.set(take === c.length ? c : c.subarray(0, take), off);
      off += take;
      if (off === n) break;
    }
    // Replace the merged prefix so the next peek does not copy again.
    this.dropFront(n);
    this.chunks.unshift(out);
    return out;
  }

  private consume(n: number): void {
    this.buffered -= n;
    this.dropFront(n);
  }

  /** Removes n bytes from the front of the chunk list (not from the count). */
  private dropFront(n: number): void {
    while (n > 0) {
      const c = this.chunks[0]!;
      if (c.length <= n) {
        this.chunks.shift();
        n -= c.length;
      } else {
        this.chunks[0] = c.subarray(n);
        n = 0;
      }
    }
  }

  private skip(n: number): void {
    this.skipped += n;
    this.consume(n);
  }
}

function hex(b: number): string {
  return b.toString(16).padStart(2, "0");
}

/**
 * Names the protocol a peer that sent `head` instead of a frame speaks, when
 * its first bytes give it away: the usual mistakes are a URL with the wrong
 * scheme or port (a web server, an ssh daemon, a TLS listener), or such a
 * client at one of our plain listeners.
 */
function notFractal(head: Uint8Array): string {
  const text = String.fromCharCode(...head.subarray(0, 4));
  if (/^(HTTP|GET |POST|PUT |HEAD|DELE|OPTI|PATC|CONN|<!DO|<htm|<HTM)/i.test(text)) return "the peer speaks HTTP: WebSocket listeners take ws:// or wss:// URLs";
  if (text === "SSH-") return "the peer speaks SSH, not the fractal protocol";
  if (head[0] === 0x16 && head[1] === 0x03) return "the peer speaks TLS: TLS listeners take tls:// or wss:// URLs";
  return "is the peer a fractal endpoint?";
}
