// Session: the multiplexer. It wires the frame codec to a Link, runs the
// version handshake, matches requests to responses, and schedules stream data
// within each stream's credit. See fractal.proto for the protocol primer.
//
// Scheduling rule: control frames (handshake, requests, responses, credit,
// stream ends, errors) are written at once; data frames are written only while
// the link is not backed up, round-robin across streams. So a stalled stream
// (no credit) or a slow link never delays a ping behind bulk bytes queued in
// this process.
import { newChallenge, ticketMessage, type Signer, type TicketProof } from "./auth.js";
import { Deadlines } from "./deadlines.js";
import { ErrorCode, FractalError, ProtocolViolation, codeName } from "./errors.js";
import { FrameDecoder, MAX_DATA_CHUNK, MAX_FRAME, encodeDataPrefix, encodeFrame } from "./frame.js";
import type { Link } from "./link.js";
import { InStream, OutStream, type StreamHost } from "./stream.js";
import { MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, pb, type Frame, type Request, type Response } from "./wire.js";

/** Credit each stream starts with unless the peer asks otherwise. */
export const DEFAULT_WINDOW = 4 << 20;
/** How long a peer has to complete the handshake. */
export const HANDSHAKE_TIMEOUT_MS = 10_000;
/** Serial links: how often an unanswered Hello is repeated. */
const HELLO_RESEND_MS = 300;
/**
 * Server: requests one connection may have unanswered at once. More are
 * answered RESOURCE_EXHAUSTED at once (as HTTP/2 refuses streams over
 * MAX_CONCURRENT_STREAMS) rather than queued, so a pipelining client cannot
 * make the agent hold work without bound, and no request that would have
 * completed is ever held behind the limit.
 */
export const MAX_IN_FLIGHT = 4096;
/**
 * Server: bytes of frames written after the link reported backpressure.
 * Past this the session stops reading from the peer until the link drains
 * (as ws pauses its socket): a client that sends requests and never reads
 * the answers meets TCP's window, not our memory.
 */
export const MAX_QUEUED_OUT = 1 << 20;
/**
 * Server: bytes read but not yet decoded (requests wait their turn, see
 * REQUEST_BATCH). Past this the session stops reading, so a peer that sends
 * faster than its requests are served meets TCP's window, not our memory.
 * One largest frame must fit.
 */
const MAX_INPUT_BACKLOG = 2 * MAX_FRAME;
/** Server, reliable links: a frame that began to arrive must be complete within this long. */
export const FRAME_TIMEOUT_MS = 30_000;
/**
 * Server: a connection with no request in flight, no open stream and no
 * frame in either direction for this long is closed. Pings count as activity, so a
 * client that wants an idle connection kept sends one now and then.
 */
export const IDLE_TIMEOUT_MS = 15 * 60_000;
/**
 * Server: requests dispatched from what one read brought before the answers
 * get a turn of the event loop. A read can hold tens of thousands of small
 * requests; served in one go they would all be answered before the link
 * could report backpressure.
 */
const REQUEST_BATCH = 64;
/**
 * Frames a client opening with a ticket writes before the agent's HelloAck
 * (the rest wait for it), and so the most an agent that refused the ticket
 * drops before the Auth.
 */
export const MAX_EARLY_FRAMES = 64;

export type ResponseBody = Omit<Response, "id">;
export type RequestBody = Omit<Request, "id">;
export type RequestHandler = (req: Request, session: Session) => Promise<ResponseBody>;

export interface SessionOptions {
  /** Credit granted to the peer for each stream we receive on. */
  window?: number;
  /** Largest frame payload we accept. */
  maxFrame?: number;
  /** Serial links: skip junk before a valid frame. */
  resync?: boolean;
  /** Name and version announced in the handshake. */
  name?: string;
  /** Client: how long to wait for HelloAck. */
  handshakeTimeoutMs?: number;
  features?: string[];
  /** Server only: serves each request; errors become Error responses. */
  onRequest?: RequestHandler;
  /** Server: connections must authenticate with a key this accepts. */
  authenticator?: Authenticator;
  /**
   * Client: answers the agent's challenge if it sends one. A function is
   * called while the Hello is in flight (its errors count only if the agent
   * asks for a key).
   */
  signer?: Signer | (() => Promise<Signer | undefined>);
  /**
   * Client: a ticket from this agent's last AuthOk, signed by the key it was
   * given to (signTicket). The Hello carries it, and requests go out without
   * waiting for the HelloAck. Not on serial links (a repeated Hello would
   * spend it).
   */
  ticket?: TicketProof;
  /**
   * Client: the ticket for the next connection, when the agent gives one;
   * `refused` when the Hello's own ticket was not taken (spent, expired, or
   * issued by an agent that has since restarted), so others kept with it
   * are likely dead too.
   */
  onTicket?: (ticket: Uint8Array, refused: boolean) => void;
  /** Non-fatal protocol errors from either side, for logs and tests. */
  onProtocolError?: (err: ProtocolViolation, fromPeer: boolean) => void;
  /** Server: see FRAME_TIMEOUT_MS; 0 turns it off. Serial links never time out a frame. */
  frameTimeoutMs?: number;
  /** Server: see IDLE_TIMEOUT_MS; 0 turns it off. */
  idleTimeoutMs?: number;
}

