// ttrpc, containerd's RPC for shims, as its PROTOCOL.md describes it: a
// 10-byte header (data length and stream id, big-endian uint32; message
// type; flags) and at most 4 MiB of data. A Request frame carries a
// ttrpc.Request naming service and method; the server answers on the same
// (odd, client-chosen) stream id with one Response frame holding the reply
// or a google.rpc.Status. Only unary calls: the Task and Events services
// use nothing else.
import net from "node:net";
import { ttrpc } from "./gen/containerd.js";

export const HEADER_SIZE = 10;
export const MAX_DATA = 4 << 20;
export const TYPE_REQUEST = 1;
export const TYPE_RESPONSE = 2;
export const TYPE_DATA = 3;

/** gRPC status codes containerd maps to its errdefs (NotFound, AlreadyExists, ...). */
export const Code = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  FAILED_PRECONDITION: 9,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
} as const;
export type Code = (typeof Code)[keyof typeof Code];

/** An error with a gRPC status code: what a handler throws and a client call rejects with. */
export class TtrpcError extends Error {
  constructor(
    readonly code: Code,
    message: string,
  ) {
    super(message);
    this.name = "TtrpcError";
  }
}

export interface Frame {
  streamId: number;
  type: number;
  flags: number;
  data: Uint8Array;
}

export function encodeFrame(streamId: number, type: number, flags: number, data: Uint8Array): Buffer {
  if (data.length > MAX_DATA) throw new TtrpcError(Code.INVALID_ARGUMENT, `ttrpc message of ${data.length} bytes is over the ${MAX_DATA}-byte limit`);
  const out = Buffer.allocUnsafe(HEADER_SIZE + data.length);
  out.writeUInt32BE(data.length, 0);
  out.writeUInt32BE(streamId, 4);
  out[8] = type;
  out[9] = flags;
  out.set(data, HEADER_SIZE);
  return out;
}

/** Splits a byte stream into frames; an oversized length is refused before its data is buffered. */
export class FrameReader {
  private buf: Buffer = Buffer.alloc(0);

  push(chunk: Uint8Array): Frame[] {
    this.buf = this.buf.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.buf, chunk]);
    const frames: Frame[] = [];
    while (this.buf.length >= HEADER_SIZE) {
      const len = this.buf.readUInt32BE(0);
      if (len > MAX_DATA) throw new TtrpcError(Code.INVALID_ARGUMENT, `ttrpc frame of ${len} bytes is over the ${MAX_DATA}-byte limit`);
      if (this.buf.length < HEADER_SIZE + len) break;
      frames.push({
        streamId: this.buf.readUInt32BE(4),
        type: this.buf[8]!,
        flags: this.buf[9]!,
        data: this.buf.subarray(HEADER_SIZE, HEADER_SIZE + len),
      });
      this.buf = this.buf.subarray(HEADER_SIZE + len);
    }
    return frames;
  }
}

/** A method's handler: the request's payload in, the reply's payload out (or a TtrpcError). */
export type Handler = (payload: Uint8Array) => Promise<Uint8Array>;

export interface Decoder<T> {
  decode(b: Uint8Array): T;
}
export interface Encoder<T> {
  encode(m: T): { finish(): Uint8Array };
}

/** Wraps a typed handler as a payload handler with the generated request and reply codecs. */
export function typed<Req, Res>(req: Decoder<Req>, res: Encoder<Res>, fn: (r: Req) => Promise<Res>): Handler {
  return async (payload) => {
    let r: Req;
    try {
      r = req.decode(payload);
    } catch (err) {
      throw new TtrpcError(Code.INVALID_ARGUMENT, `undecodable request: ${(err as Error).message}`);
    }
    return res.encode(await fn(r)).finish();
  };
}

export class TtrpcServer {
  private readonly methods = new Map<string, Handler>();
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();

  constructor() {
    this.server = net.createServer((s) => this.serve(s));
  }

  register(service: string, method: string, h: Handler): void {
    this.methods.set(`${service}/${method}`, h);
  }

