// A small gRPC client for containerd's API socket: HTTP/2 over the unix
// socket (node:http2), each message with gRPC's 5-byte prefix (a
// compression flag and a big-endian length), the status in the trailers.
// Unary and server-streaming calls, which is all `run --containerd` uses.
// containerd's namespace (and lease) travel as request metadata.
import http2 from "node:http2";
import net from "node:net";
import { ErrorCode, FractalError } from "../../proto/errors.js";

/** gRPC status codes as fractal's errors (NOT_FOUND stays "not found"). */
function errorFor(status: number, message: string, what: string): FractalError {
  const code = status === 5 ? ErrorCode.NOT_FOUND : status === 6 ? ErrorCode.ALREADY_EXISTS : status === 3 ? ErrorCode.INVALID_ARGUMENT : status === 14 ? ErrorCode.UNAVAILABLE : ErrorCode.INTERNAL;
  return new FractalError(code, `containerd ${what}: ${message || `gRPC status ${status}`}`);
}

const MAX_MESSAGE = 64 << 20;

export class GrpcClient {
  private constructor(
    private readonly session: http2.ClientHttp2Session,
    private readonly socket: string,
    readonly namespace: string,
  ) {}

  static connect(socket: string, namespace: string): Promise<GrpcClient> {
    return new Promise((resolve, reject) => {
      const s = http2.connect("http://containerd", { createConnection: () => net.connect(socket) });
      s.once("connect", () => resolve(new GrpcClient(s, socket, namespace)));
      s.once("error", (err) => reject(new FractalError(ErrorCode.UNAVAILABLE, `cannot reach containerd at ${socket}: ${err.message}`)));
    });
  }

  /** One call; resolves with every message the server sent (one for a unary call). */
  call(method: string, request: Uint8Array, metadata: Record<string, string> = {}): Promise<Uint8Array[]> {
    const body = Buffer.alloc(5 + request.length);
    body.writeUInt32BE(request.length, 1);
    body.set(request, 5);
    return new Promise((resolve, reject) => {
      const req = this.session.request({
        ":method": "POST",
        ":path": `/${method}`,
        "content-type": "application/grpc",
        te: "trailers",
        "containerd-namespace": this.namespace,
        ...metadata,
      });
      let buf = Buffer.alloc(0);
      const messages: Uint8Array[] = [];
      let status: number | undefined;
      let message = "";
      const fail = (err: Error) => reject(err instanceof FractalError ? err : new FractalError(ErrorCode.UNAVAILABLE, `containerd ${method} at ${this.socket}: ${err.message}`));
      req.on("response", (h) => {
        if (h["grpc-status"] !== undefined) {
          status = Number(h["grpc-status"]);
          message = decodeURIComponent(String(h["grpc-message"] ?? ""));
        }
      });
      req.on("trailers", (t) => {
        status = Number(t["grpc-status"] ?? 0);
        message = decodeURIComponent(String(t["grpc-message"] ?? ""));
      });
      req.on("data", (chunk: Buffer) => {
        buf = Buffer.concat([buf, chunk]);
        while (buf.length >= 5) {
          const len = buf.readUInt32BE(1);
          if (len > MAX_MESSAGE) {
            req.close();
            fail(new Error(`a ${len}-byte message is over the ${MAX_MESSAGE}-byte limit`));
            return;
          }
          if (buf.length < 5 + len) break;
          messages.push(new Uint8Array(buf.subarray(5, 5 + len)));
          buf = buf.subarray(5 + len);
        }
      });
      req.on("error", fail);
      req.on("end", () => {
        if (status && status !== 0) reject(errorFor(status, message, method.split("/").pop()!));
        else resolve(messages);
      });
      req.end(body);
    });
  }

  async unary(method: string, request: Uint8Array, metadata?: Record<string, string>): Promise<Uint8Array> {
    const [m] = await this.call(method, request, metadata);
    return m ?? new Uint8Array();
  }

  close(): void {
    this.session.close();
  }
}
