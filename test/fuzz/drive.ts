// Drives fuzz inputs into a running agent over many connections while a
// bystander connection pings it: the agent must stay up, keep answering the
// bystander promptly, and give back every fd when the fuzzing connections go.
import fs from "node:fs";
import net from "node:net";
import { AgentClient } from "../../host/client.js";
import { FrameDecoder, encodeFrame } from "../../proto/frame.js";
import { fdCount, rssMiB } from "../helpers/agent.js";
import { Rng, mutatedFrame, structuredFrame } from "./frames.js";

export interface FuzzOptions {
  /** unix:// URL (no key needed: inputs reach the request handlers). */
  unix: string;
  /** tcp:// URL: inputs meet the authentication gate. */
  tcp: string;
  pid: number;
  inputs: number;
  seed: number;
  /** Connections fuzzed at once. */
  concurrency?: number;
}

export interface FuzzReport {
  inputs: number;
  connections: number;
  /** Connections the agent closed on us (fatal protocol errors). */
  closedByAgent: number;
  /** Of the inputs, how many were damaged frames (the rest: structured ones). */
  mutated: number;
  /** Connections left waiting for the rest of a frame whose header over-promised. */
  stalled: number;
  pings: number;
  maxPingMs: number;
  agentAlive: boolean;
  fds: { before: number; after: number };
  /** What the agent's descriptors point at after the run, to tell a leak's kind. */
  fdTargets: string[];
  rssMiB: { before: number; after: number };
  seconds: number;
}

const FRAMES_PER_CONNECTION = 400;
const BATCH = 8;
const PROBE_ID = 0x7ffffff0;
const PROBE_WAIT_MS = 500;
const PROBE = encodeFrame({ request: { id: PROBE_ID, ping: { nonce: 1 } } });

export async function fuzzAgent(o: FuzzOptions): Promise<FuzzReport> {
  const t0 = performance.now();
  const bystander = await AgentClient.connect(o.unix);
  await bystander.ping();
  const before = { fds: fdCount(o.pid), rss: rssMiB(o.pid) };
  let sent = 0;
  let connections = 0;
  let closedByAgent = 0;
  let stalled = 0;
  let mutated = 0;
  let pings = 0;
  let maxPingMs = 0;
  let stop = false;
  const pinger = (async () => {
    while (!stop) {
      const ms = await Promise.race([bystander.ping(), new Promise<number>((r) => setTimeout(() => r(Infinity), 10_000))]);
      if (ms === Infinity) throw new Error(`the agent did not answer a ping within 10 s after ${sent} inputs (seed ${o.seed})`);
      pings++;
      maxPingMs = Math.max(maxPingMs, ms);
      await new Promise((r) => setTimeout(r, 50));
    }
  })();

  const worker = async (id: number) => {
    const r = new Rng(o.seed * 7919 + id);
    while (sent < o.inputs && !stop) {
      const viaTcp = r.chance(0.1);
      const url = new URL(viaTcp ? o.tcp : o.unix);
      const sock = viaTcp ? net.connect(Number(url.port), url.hostname) : net.connect(url.pathname);
      connections++;
      const ended = await new Promise<boolean>((resolve) => {
        let agentEnded = false;
        let closed = false;
        // Inputs count once the agent has read them: each batch is followed
        // by a ping whose answer proves the batch was consumed.
        const decoder = new FrameDecoder({ resync: true });
        let acked = () => {};
        sock.on("error", () => {});
        sock.on("data", (b: Buffer) => {
          try {
            if (decoder.push(b).some((f) => f.response?.id === PROBE_ID)) acked();
          } catch {
            // the agent's own frames are well-formed; junk here is ours echoed in an error
          }
        });
        sock.on("end", () => (agentEnded = true));
        sock.on("close", () => {
          closed = true;
          acked();
          resolve(agentEnded);
        });
        sock.on("connect", async () => {
          // Mostly a proper Hello, so what follows reaches the session and handlers.
          if (r.chance(0.95)) sock.write(encodeFrame({ hello: { minVersion: 1, maxVersion: 1, initialWindow: r.pick([0, 1, 4096, 1 << 20]) } }));
          // Structured connections go deep into sessions and handlers;
          // mutated ones end at their first damaged frame, as they should.
          const mutating = r.chance(0.3);
          const batchSize = mutating ? 1 : BATCH;
          let last = structuredFrame(r);
          for (let i = 0; i < FRAMES_PER_CONNECTION / batchSize && sent < o.inputs && !agentEnded && !closed; i++) {
            const batch: Uint8Array[] = [];
            for (let j = 0; j < batchSize; j++) {
              last = mutating ? mutatedFrame(r, last) : structuredFrame(r);
              batch.push(last);
            }
            let timer: ReturnType<typeof setTimeout> | undefined;
            const answered = new Promise<boolean>((res) => {
              acked = () => res(true);
              // A frame whose header promised more bytes than came swallows
              // the probe: the agent is rightly waiting for the rest.
              timer = setTimeout(() => res(false), PROBE_WAIT_MS);
            });
            sock.write(Buffer.concat([...batch, PROBE]));
            const ok = await answered;
            clearTimeout(timer);
            // A batch the agent cut short counts up to the frame that ended it.
            const n = agentEnded || closed || !ok ? 1 : batchSize;
            sent += n;
            if (mutating) mutated += n;
            if (!ok) {
              stalled++;
              break;
            }
          }
          sock.destroy();
        });
      });
      if (ended) closedByAgent++;
    }
  };
  try {
    await Promise.all(Array.from({ length: o.concurrency ?? 4 }, (_, i) => worker(i)));
  } finally {
    stop = true;
  }
  await pinger;
  // Give the agent time to reap what the last connections started (a
  // socket whose peer stops reading is destroyed 5 s after its end).
  let fdsAfter = fdCount(o.pid);
  for (let i = 0; i < 300 && fdsAfter > before.fds; i++) {
    await new Promise((r) => setTimeout(r, 100));
    fdsAfter = fdCount(o.pid);
  }
  const alive = (await bystander.ping()) >= 0;
  bystander.close();
  return {
    inputs: sent,
    connections,
    closedByAgent,
    stalled,
    mutated,
    pings,
    maxPingMs,
    agentAlive: alive,
    fds: { before: before.fds, after: fdsAfter },
    fdTargets: fs.readdirSync(`/proc/${o.pid}/fd`).map((n) => {
      try {
        return fs.readlinkSync(`/proc/${o.pid}/fd/${n}`);
      } catch {
        return "?";
      }
    }),
    rssMiB: { before: before.rss, after: rssMiB(o.pid) },
    seconds: (performance.now() - t0) / 1000,
  };
}
