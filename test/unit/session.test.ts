import { createHash, randomBytes } from "node:crypto";
import { describe, expect, it, vi } from "vitest";
import { ErrorCode, FractalError, ProtocolViolation } from "../../proto/errors.js";
import { parsePublicKeyBlob, signerFromPem } from "../../proto/auth.js";
import { generateKey, verifySignature } from "../../proto/ed25519.js";
import { FrameDecoder, encodeFrame } from "../../proto/frame.js";
import { Session, type RequestHandler } from "../../proto/session.js";
import { memoryLinkPair } from "../helpers/memory-link.js";
import { LinkEvents, type Link } from "../../proto/link.js";
import { signTicket, type Signer } from "../../proto/auth.js";
import { MAX_TICKETS, TICKET_TTL_MS, TicketBook } from "../../agent/auth/tickets.js";

const pingOnly: RequestHandler = async (req) => {
  if (req.ping) return { ping: { nonce: req.ping.nonce ?? 0, uptimeMs: 0 } };
  throw new FractalError(ErrorCode.UNKNOWN_MESSAGE, "test server serves only ping");
};

async function pair(opts: { window?: number; highWater?: number } = {}) {
  const [a, b] = memoryLinkPair(opts.highWater);
  const errors: ProtocolViolation[] = [];
  const server = Session.accept(b, { window: opts.window, onRequest: pingOnly, onProtocolError: (e) => errors.push(e) });
  const client = await Session.connect(a, { window: opts.window, onProtocolError: (e) => errors.push(e) });
  return { client, server, a, b, errors };
}

