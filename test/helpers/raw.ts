// A hand-driven protocol connection for tests that must send what no honest
// client would: raw bytes out, decoded frames in, and whether the agent hung up.
import fs from "node:fs";
import net from "node:net";
import { signerFromPem, type Signer } from "../../proto/auth.js";
import { parseEndpoint } from "../../proto/endpoint.js";
import { FrameDecoder, encodeFrame } from "../../proto/frame.js";
import type { Frame } from "../../proto/wire.js";

export interface Raw {
  send(b: Uint8Array): void;
  sendFrame(f: Frame): void;
  /** Waits for the next frame matching pred; fails if the agent hangs up first. */
  next(pred: (f: Frame) => boolean): Promise<Frame>;
  closed: Promise<void>;
  /** The socket itself, to stop reading from it or see what it holds back. */
  socket: net.Socket;
}

export async function rawTcp(url: string): Promise<Raw> {
  const ep = parseEndpoint(url);
  if (ep.kind !== "tcp") throw new Error(`expected a tcp:// URL, got ${url}`);
  const sock = net.connect(ep.port, ep.host);
  await new Promise((r) => sock.once("connect", r));
  const dec = new FrameDecoder();
  const frames: Frame[] = [];
  const waiters: (() => void)[] = [];
  sock.on("data", (b: Buffer) => {
    frames.push(...dec.push(b));
    for (const w of waiters.splice(0)) w();
  });
  const closed = new Promise<void>((r) => sock.once("close", () => r()));
  return {
    send: (b) => void sock.write(b),
    sendFrame: (f) => void sock.write(encodeFrame(f)),
    closed,
    socket: sock,
    async next(pred) {
      for (;;) {
        const i = frames.findIndex(pred);
        if (i >= 0) return frames.splice(i, 1)[0]!;
        const gone = closed.then(() => Promise.reject(new Error("closed before the expected frame")));
        await Promise.race([new Promise<void>((res) => waiters.push(res)), gone]);
      }
    },
  };
}

/** The test key ($FRACTAL_KEY), to sign with. */
export function testSigner(): Promise<Signer> {
  return signerFromPem(fs.readFileSync(process.env.FRACTAL_KEY!, "utf8"), "test key");
}

/** Hello, then Auth with the test key: a connection requests may use. Returns the agent's AuthOk. */
export async function handshake(r: Raw): Promise<NonNullable<Frame["authOk"]>> {
  r.sendFrame({ hello: { minVersion: 1, maxVersion: 1 } });
  const ack = (await r.next((f) => !!f.helloAck)).helloAck!;
  const key = await testSigner();
  r.sendFrame({ auth: { publicKey: key.publicKey, signature: await key.sign(ack.authChallenge!) } });
  return (await r.next((f) => !!f.authOk)).authOk!;
}

export interface FrameRelay {
  /** tcp:// URL a client connects to instead of the agent's. */
  url: string;
  /** Per connection, in order: the kinds of the frames the client wrote. */
  connections: string[][];
  close(): void;
}

/** A TCP relay to an agent that notes what each client wrote, frame by frame: what an honest client sends, seen from outside. */
export async function frameRelay(agentUrl: string): Promise<FrameRelay> {
  const ep = parseEndpoint(agentUrl);
  if (ep.kind !== "tcp") throw new Error(`expected a tcp:// URL, got ${agentUrl}`);
  const connections: string[][] = [];
  const server = net.createServer((client) => {
    const kinds: string[] = [];
    connections.push(kinds);
    const dec = new FrameDecoder();
    const upstream = net.connect(ep.port, ep.host);
    client.on("data", (b: Buffer) => {
      kinds.push(...dec.push(b).map((f) => (f as { kind?: string }).kind ?? "?"));
      upstream.write(b);
    });
    upstream.pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as net.AddressInfo;
  return { url: `tcp://127.0.0.1:${port}`, connections, close: () => server.close() };
}