/** Who an authenticated connection belongs to, and what it may ask for. */
export interface Principal {
  name: string;
  /** Request types this connection may send; "all" allows every one. */
  allowed: readonly string[];
}

/** Server side of authentication: checks a key's answer to the challenge. */
export interface Authenticator {
  /** Returns who holds the key, or throws a FractalError saying why not. */
  verify(publicKey: Uint8Array, signature: Uint8Array, challenge: Uint8Array): Principal;
  /** One-use tickets for the next connection of a proven key; none means no tickets. */
  tickets?: Tickets;
}

/** The agent's tickets: each good for one connection of the key it was issued to. */
export interface Tickets {
  issue(publicKey: Uint8Array): Uint8Array;
  /** True once for a ticket issued to this key and not expired; it is spent either way. */
  redeem(ticket: Uint8Array, publicKey: Uint8Array): boolean;
}

/**
 * Client, between a Hello with a ticket and the agent's answer: what was
 * written behind the Hello (to write again behind an Auth if the agent
 * refused the ticket) and what waits.
 */
interface Early {
  written: Uint8Array[];
  held: Uint8Array[];
  holding: boolean;
}

type Pending = { resolve: (r: Response) => void; reject: (e: FractalError) => void };

export class Session implements StreamHost {
  private readonly decoder: FrameDecoder;
  private readonly window: number;
  private peerWindow = DEFAULT_WINDOW;
  private peerMaxFrame = MAX_FRAME;
  private handshaken = false;
  /** Hello answered and, where asked for, the key proven (server) or its proof sent (client): requests may flow. */
  private established = false;
  /** Set between HelloAck and Auth on a connection that must authenticate. */
  private challenge: Uint8Array | undefined;
  /** This connection's Hello.nonce: a client's HelloAck echoes it; a server knows a repeat of it from a new host's Hello. */
  private helloNonce: Uint8Array = new Uint8Array(0);
  /** Client: set from a Hello with a ticket until the agent's answer to it was dealt with. */
  private early: Early | undefined;
  /** Client: the Hello carried a ticket, so an AuthOk may follow the HelloAck unasked. */
  private ticketSent = false;
  /** Client: fails the connection if no HelloAck comes. */
  private helloTimer: ReturnType<typeof setTimeout> | undefined;
  /** Server: frames a refused ticket's client may still have written before its Auth (dropped). */
  private dropping = 0;
  /** Client: the key to answer a challenge with, or why there is none. */
  private signer: Promise<{ key?: Signer; err?: FractalError }> | undefined;
  private closedErr: FractalError | undefined;
  private readonly closeCbs: ((err: FractalError) => void)[] = [];
  private readonly ins = new Map<number, InStream>();
  private readonly outs = new Map<number, OutStream>();
  /** Highest stream id seen per parity, to tell "closed" (ignore) from "never opened" (error). */
  private readonly highestStream = [0, 0];
  private readonly ready: OutStream[] = [];
  private readonly readySet = new Set<OutStream>();
  private linkBlocked = false;
  /** Control frames of this tick, written together (see sendFrame). */
  private batch: Uint8Array[] = [];
  private batchBytes = 0;
  /** Bytes written since the link last reported backpressure (see MAX_QUEUED_OUT). */
  private queuedOut = 0;
  /** Server: more than MAX_QUEUED_OUT waits behind backpressure; requests wait until the link drains. */
  private outputBacked = false;
  /** Server: the link is paused (see steerReading). */
  private readingPaused = false;
  /** Server: requests whose handler has not answered yet. */
  private inFlight = 0;
  /** Server: the frame and idle timeouts. */
  private readonly deadlines: Deadlines | undefined;
  /** A batch of requests was served and the rest of the input waits for the next turn. */
  private continuing = false;
  private nextRequestId = 1;
  private nextStreamId: number;
  private readonly pending = new Map<number, Pending>();
  private handshakeDone!: (err?: FractalError) => void;
  /** Resolves when the handshake completed, rejects if it failed. */
  readonly ready$: Promise<void>;
  /** Negotiated values, valid after the handshake. */
  version = 0;
  features: string[] = [];
  peerName = "";
  /**
   * The authenticated key, once Auth succeeded; undefined on unauthenticated
   * links. A client learns it from AuthOk, which may come after connect().
   */
  principal: Principal | undefined;