async function pingMs(client: Session): Promise<number> {
  const t0 = performance.now();
  const r = await client.request({ ping: { nonce: 5 } });
  expect(r.ping?.nonce).toBe(5);
  return performance.now() - t0;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("session", () => {
  it("completes the version handshake and answers requests", async () => {
    const { client, server } = await pair();
    expect(client.version).toBe(1);
    expect(server.version).toBe(1);
    expect(await pingMs(client)).toBeLessThan(1000);
  });

  it("reports a refusal the agent sent before the client's session existed (the CLI dials while its code loads)", async () => {
    const events = new LinkEvents();
    const link: Link = { description: "tcp test", ...events.register, write: () => true, close: () => {} };
    // The agent refuses at accept and hangs up, all before Session.connect runs.
    events.data(encodeFrame({ protocolError: { code: ErrorCode.RESOURCE_EXHAUSTED, message: "too many connections from 10.0.2.2", fatal: true } }));
    events.close();
    await expect(Session.connect(link, { handshakeTimeoutMs: 3000 })).rejects.toMatchObject({
      code: ErrorCode.RESOURCE_EXHAUSTED,
      message: expect.stringMatching(/too many connections from 10\.0\.2\.2/),
    });
  });

  it("gives up on a handshake nobody answers, and on a serial line says that another client may hold the line", async () => {
    const silent = (serial: boolean): Link => ({ description: serial ? "serial test" : "tcp test", ...new LinkEvents().register, write: () => true, close: () => {}, resync: serial });
    await expect(Session.connect(silent(false), { handshakeTimeoutMs: 300 })).rejects.toMatchObject({
      code: ErrorCode.UNAVAILABLE,
      message: "no handshake answer from the agent within 300 ms",
    });
    await expect(Session.connect(silent(true), { handshakeTimeoutMs: 1000 })).rejects.toMatchObject({
      code: ErrorCode.UNAVAILABLE,
      message: expect.stringMatching(/^no handshake answer from the agent within 1 s: is the agent up, and is no other fractal-host using the line\? \(a serial line carries one client at a time\)$/),
    });
  });

  it("refuses a client with no protocol version in common", async () => {
    const [a, b] = memoryLinkPair();
    Session.accept(b, { onRequest: pingOnly });
    const got: Buffer[] = [];
    a.onData((c) => got.push(Buffer.from(c)));
    a.write([encodeFrame({ hello: { minVersion: 7, maxVersion: 9 } })]);
    await sleep(20);
    const { FrameDecoder } = await import("../../proto/frame.js");
    const frames = new FrameDecoder().push(Buffer.concat(got));
    expect(frames[0]!.protocolError!.code).toBe(ErrorCode.UNSUPPORTED_VERSION);
    expect(frames[0]!.protocolError!.fatal).toBe(true);
    expect(frames[0]!.protocolError!.message).toMatch(/7\.\.9/);
  });

  it("moves 256 MiB through one stream to a randomly pausing reader, byte-exact, while ping answers within 50 ms", async () => {
    const { client, server } = await pair();
    const id = client.allocateStreamId();
    const inbound = client.openIn(id);
    const out = server.openOut(id);
    const total = 256 << 20;
    const chunk = randomBytes(1 << 20);
    const sent = createHash("sha256");
    const got = createHash("sha256");
    let received = 0;
    let paused = 0;
    const finished = new Promise<void>((resolve) => {
      inbound.pipeTo({
        data(c, done) {
          got.update(c);
          received += c.length;
          if (Math.random() < 0.02) {
            paused++;
            setTimeout(done, Math.random() * 5);
          } else done();
        },
        end: resolve,
      });
    });
    const producer = (async () => {
      for (let n = 0; n < total; n += chunk.length) {
        // Vary the bytes per chunk so reordering would change the hash.
        chunk.writeUInt32LE(n, 0);
        const c = Buffer.from(chunk);
        sent.update(c);
        await out.write(c);
      }
      out.end();
    })();
    const pings: number[] = [];
    let stop = false;
    const pinger = (async () => {
      while (!stop) {
        pings.push(await pingMs(client));
        await sleep(20);
      }
    })();
    await producer;
    await finished;
    stop = true;
    await pinger;
    expect(received).toBe(total);
    expect(got.digest("hex")).toBe(sent.digest("hex"));
    expect(paused).toBeGreaterThan(0);
    expect(pings.length).toBeGreaterThan(3);
    expect(Math.max(...pings)).toBeLessThan(50);
  });

  it("a stream whose reader stopped never stalls another stream or the control channel", async () => {
    const window = 64 * 1024;
    const { client, server } = await pair({ window });
    const stalledId = client.allocateStreamId();
    const liveId = client.allocateStreamId();
    client.openIn(stalledId).pipeTo({ data() {}, end() {} }); // never calls done
    let liveBytes = 0;
    const liveDone = new Promise<void>((resolve) =>
      client.openIn(liveId).pipeTo({
        data(c, done) {
          liveBytes += c.length;
          done();
        },
        end: resolve,
      }),
    );
    const stalled = server.openOut(stalledId);
    const live = server.openOut(liveId);
    const stuck = stalled.write(new Uint8Array(10 * window)); // cannot finish
    let stuckDone = false;
    void stuck.then(() => (stuckDone = true));
    for (let i = 0; i < 64; i++) await live.write(new Uint8Array(window));
    live.end();
    await liveDone;
    expect(liveBytes).toBe(64 * window);
    expect(await pingMs(client)).toBeLessThan(50);
    // The sender respected the credit: exactly one window went out, the rest waits.
    expect(stuckDone).toBe(false);
    expect(stalled.backlog).toBe(9 * window);
  });

  it("closes the connection when a peer sends beyond its credit", async () => {
    const window = 8192;
    const { client, server, errors } = await pair({ window });
    const id = 11;
    server.openIn(id);
    const closed = new Promise<FractalError>((r) => server.onClose(r));
    // Bypass the OutStream (which would respect credit) and write frames directly.
    client.link.write([encodeFrame({ data: { stream: id, payload: new Uint8Array(window + 1) } })]);
    const err = await closed;
    expect(err.code).toBe(ErrorCode.FLOW_CONTROL);
    expect(errors.some((e) => e.code === ErrorCode.FLOW_CONTROL && e.fatal)).toBe(true);
  });

  it("answers data for a stream that is not open with an error, and keeps serving", async () => {
    const { client, errors } = await pair();
    client.link.write([encodeFrame({ data: { stream: 999, payload: new Uint8Array(3) } })]);
    expect(await pingMs(client)).toBeLessThan(1000);
    const e = errors.find((x) => x.code === ErrorCode.STREAM_NOT_OPEN);
    expect(e?.message).toMatch(/stream 999/);
    expect(client.closed).toBe(false);
  });

  it("fails pending requests with UNAVAILABLE when the link goes away", async () => {
    const [a, b] = memoryLinkPair();
    Session.accept(b, { onRequest: () => new Promise(() => {}) }); // never answers
    const client = await Session.connect(a);
    const p = client.request({ ping: { nonce: 1 } });
    b.close();
    await expect(p).rejects.toMatchObject({ code: ErrorCode.UNAVAILABLE });
  });

  it("does not call a connection idle whose answer is made but not yet written when the idle clock runs out", async () => {
    // The answer is made in the same timer phase as the idle check, and
    // control frames leave in a batch on the next turn: the answer being
    // made is the connection's last activity, not the request before it.
    // Timers and the clock are fake; immediates (the link's delivery, the
    // batch's flush) stay real, so they run only when the test yields.
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date", "performance"] });
    const turn = () => new Promise((r) => setImmediate(r));
    try {
      const [a, b] = memoryLinkPair();
      const errors: ProtocolViolation[] = [];
      let asked = false;
      const slow: RequestHandler = () => {
        asked = true;
        return new Promise((resolve) => setTimeout(() => resolve({ ping: { nonce: 1, uptimeMs: 0 } }), 2000));
      };
      Session.accept(b, { onRequest: slow, idleTimeoutMs: 1000, onProtocolError: (e) => errors.push(e) });
      // Handshake and request at t=0: the idle clock starts at 0.
      let client: Session | undefined;
      void Session.connect(a, {}).then((c) => (client = c));
      for (let i = 0; i < 50 && !client; i++) await turn();
      const answer = client!.request({ ping: { nonce: 1 } });
      answer.catch(() => {});
      for (let i = 0; i < 50 && !asked; i++) await turn();
      expect(asked).toBe(true);
      // t=1 s: the idle clock finds the request in flight and starts again;
      // t=2 s: the answer is made, then the idle clock runs out.
      await vi.advanceTimersByTimeAsync(2100);
      expect((await answer).ping?.nonce).toBe(1);
      expect(errors).toEqual([]);
      // With nothing in flight it is idle, and is told so.
      await vi.advanceTimersByTimeAsync(1100);
      const late = client!.request({ ping: { nonce: 2 } });
      late.catch(() => {});
      await vi.advanceTimersByTimeAsync(5);
      await expect(late).rejects.toThrow(/idle for 1 s/);
    } finally {
      vi.useRealTimers();
    }
  });

  it("sends a response and the stream frames its handler made beside it in one write, in order", async () => {
    const [a, b] = memoryLinkPair();
    const server: Session = Session.accept(b, {
      onRequest: async (req) => {
        for (const id of [2, 4]) void server.openOut(id).end();
        return { ping: { nonce: req.ping?.nonce ?? 0, uptimeMs: 0 } };
      },
    });
    const client = await Session.connect(a);
    const writes: string[][] = [];
    const decoder = new FrameDecoder();
    const write = b.write.bind(b);
    b.write = (chunks) => {
      writes.push(decoder.push(Buffer.concat(chunks)).map((f) => (f as { kind?: string }).kind ?? "?"));
      return write(chunks);
    };
    const ends = [2, 4].map((id) => new Promise<void>((resolve) => client.openIn(id).pipeTo({ data: (_c, done) => done(), end: resolve, abort: () => resolve() })));
    expect((await client.request({ ping: { nonce: 3 } })).ping?.nonce).toBe(3);
    await Promise.all(ends);
    expect(writes).toEqual([["streamEnd", "streamEnd", "response"]]);
  });

  it("gives a handler that opens streams after its connection went away dead streams, not ones that wait forever", async () => {
    const { client, server } = await pair();
    client.close();
    await sleep(10);
    expect(server.closed).toBe(true);
    await expect(server.openOut(2).write(new Uint8Array([1]))).rejects.toMatchObject({ code: ErrorCode.UNAVAILABLE });
    const aborted = await new Promise<Error>((resolve) => server.openIn(4).pipeTo({ data: () => {}, end: () => {}, abort: resolve }));
    expect(aborted).toMatchObject({ code: ErrorCode.UNAVAILABLE });
  });
});

describe("authentication", () => {
  const keyPair = async () => {
    const k = generateKey("t");
    return { signer: await signerFromPem(k.privatePem, "t"), publicKey: parsePublicKeyBlob(k.publicLine.split(" ")[1]!, "t") };
  };
  /**
   * A server that knows one key (and keeps `tickets`, when given); the frames
   * its client wrote, in order, and who it served (and, with `nonces`, which ping).
   */
  function authPair(known: Uint8Array, opts: { tickets?: TicketBook; served?: string[]; nonces?: boolean } = {}) {
    const [a, b] = memoryLinkPair();
    const served = opts.served ?? [];
    const server = Session.accept(b, {
      onRequest: (req, s) => {
        const who = s.principal?.name ?? "nobody";
        served.push(opts.nonces ? `${who}:${req.ping?.nonce}` : who);
        return pingOnly(req, s);
      },
      authenticator: {
        verify: (key, sig, challenge) => {
          if (!Buffer.from(key).equals(Buffer.from(known)) || !verifySignature(key, sig, challenge)) {
            throw new FractalError(ErrorCode.UNAUTHENTICATED, "key not authorised");
          }
          return { name: "holder", allowed: ["all"] };
        },
        tickets: opts.tickets,
      },
    });
    const sent: string[] = [];
    const decoder = new FrameDecoder();
    const write = a.write.bind(a);
    a.write = (chunks) => {
      sent.push(...decoder.push(Buffer.concat(chunks)).map((f) => (f as { kind?: string }).kind ?? "?"));
      return write(chunks);
    };
    return { a, server, served, sent };
  }

  it("sends the first request right behind Auth, without waiting for AuthOk, and it is served as the key's", async () => {
    const k = await keyPair();
    const { a, served, sent } = authPair(k.publicKey);
    const client = await Session.connect(a, { signer: k.signer });
    // connect() returned once the proof was written: AuthOk is still on its way.
    expect(client.principal).toBeUndefined();
    expect(await pingMs(client)).toBeLessThan(1000);
    expect(sent).toEqual(["hello", "auth", "request"]);
    expect(served).toEqual(["holder"]);
    expect(client.principal?.name).toBe("holder");
  });

  it("writes the Hello before it loads the key, so the key's loading overlaps the round trip", async () => {
    const k = await keyPair();
    const { a, sent } = authPair(k.publicKey);
    let sentWhenAsked: string[] | undefined;
    // A key store that is slow and synchronous, as a cold CLI's first file read and import are.
    const signer = async () => {
      sentWhenAsked = [...sent];
      const until = performance.now() + 30;
      while (performance.now() < until);
      return k.signer;
    };
    const client = await Session.connect(a, { signer });
    expect(sentWhenAsked).toEqual(["hello"]);
    expect(await pingMs(client)).toBeLessThan(1000);
  });

  it("fails a request sent behind a refused Auth with the agent's refusal, and never serves it", async () => {
    const { a, served } = authPair((await keyPair()).publicKey);
    const client = await Session.connect(a, { signer: (await keyPair()).signer });
    await expect(client.request({ ping: { nonce: 1 } })).rejects.toMatchObject({
      code: ErrorCode.UNAUTHENTICATED,
      message: expect.stringMatching(/refused authentication: key not authorised/),
    });
    expect(served).toEqual([]);
    expect(client.closed).toBe(true);
  });

  describe("tickets", () => {
    /** An agent that knows one key and keeps a ticket book; each connection's writes and the pings it served. */
    function agent(known: Uint8Array) {
      const book = new TicketBook();
      const served: string[] = [];
      const connect = async (signer: Signer, ticket?: Uint8Array, keyLoads?: { n: number }) => {
        const { a, sent } = authPair(known, { tickets: book, served, nonces: true });
        let next: Uint8Array | undefined;
        let refused: boolean | undefined;
        const proof = ticket ? await signTicket(signer, ticket) : undefined;
        const load = async () => {
          if (keyLoads) keyLoads.n++;
          return signer;
        };
        const onTicket = (t: Uint8Array, r: boolean) => {
          next = t;
          refused = r;
        };
        const client = await Session.connect(a, { signer: load, ticket: proof, onTicket });
        return { client, sent, next: () => next, refused: () => refused };
      };
      return { book, served, connect };
    }
    const ping = async (client: Session, nonce: number) => (await client.request({ ping: { nonce } })).ping?.nonce;

    it("opens the next connection with the ticket the last one got, signed: its request goes right behind the Hello, served as the key's", async () => {
      const k = await keyPair();
      const ag = agent(k.publicKey);
      const first = await ag.connect(k.signer);
      expect(await ping(first.client, 1)).toBe(1);
      const ticket = first.next()!;
      expect(ticket).toHaveLength(32);
      // No ticket offered, so none refused.
      expect(first.refused()).toBe(false);
      const keyLoads = { n: 0 };
      const second = await ag.connect(k.signer, ticket, keyLoads);
      expect(await ping(second.client, 2)).toBe(2);
      expect(second.sent).toEqual(["hello", "request"]);
      // The signed ticket was all it needed: the key was never loaded.
      expect(keyLoads.n).toBe(0);
      expect(second.client.principal?.name).toBe("holder");
      expect(ag.served).toEqual(["holder:1", "holder:2"]);
      // A new ticket for the one spent.
      expect(Buffer.from(second.next()!).equals(Buffer.from(ticket))).toBe(false);
      expect(second.refused()).toBe(false);
    });

    it("takes a ticket once: a replayed Hello gets a challenge, and what went behind it goes again behind the Auth, served once", async () => {
      const k = await keyPair();
      const ag = agent(k.publicKey);
      const first = await ag.connect(k.signer);
      await ping(first.client, 1);
      const ticket = first.next()!;
      await ping((await ag.connect(k.signer, ticket)).client, 2);
      const replay = await ag.connect(k.signer, ticket);
      // More than fit behind a Hello: the rest wait for the agent's answer.
      const nonces = Array.from({ length: 100 }, (_, i) => 100 + i);
      expect(await Promise.all(nonces.map((n) => ping(replay.client, n)))).toEqual(nonces);
      expect(ag.served).toEqual(["holder:1", "holder:2", ...nonces.map((n) => `holder:${n}`)]);
      const early = 64; // MAX_EARLY_FRAMES
      expect(replay.sent).toEqual(["hello", ...Array(early).fill("request"), "auth", ...Array(100).fill("request")]);
      expect(replay.next()).toHaveLength(32);
      // The client learns its ticket was dead, and still gets a fresh one.
      expect(replay.refused()).toBe(true);
    });

    it("refuses a ticket offered by another key, even an authorised one's, and spends it", async () => {
      const k = await keyPair();
      const other = await keyPair();
      const ag = agent(k.publicKey);
      const first = await ag.connect(k.signer);
      await ping(first.client, 1);
      const ticket = first.next()!;
      // The other key is refused outright (not authorised); the ticket is gone after that attempt.
      const stranger = await ag.connect(other.signer, ticket);
      await expect(ping(stranger.client, 2)).rejects.toMatchObject({ code: ErrorCode.UNAUTHENTICATED });
      const owner = await ag.connect(k.signer, ticket);
      expect(await ping(owner.client, 3)).toBe(3);
      expect(owner.sent).toEqual(["hello", "request", "auth", "request"]);
      expect(ag.served).toEqual(["holder:1", "holder:3"]);
    });

    it("refuses a good ticket with a bad signature, and serves nothing behind it", async () => {
      const k = await keyPair();
      const ag = agent(k.publicKey);
      const first = await ag.connect(k.signer);
      await ping(first.client, 1);
      const forger: Signer = { publicKey: k.publicKey, sign: async () => new Uint8Array(64) };
      const forged = await ag.connect(forger, first.next()!);
      await expect(ping(forged.client, 2)).rejects.toMatchObject({
        code: ErrorCode.UNAUTHENTICATED,
        message: expect.stringMatching(/refused authentication: key not authorised/),
      });
      expect(ag.served).toEqual(["holder:1"]);
    });

    it("spends tickets once, for their key, until they expire, and keeps a bounded book", () => {
      let now = 1_000_000;
      const book = new TicketBook(() => now);
      const key = new Uint8Array(32).fill(7);
      const t = book.issue(key);
      expect(book.redeem(t, key)).toBe(true);
      expect(book.redeem(t, key)).toBe(false);
      const u = book.issue(key);
      expect(book.redeem(u, new Uint8Array(32))).toBe(false);
      expect(book.redeem(u, key)).toBe(false);
      const v = book.issue(key);
      now += TICKET_TTL_MS;
      expect(book.redeem(v, key)).toBe(false);
      for (let i = 0; i < MAX_TICKETS + 10; i++) book.issue(key);
      expect(book.size).toBe(MAX_TICKETS);
    });
  });
});

describe("serial lines", () => {
  it("a client ignores a HelloAck left over from another connection and takes the one that echoes its Hello", async () => {
    const [a, b] = memoryLinkPair();
    const line = { ...a, resync: true };
    Session.accept(b, { onRequest: pingOnly, name: "the agent" });
    const connecting = Session.connect(line, {});
    // An answer to an earlier host's Hello, still in the line: it asks for a
    // key this client does not have, and names another agent.
    a.inject(encodeFrame({ helloAck: { version: 1, agent: "stale", authChallenge: randomBytes(32), helloNonce: randomBytes(16) } }));
    const client = await connecting;
    expect(client.peerName).toBe("the agent");
    await pingMs(client);
    client.close();
  });
});