  listen(path: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(path, () => {
        this.server.off("error", reject);
        resolve();
      });
    });
  }

  close(): void {
    this.server.close();
    for (const s of this.sockets) s.destroy();
  }

  private serve(sock: net.Socket): void {
    this.sockets.add(sock);
    const reader = new FrameReader();
    sock.on("data", (chunk: Buffer) => {
      let frames: Frame[];
      try {
        frames = reader.push(chunk);
      } catch {
        sock.destroy(); // a peer that breaks framing cannot be resynchronised
        return;
      }
      for (const f of frames) if (f.type === TYPE_REQUEST) void this.answer(sock, f);
      // Data frames belong to streaming calls, which nothing here offers.
    });
    sock.on("error", () => {});
    sock.on("close", () => this.sockets.delete(sock));
  }

  private async answer(sock: net.Socket, f: Frame): Promise<void> {
    let res: ttrpc.IResponse;
    try {
      const req = ttrpc.Request.decode(f.data);
      const h = this.methods.get(`${req.service}/${req.method}`);
      if (!h) throw new TtrpcError(Code.UNIMPLEMENTED, `${req.service}: method ${req.method} not implemented`);
      const payload = await h(req.payload);
      // An empty reply has no payload field at all, as Go's ttrpc writes it.
      res = payload.length > 0 ? { payload } : {};
    } catch (err) {
      const code = err instanceof TtrpcError ? err.code : Code.UNKNOWN;
      res = { status: { code, message: (err as Error).message } };
    }
    if (!sock.destroyed) sock.write(encodeFrame(f.streamId, TYPE_RESPONSE, 0, ttrpc.Response.encode(res).finish()));
  }
}

/** A ttrpc client on one connection; calls run concurrently on odd stream ids. */
export class TtrpcClient {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (b: Uint8Array) => void; reject: (e: Error) => void }>();
  private closed?: Error;

  private constructor(private readonly sock: net.Socket) {
    const reader = new FrameReader();
    sock.on("data", (chunk: Buffer) => {
      let frames: Frame[];
      try {
        frames = reader.push(chunk);
      } catch (err) {
        this.fail(err as Error);
        return;
      }
      for (const f of frames) {
        const p = this.pending.get(f.streamId);
        if (f.type !== TYPE_RESPONSE || !p) continue;
        this.pending.delete(f.streamId);
        const res = ttrpc.Response.decode(f.data);
        if (res.status && res.status.code) p.reject(new TtrpcError(res.status.code as Code, res.status.message ?? ""));
        else p.resolve(res.payload ?? new Uint8Array());
      }
    });
    sock.on("error", (err) => this.fail(err));
    sock.on("close", () => this.fail(new TtrpcError(Code.UNAVAILABLE, "ttrpc connection closed")));
  }

  /** `address` as containerd gives it: a path, or unix://path. */
  static connect(address: string, timeoutMs = 5000): Promise<TtrpcClient> {
    const path = address.replace(/^unix:\/\//, "");
    return new Promise((resolve, reject) => {
      const sock = net.connect(path);
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new TtrpcError(Code.DEADLINE_EXCEEDED, `ttrpc: no connection to ${path} within ${timeoutMs} ms`));
      }, timeoutMs);
      sock.once("connect", () => {
        clearTimeout(timer);
        resolve(new TtrpcClient(sock));
      });
      sock.once("error", (err) => {
        clearTimeout(timer);
        reject(new TtrpcError(Code.UNAVAILABLE, `ttrpc: cannot connect to ${path}: ${err.message}`));
      });
    });
  }

  call(service: string, method: string, payload: Uint8Array, timeoutMs = 10_000): Promise<Uint8Array> {
    if (this.closed) return Promise.reject(this.closed);
    const id = this.nextId;
    this.nextId += 2;
    const req = ttrpc.Request.encode({ service, method, payload, timeoutNano: timeoutMs * 1e6 }).finish();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new TtrpcError(Code.DEADLINE_EXCEEDED, `${service}/${method}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (b) => (clearTimeout(timer), resolve(b)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
      this.sock.write(encodeFrame(id, TYPE_REQUEST, 0, req));
    });
  }

  close(): void {
    this.sock.destroy();
  }

  private fail(err: Error): void {
    this.closed ??= err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }
}