  private constructor(
    readonly link: Link,
    readonly role: "client" | "server",
    private readonly opts: SessionOptions,
  ) {
    this.window = opts.window ?? DEFAULT_WINDOW;
    this.decoder = new FrameDecoder({ maxFrame: opts.maxFrame ?? MAX_FRAME, resync: opts.resync ?? link.resync });
    if (role === "server") {
      this.deadlines = new Deadlines({
        frameMs: link.resync ? 0 : (opts.frameTimeoutMs ?? FRAME_TIMEOUT_MS),
        idleMs: opts.idleTimeoutMs ?? IDLE_TIMEOUT_MS,
        partial: () => (this.readingPaused || this.outputBacked ? 0 : this.decoder.pending),
        busy: () => this.inFlight > 0 || this.ins.size > 0 || this.outs.size > 0,
        expired: (v) => this.violate(v),
      });
    }
    this.nextStreamId = role === "client" ? 1 : 2;
    this.ready$ = new Promise<void>((resolve, reject) => {
      this.handshakeDone = (err) => {
        if (!err) this.established = true;
        return err ? reject(err) : resolve();
      };
    });
    this.ready$.catch(() => {});
    link.onData((chunk) => this.onBytes(chunk));
    link.onDrain(() => {
      this.linkBlocked = false;
      this.queuedOut = 0;
      if (this.outputBacked) {
        this.outputBacked = false;
        this.steerReading();
        if (!this.continuing) this.takeInput();
      }
      this.pump();
    });
    link.onClose((err) => this.teardown(new FractalError(ErrorCode.UNAVAILABLE, err ? `connection lost: ${err.message}` : "connection closed")));
  }

  /** Client side: send Hello and wait for the agent's HelloAck. */
  static async connect(link: Link, opts: SessionOptions = {}): Promise<Session> {
    const s = new Session(link, "client", opts);
    s.helloNonce = crypto.getRandomValues(new Uint8Array(16));
    const t = link.resync ? undefined : opts.ticket;
    const proof = t ? { ticket: t.ticket, ticketAuth: { publicKey: t.publicKey, signature: t.signature } } : undefined;
    const hello = () =>
      s.sendFrame({
        hello: {
          minVersion: MIN_PROTOCOL_VERSION,
          maxVersion: PROTOCOL_VERSION,
          features: opts.features ?? [],
          initialWindow: s.window,
          maxFrame: opts.maxFrame ?? MAX_FRAME,
          client: opts.name ?? "fractal",
          nonce: s.helloNonce,
          ...proof,
        },
      });
    hello();
    // The key is read while the Hello travels, not after its answer: the
    // round trip is idle time for this side. The Hello leaves first, not
    // batched behind the key's loading (2 ms of a CLI's cold start).
    s.flushBatch();
    const timeoutMs = opts.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS;
    s.helloTimer = setTimeout(() => {
      const waited = timeoutMs >= 1000 ? `${Math.round(timeoutMs / 1000)} s` : `${timeoutMs} ms`;
      // A serial line opens whether or not an agent is there, and carries one
      // host's session at a time: QEMU's chardev leaves a second connection
      // unanswered until the first one ends.
      const why = link.resync ? ": is the agent up, and is no other fractal-host using the line? (a serial line carries one client at a time)" : "";
      s.fail(new FractalError(ErrorCode.UNAVAILABLE, `no handshake answer from the agent within ${waited}${why}`));
    }, timeoutMs);
    if (proof) {
      // Authenticated by the Hello itself, if the agent still holds the
      // ticket: requests go now (see onHelloAck for when it does not).
      s.early = { written: [], held: [], holding: false };
      s.ticketSent = true;
      s.handshakeDone();
      return s;
    }
    s.signer ??= s.resolveSigner();
    // A serial port drops bytes written while the guest has it closed (it
    // reopens the port after each host disconnect), so on serial links the
    // Hello is repeated until answered. The agent ignores a repeat of the
    // Hello it answered (same nonce); a HelloAck to an earlier attempt's
    // Hello is ignored here (see onHelloAck).
    const resend = link.resync ? setInterval(hello, HELLO_RESEND_MS) : undefined;
    try {
      await s.ready$;
    } finally {
      clearTimeout(s.helloTimer);
      clearInterval(resend);
    }
    return s;
  }

  /** Server side: wait for the client's Hello; requests go to opts.onRequest. */
  static accept(link: Link, opts: SessionOptions): Session {
    const s = new Session(link, "server", opts);
    // A serial line waits for its host as long as it takes: no timeout there.
    if (link.resync) return s;
    // The deadline covers authentication too: a peer that says Hello and
    // then never proves a key must not hold a connection open.
    const timer = setTimeout(() => {
      if (s.established) return;
      if (!s.handshaken) s.violate(new ProtocolViolation(ErrorCode.HANDSHAKE_REQUIRED, "no Hello within the handshake timeout", true));
      else s.violate(new ProtocolViolation(ErrorCode.UNAUTHENTICATED, "no Auth within the handshake timeout", true));
    }, HANDSHAKE_TIMEOUT_MS);
    timer.unref?.();
    s.ready$.then(
      () => {
        clearTimeout(timer);
        s.deadlines?.startIdle();
      },
      () => clearTimeout(timer),
    );
    return s;
  }

  get closed(): boolean {
    return this.closedErr !== undefined;
  }

  onClose(cb: (err: FractalError) => void): void {
    if (this.closedErr) cb(this.closedErr);
    else this.closeCbs.push(cb);
  }

  /** Client: one call, answered by exactly one response. */
  request(body: RequestBody): Promise<Response> {
    if (this.closedErr) return Promise.reject(this.closedErr);
    const id = this.nextRequestId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.sendFrame({ request: { ...body, id } });
    });
  }

  /** Client: the id of the request request() sent last (read right after it, to name that request in the next). */
  get lastRequestId(): number {
    return this.nextRequestId - 1;
  }

  /** A fresh stream id of this side's parity (client odd, server even). */
  allocateStreamId(): number {
    const id = this.nextStreamId;
    this.nextStreamId += 2;
    return id;
  }

  /**
   * Opens the receiving side of a stream; the peer may send at once. On a
   * connection already gone (a handler that ran after its peer left) the
   * stream is born aborted, so whoever reads it stops instead of waiting
   * forever with its files open.
   */
  openIn(id: number): InStream {
    const s = new InStream(id, this.window, this);
    if (this.closedErr) {
      s.abort(this.closedErr);
      return s;
    }
    this.noteStream(id);
    this.ins.set(id, s);
    return s;
  }

  /** Opens the sending side of a stream, with the peer's initial credit; born failed on a connection already gone (see openIn). */
  openOut(id: number): OutStream {
    // Before the agent answered a ticket's Hello its window is not known:
    // the stream's credit comes with the answer.
    const s = new OutStream(id, this.early ? 0 : this.peerWindow, this);
    if (this.closedErr) {
      s.fail(this.closedErr);
      return s;
    }
    this.noteStream(id);
    this.outs.set(id, s);
    return s;
  }

  /** Ends the connection after flushing what is queued. */
  close(): void {
    this.teardown(new FractalError(ErrorCode.UNAVAILABLE, "connection closed"));
    this.link.close();
  }

  // --- StreamHost ---------------------------------------------------------

  schedule(stream: OutStream): void {
    if (!this.readySet.has(stream)) {
      this.readySet.add(stream);
      this.ready.push(stream);
    }
    this.pump();
  }

  sendCredit(stream: number, credit: number): void {
    this.sendFrame({ windowUpdate: { stream, credit } });
  }

  sendReset(stream: number, reason: string): void {
    this.sendFrame({ streamReset: { stream, reason } });
  }

  forget(stream: number): void {
    this.ins.delete(stream);
    this.outs.delete(stream);
  }

  // --- sending --------------------------------------------------------------

  /**
   * Control frames go out together once this turn of the event loop is done
   * (its promise callbacks included): a response and the stream frames made
   * beside it leave as one segment. Apart, a user-mode network (passt) whose
   * host socket keeps Nagle on held the second back until the client's
   * delayed ACK, 40 ms later.
   */
  private sendFrame(frame: Frame): void {
    if (this.closedErr) return;
    // Made is sent, for the idle clock: an answer made in the timer phase
    // that checks idleness leaves only on the next turn, when the request
    // it answers no longer counts as in flight.
    this.deadlines?.active();
    const bytes = encodeFrame(frame);
    if (this.batch.length === 0) setImmediate(() => this.flushBatch());
    this.batch.push(bytes);
    this.batchBytes += bytes.length;
  }

  /** Writes the batched frames; before any data frame too, so that frames leave in the order they were made. */
  private flushBatch(): void {
    if (this.batch.length === 0) return;
    const chunks = this.batch;
    const n = this.batchBytes;
    this.batch = [];
    this.batchBytes = 0;
    if (this.early) return this.flushEarly(this.early, chunks);
    this.written(n, this.link.write(chunks));
  }

  /** Behind a ticket's Hello: at most MAX_EARLY_FRAMES go out, kept in case they must go again; the rest wait. */
  private flushEarly(e: Early, chunks: Uint8Array[]): void {
    const room = e.holding ? 0 : MAX_EARLY_FRAMES - e.written.length;
    if (chunks.length > room) {
      e.held.push(...chunks.slice(room));
      e.holding = true;
    }
    const out = chunks.slice(0, room);
    e.written.push(...out);
    this.writeFrames(out);
  }

  /** Hands whole frames to the link, if any, and accounts for their bytes. */
  private writeFrames(chunks: Uint8Array[]): void {
    if (chunks.length > 0) this.written(chunks.reduce((n, c) => n + c.length, 0), this.link.write(chunks));
  }

  /** Accounts for bytes handed to the link; a server stops reading while too much waits behind backpressure. */
  private written(n: number, accepted: boolean): void {
    this.deadlines?.active();
    if (!accepted) this.linkBlocked = true;
    if (!this.linkBlocked) return;
    this.queuedOut += n;
    if (this.role === "server" && !this.outputBacked && this.queuedOut > MAX_QUEUED_OUT) {
      this.outputBacked = true;
      this.steerReading();
    }
  }

  /**
   * Server: reads from the link only while its answers are not backed up
   * and what it read is not piling up undecoded. Clients always read: their
   * agent may be waiting for them to take what it sent.
   */
  private steerReading(): void {
    if (this.role !== "server" || !this.link.pause || !this.link.resume) return;
    const pause = this.outputBacked || this.decoder.pending > MAX_INPUT_BACKLOG;
    if (pause === this.readingPaused) return;
    this.readingPaused = pause;
    if (pause) {
      this.link.pause();
      // The peer is not stalling a frame: we stopped reading it.
      this.deadlines?.stopFrame();
    } else {
      this.link.resume();
    }
  }

  /** Writes data frames round-robin while the link accepts them. */
  private pump(): void {
    const maxChunk = Math.min(MAX_DATA_CHUNK, this.peerMaxFrame - 64);
    while (!this.linkBlocked && this.ready.length > 0 && !this.closedErr) {
      const s = this.ready.shift()!;
      this.readySet.delete(s);
      if (!s.sendable) continue;
      if (s.readyToEnd) {
        s.markEnded();
        this.sendFrame({ streamEnd: { stream: s.id } });
        continue;
      }
      const piece = s.take(maxChunk);
      const prefix = encodeDataPrefix(s.id, piece);
      this.flushBatch();
      this.written(prefix.length + piece.length, this.link.write([prefix, piece]));
      if (s.sendable && !this.readySet.has(s)) {
        this.readySet.add(s);
        this.ready.push(s);
      }
    }
  }

  // --- receiving ------------------------------------------------------------

  private onBytes(chunk: Uint8Array): void {
    if (this.closedErr) return;
    this.deadlines?.active();
    this.decoder.feed(chunk);
    this.steerReading();
    if (!this.continuing) this.takeInput();
  }

  /**
   * Decodes and dispatches what the decoder holds, in order. A server stops
   * while its answers are backed up (the rest stays undecoded until the
   * link drains) and after each REQUEST_BATCH requests, going on in the
   * next turn of the event loop.
   */
  private takeInput(): void {
    let requests = 0;
    let frames = 0;
    while (!this.closedErr && !this.outputBacked) {
      let f: Frame | undefined;
      try {
        f = this.decoder.next();
      } catch (err) {
        this.violate(err as ProtocolViolation);
        return;
      }
      if (!f) break;
      frames++;
      try {
        this.dispatch(f);
      } catch (err) {
        if (err instanceof ProtocolViolation) this.violate(err);
        else throw err;
      }
      if (f.request && this.role === "server" && ++requests >= REQUEST_BATCH) {
        this.continuing = true;
        // Complete frames wait for their turn: no peer is stalling one.
        this.deadlines?.stopFrame();
        this.steerReading();
        setImmediate(() => {
          this.continuing = false;
          this.takeInput();
        });
        return;
      }
    }
    this.steerReading();
    if (!this.closedErr) this.deadlines?.frame(frames > 0);
  }

  private dispatch(f: Frame & { kind?: string }): void {
    if (!this.handshaken && f.kind !== "hello" && f.kind !== "helloAck" && f.kind !== "protocolError") {
      // On a serial link, bytes of an earlier session can decode as a frame:
      // that is junk to skip, not a peer to reject.
      if (this.link.resync) return;
      throw new ProtocolViolation(ErrorCode.HANDSHAKE_REQUIRED, `expected Hello as the first frame, got ${f.kind ?? "an unknown frame"}`, true);
    }
    // Until the key is proven nothing but Auth gets through: no request, no
    // stream byte, no credit.
    const awaited = this.role === "server" ? "auth" : "authOk";
    if (this.challenge && f.kind !== awaited && f.kind !== "protocolError" && !(f.kind === "hello" && this.link.rehello)) {
      // Written behind a refused ticket: the client writes them again behind its Auth.
      if (this.dropping > 0) {
        this.dropping--;
        return;
      }
      throw new ProtocolViolation(ErrorCode.UNAUTHENTICATED, `authentication required: expected ${awaited}, got ${f.kind ?? "an unknown frame"}`, true);
    }
    switch (f.kind) {
      case "hello":
        return this.onHello(f.hello!);
      case "helloAck":
        return this.onHelloAck(f.helloAck!);
      case "request":
        return this.onRequest(f.request!);
      case "response":
        return this.onResponse(f.response!);
      case "data":
        return this.onData(f.data!.stream ?? 0, f.data!.payload ?? new Uint8Array(0));
      case "windowUpdate":
        return this.onWindowUpdate(f.windowUpdate!.stream ?? 0, f.windowUpdate!.credit ?? 0);
      case "streamEnd":
        return this.onStreamEnd(f.streamEnd!.stream ?? 0);
      case "streamReset":
        return this.onStreamReset(f.streamReset!.stream ?? 0, f.streamReset!.reason ?? "");
      case "protocolError":
        return this.onPeerError(f.protocolError!);
      case "auth":
        return this.onAuth(f.auth!);
      case "authOk":
        return this.onAuthOk(f.authOk!);
      default:
        // An unknown field number: the frame was well-formed, so we can go on.
        throw new ProtocolViolation(ErrorCode.UNKNOWN_MESSAGE, "unknown frame type (a newer peer?)", false);
    }
  }

  /** A nonce, not empty, equal to this connection's Hello's. */
  private isOwnNonce(nonce: Uint8Array | null | undefined): boolean {
    return !!nonce && nonce.length > 0 && Buffer.from(nonce).equals(this.helloNonce);
  }

  private onHello(h: NonNullable<Frame["hello"]>): void {
    if (this.role === "server" && this.handshaken && this.link.rehello) {
      // Our host repeating its Hello (it goes on until our answer reaches it):
      // restarting would drop the requests it sent once answered.
      if (this.isOwnNonce(h.nonce)) return;
      this.link.rehello(h, this.decoder.takeAll());
      return;
    }
    if (this.role !== "server" || this.handshaken) {
      throw new ProtocolViolation(ErrorCode.UNKNOWN_MESSAGE, "unexpected Hello", this.role !== "server");
    }
    const min = h.minVersion ?? 0;
    const max = h.maxVersion ?? 0;
    const version = Math.min(max, PROTOCOL_VERSION);
    if (version < Math.max(min, MIN_PROTOCOL_VERSION)) {
      throw new ProtocolViolation(
        ErrorCode.UNSUPPORTED_VERSION,
        `unsupported protocol version: client speaks ${min}..${max}, agent speaks ${MIN_PROTOCOL_VERSION}..${PROTOCOL_VERSION}`,
        true,
      );
    }
    this.version = version;
    this.peerWindow = clampWindow(h.initialWindow);
    this.peerMaxFrame = clampFrame(h.maxFrame);
    this.peerName = h.client ?? "";
    const ours = this.opts.features ?? [];
    this.features = (h.features ?? []).filter((x) => ours.includes(x));
    this.handshaken = true;
    this.helloNonce = h.nonce ?? new Uint8Array(0);
    const auth = this.opts.authenticator;
    const ticket = h.ticket ?? new Uint8Array(0);
    const proof = h.ticketAuth;
    let redeemedBy: Uint8Array | undefined;
    if (auth && ticket.length > 0 && proof && auth.tickets?.redeem(ticket, proof.publicKey ?? new Uint8Array(0))) {
      this.principal = this.authenticate(auth, proof, ticketMessage(ticket));
      redeemedBy = proof.publicKey!; // redeemed, so the key it was issued to
    } else if (auth) {
      this.challenge = newChallenge();
      // A client that opened with a ticket may have written requests behind
      // its Hello; it writes them again behind its Auth.
      if (ticket.length > 0) this.dropping = MAX_EARLY_FRAMES;
    }
    this.sendFrame({
      helloAck: {
        version,
        features: this.features,
        initialWindow: this.window,
        maxFrame: this.opts.maxFrame ?? MAX_FRAME,
        agent: this.opts.name ?? "fractal-agent",
        authChallenge: this.challenge,
        helloNonce: h.nonce ?? new Uint8Array(0),
      },
    });
    if (redeemedBy) this.sendAuthOk(redeemedBy);
    if (!this.challenge) this.handshakeDone();
  }

  private onAuth(a: NonNullable<Frame["auth"]>): void {
    const challenge = this.challenge;
    const auth = this.opts.authenticator;
    if (this.role !== "server" || !challenge || !auth) {
      throw new ProtocolViolation(ErrorCode.UNKNOWN_MESSAGE, "unexpected Auth", true);
    }
    this.principal = this.authenticate(auth, a, challenge);
    this.challenge = undefined;
    this.dropping = 0;
    this.sendAuthOk(a.publicKey!); // authenticate() refused a missing key
    this.handshakeDone();
  }

  /** The key's principal if its signature over `message` is good; else a fatal UNAUTHENTICATED. */
  private authenticate(auth: Authenticator, proof: { publicKey?: Uint8Array | null; signature?: Uint8Array | null }, message: Uint8Array): Principal {
    try {
      return auth.verify(proof.publicKey ?? new Uint8Array(0), proof.signature ?? new Uint8Array(0), message);
    } catch (err) {
      throw new ProtocolViolation(ErrorCode.UNAUTHENTICATED, err instanceof Error ? err.message : String(err), true);
    }
  }

  /** AuthOk for the key just proven, with its next ticket. */
  private sendAuthOk(publicKey: Uint8Array): void {
    const p = this.principal!;
    this.sendFrame({ authOk: { keyName: p.name, allowed: [...p.allowed], ticket: this.opts.authenticator?.tickets?.issue(publicKey) } });
  }

  private onAuthOk(a: NonNullable<Frame["authOk"]>): void {
    if (this.role !== "client" || (!this.challenge && !this.ticketSent)) throw new ProtocolViolation(ErrorCode.UNKNOWN_MESSAGE, "unexpected AuthOk", true);
    // A challenge after a ticket's Hello is the agent refusing the ticket.
    const refused = this.ticketSent && this.challenge !== undefined;
    this.challenge = undefined;
    this.ticketSent = false;
    this.principal = { name: a.keyName ?? "", allowed: a.allowed ?? [] };
    if (a.ticket && a.ticket.length > 0) this.opts.onTicket?.(a.ticket, refused);
  }

  private onHelloAck(a: NonNullable<Frame["helloAck"]>): void {
    // On a serial link a Hello from an earlier attempt may have been queued
    // in the VMM and answered too: a second HelloAck is harmless there.
    if (this.role === "client" && this.handshaken && this.link.resync) return;
    // Another connection's answer, left in the line: ours is still to come.
    // (An agent that does not echo the nonce is taken at its word.)
    const echo = a.helloNonce ?? new Uint8Array(0);
    if (this.role === "client" && this.link.resync && echo.length > 0 && !this.isOwnNonce(echo)) return;
    if (this.role !== "client" || this.handshaken) {
      throw new ProtocolViolation(ErrorCode.UNKNOWN_MESSAGE, "unexpected HelloAck", true);
    }
    const v = a.version ?? 0;
    if (v < MIN_PROTOCOL_VERSION || v > PROTOCOL_VERSION) {
      throw new ProtocolViolation(ErrorCode.UNSUPPORTED_VERSION, `agent chose protocol version ${v}, this client speaks ${MIN_PROTOCOL_VERSION}..${PROTOCOL_VERSION}`, true);
    }
    this.version = v;
    this.features = a.features ?? [];
    this.peerWindow = clampWindow(a.initialWindow);
    this.peerMaxFrame = clampFrame(a.maxFrame);
    this.peerName = a.agent ?? "";
    this.handshaken = true;
    clearTimeout(this.helloTimer);
    const challenge = a.authChallenge ?? new Uint8Array(0);
    const early = this.early;
    // No challenge after a ticket's Hello: the ticket was good (or this
    // link asks for no key), and what went behind the Hello is being served.
    if (early && challenge.length === 0) return this.endEarly(early, []);
    if (!early && challenge.length === 0) return this.handshakeDone();
    // The AuthOk must still come before anything else the agent sends (see
    // dispatch), but requests need not wait for it: the agent reads frames
    // in order and checks the Auth before it decodes the next one, so a
    // request written behind it is served only if the key was accepted, and
    // otherwise fails with the agent's refusal. One round trip fewer for
    // every connection. Requests wait for handshakeDone, so none is written
    // ahead of the Auth while the signature is being made.
    this.challenge = challenge;
    // A refused ticket: the agent drops what went behind the Hello, so it
    // goes again behind the Auth, and whatever is made meanwhile waits.
    if (early) early.holding = true;
    void this.answer(challenge).then((auth) => {
      if (!auth) return;
      if (early) return this.endEarly(early, [encodeFrame({ auth }), ...early.written]);
      this.sendFrame({ auth });
      this.handshakeDone();
    });
  }

  /** Signs the agent's challenge; undefined once the session failed because it could not. */
  private async answer(challenge: Uint8Array): Promise<{ publicKey: Uint8Array; signature: Uint8Array } | undefined> {
    const { key, err } = await (this.signer ??= this.resolveSigner());
    if (err) return void this.fail(err);
    if (!key) return void this.fail(new FractalError(ErrorCode.UNAUTHENTICATED, `${this.link.description}: the agent requires a key and none was given`));
    let signature: Uint8Array;
    try {
      signature = await key.sign(challenge);
    } catch (e) {
      return void this.fail(new FractalError(ErrorCode.UNAUTHENTICATED, `signing the agent's challenge: ${(e as Error).message}`));
    }
    if (this.closedErr) return undefined;
    return { publicKey: key.publicKey, signature };
  }

  /**
   * Ends the time behind a ticket's Hello: writes `first` (after a refusal,
   * the Auth and again what went behind the Hello), then what waited, and
   * gives the streams opened meanwhile (every one open: none is older) the
   * agent's window.
   */
  private endEarly(e: Early, first: Uint8Array[]): void {
    this.flushBatch();
    this.early = undefined;
    this.writeFrames([...first, ...e.held]);
    for (const s of this.outs.values()) {
      s.credit += this.peerWindow;
      if (s.sendable) this.schedule(s);
    }
  }

  private async resolveSigner(): Promise<{ key?: Signer; err?: FractalError }> {
    try {
      return { key: typeof this.opts.signer === "function" ? await this.opts.signer() : this.opts.signer };
    } catch (err) {
      return { err: err instanceof FractalError ? err : new FractalError(ErrorCode.UNAUTHENTICATED, String(err)) };
    }
  }

  private onRequest(req: Request): void {
    const id = req.id ?? 0;
    const handler = this.opts.onRequest;
    if (this.role !== "server" || !handler) {
      throw new ProtocolViolation(ErrorCode.UNKNOWN_MESSAGE, "this side serves no requests", false);
    }
    if (this.inFlight >= MAX_IN_FLIGHT) {
      this.sendFrame({ response: { id, error: { code: ErrorCode.RESOURCE_EXHAUSTED, message: `${MAX_IN_FLIGHT} requests are already in flight on this connection: wait for answers before sending more` } } });
      return;
    }
    this.inFlight++;
    const reply = (body: ResponseBody) => {
      this.inFlight--;
      this.sendFrame({ response: { ...body, id } });
    };
    // The handler runs synchronously up to its first await, so streams named
    // by the request are open before the next frame (maybe their data) lands.
    let p: Promise<ResponseBody>;
    try {
      p = handler(req, this);
    } catch (err) {
      p = Promise.reject(err);
    }
    p.then(reply, (err: unknown) => {
      const e = err instanceof FractalError ? err : new FractalError(ErrorCode.INTERNAL, err instanceof Error ? err.message : String(err));
      reply({ error: { code: e.code, message: e.message } });
    });
  }

  private onResponse(res: Response): void {
    const id = res.id ?? 0;
    const p = this.pending.get(id);
    if (!p) throw new ProtocolViolation(ErrorCode.UNKNOWN_MESSAGE, `response to unknown request ${id}`, false);
    this.pending.delete(id);
    p.resolve(res);
  }

  private onData(id: number, payload: Uint8Array): void {
    const s = this.ins.get(id);
    if (!s) {
      if (this.wasOpen(id) && !this.outs.has(id)) return; // raced with our reset
      throw new ProtocolViolation(ErrorCode.STREAM_NOT_OPEN, `data for stream ${id}, which is not open for receiving`, false);
    }
    if (payload.length > s.remoteCredit) {
      throw new ProtocolViolation(ErrorCode.FLOW_CONTROL, `stream ${id}: ${payload.length} bytes sent with only ${s.remoteCredit} bytes of credit`, true);
    }
    s.receive(payload);
  }

  private onWindowUpdate(id: number, credit: number): void {
    const s = this.outs.get(id);
    if (!s) {
      if (this.wasOpen(id)) return; // credit for a stream we already ended
      throw new ProtocolViolation(ErrorCode.STREAM_NOT_OPEN, `credit for stream ${id}, which is not open for sending`, false);
    }
    if (s.credit + credit > 0xffffffff) {
      throw new ProtocolViolation(ErrorCode.FLOW_CONTROL, `stream ${id}: credit overflow`, true);
    }
    s.credit += credit;
    if (s.sendable) this.schedule(s);
  }

  private onStreamEnd(id: number): void {
    const s = this.ins.get(id);
    if (!s) {
      if (this.wasOpen(id) && !this.outs.has(id)) return;
      throw new ProtocolViolation(ErrorCode.STREAM_NOT_OPEN, `end of stream ${id}, which is not open for receiving`, false);
    }
    s.receiveEnd();
  }

  private onStreamReset(id: number, reason: string): void {
    const s = this.outs.get(id);
    if (!s) return; // already finished on our side: nothing to stop
    s.fail(new FractalError(ErrorCode.STREAM_NOT_OPEN, `peer reset stream ${id}: ${reason}`), reason);
  }

  private onPeerError(e: NonNullable<Frame["protocolError"]>): void {
    const v = new ProtocolViolation(e.code ?? ErrorCode.ERROR_UNSPECIFIED, e.message ?? "", e.fatal ?? false);
    this.opts.onProtocolError?.(v, true);
    if (v.fatal || !this.handshaken) {
      const what = v.code === ErrorCode.UNAUTHENTICATED ? "the agent refused authentication" : `protocol error from peer (${codeName(v.code)})`;
      this.teardown(new FractalError(v.code, `${what}: ${v.message}`));
      this.link.close();
    }
  }

  /** Reports a violation to the peer; closes the link when it is fatal. */
  private violate(v: ProtocolViolation): void {
    this.opts.onProtocolError?.(v, false);
    this.sendFrame({ protocolError: { code: v.code, message: v.message, fatal: v.fatal } });
    if (v.fatal) {
      this.teardown(new FractalError(v.code, v.message));
      this.link.close();
    }
  }

  private noteStream(id: number): void {
    const parity = id & 1;
    if (id > this.highestStream[parity]!) this.highestStream[parity] = id;
  }

  private wasOpen(id: number): boolean {
    return id !== 0 && id <= this.highestStream[id & 1]!;
  }

  /** Ends the session with `err`; torn down before the link closes, whose close event (synchronous on some links) would report a plain "connection closed" instead. */
  private fail(err: FractalError): void {
    this.teardown(err);
    this.link.close();
  }

  private teardown(err: FractalError): void {
    if (this.closedErr) return;
    // What this tick said (a fatal protocolError, a last response) goes out before the link closes.
    this.flushBatch();
    this.closedErr = err;
    clearTimeout(this.helloTimer);
    this.deadlines?.stop();
    this.handshakeDone(err);
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    for (const s of [...this.ins.values()]) s.abort(err);
    for (const s of [...this.outs.values()]) s.fail(err);
    this.ins.clear();
    this.outs.clear();
    for (const cb of this.closeCbs) cb(err);
  }
}

function clampWindow(w: number | null | undefined): number {
  // A zero or absurd window from the peer would deadlock or overflow.
  if (!w) return DEFAULT_WINDOW;
  return Math.min(Math.max(w, 4096), 1 << 30);
}

function clampFrame(f: number | null | undefined): number {
  if (!f) return MAX_FRAME;
  return Math.min(Math.max(f, 4096), MAX_FRAME);
}
