// Where the CLI keeps the tickets agents give its key (agent/auth/tickets.ts),
// already signed: a small pool per agent address and key file, under the state
// directory, mode 0600 in a 0700 directory, as the key itself is kept. The
// next connection to that agent opens with one and needs neither a
// challenge's round trip nor the key (loading and using it is ~4 ms of a cold
// CLI). Each CLI takes its ticket out of the pool before offering it, so CLIs
// started together (xargs -P, a script's `&`) each open with a ticket of
// their own instead of all offering the one the first of them spends. A lost
// or stale ticket costs that round trip and nothing more, so nothing here
// ever fails a command.
import fs from "node:fs";
import path from "node:path";
import { CHALLENGE_BYTES, signTicket, type Signer, type TicketProof } from "../proto/auth.js";
import { ticketsDir } from "./vm/state.js";

const PROOF_BYTES = CHALLENGE_BYTES + 32 + 64;
/** Tickets a pool holds: as many CLIs started together each open with one. */
export const POOL_SIZE = 8;
/** A temporary or claimed file older than this was left by a CLI that died on it. */
const LEFTOVER_MS = 60_000;

export interface TicketSlot {
  /** A signed ticket kept from an earlier connection, taken out of the pool: no other CLI offers it. */
  readonly proof: TicketProof | undefined;
  /**
   * Signs the agent's next ticket and adds it to the pool; settles once
   * written (or given up). `refused`: this connection's own ticket was not
   * taken, so the pool's others (kept before) are dropped: they are most
   * likely from an agent that has since restarted, each another round trip.
   */
  keep(ticket: Uint8Array, key: Promise<Signer | undefined>, refused?: boolean): Promise<void>;
}

/**
 * The slot for this agent and key file. A key file replaced (made again with
 * keygen) gets a new slot: a proof made by the old key would be refused.
 */
export function ticketSlot(address: string, keyFile: string): TicketSlot | undefined {
  let id: string;
  try {
    const st = fs.statSync(keyFile);
    id = `${address}\n${path.resolve(keyFile)}\n${st.dev}:${st.ino}:${st.mtimeMs}:${st.size}`;
  } catch {
    return undefined; // no key, so nothing to sign a ticket with
  }
  const dir = path.join(ticketsDir(), slotName(id));
  return {
    proof: claim(dir),
    async keep(ticket, key, refused = false) {
      try {
        const signer = await key;
        if (!signer || ticket.length !== CHALLENGE_BYTES) return;
        const p = await signTicket(signer, ticket);
        makeDir(dir);
        if (refused) for (const name of kept(dir)) removeQuietly(path.join(dir, name));
        // Names sort by age (microseconds); renamed into place, so a concurrent CLI sees the whole ticket or none.
        const us = Math.round((performance.timeOrigin + performance.now()) * 1000);
        const name = `${us.toString(36).padStart(11, "0")}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
        const tmp = path.join(dir, `.${name}`);
        fs.writeFileSync(tmp, Buffer.concat([p.ticket, p.publicKey, p.signature]), { mode: 0o600 });
        fs.renameSync(tmp, path.join(dir, name));
        prune(dir);
      } catch {
        // the next connection asks for a challenge instead
      }
    },
  };
}

/** Takes the newest ticket out of the pool: of CLIs racing for one, the rename goes to one alone. */
function claim(dir: string): TicketProof | undefined {
  let names: string[];
  try {
    names = kept(dir);
  } catch {
    return undefined; // none yet
  }
  for (const name of names.reverse()) {
    const mine = path.join(dir, `.claimed-${process.pid}-${name}`);
    let b: Buffer;
    try {
      fs.renameSync(path.join(dir, name), mine);
      b = fs.readFileSync(mine);
    } catch {
      continue; // another CLI took it first
    } finally {
      removeQuietly(mine);
    }
    if (b.length !== PROOF_BYTES) continue;
    return {
      ticket: new Uint8Array(b.subarray(0, CHALLENGE_BYTES)),
      publicKey: new Uint8Array(b.subarray(CHALLENGE_BYTES, CHALLENGE_BYTES + 32)),
      signature: new Uint8Array(b.subarray(CHALLENGE_BYTES + 32)),
    };
  }
  return undefined;
}

/** The pool's tickets, oldest first (temporary and claimed files start with a dot). */
function kept(dir: string): string[] {
  return fs
    .readdirSync(dir)
    .filter((n) => !n.startsWith("."))
    .sort();
}

function makeDir(dir: string): void {
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    // An older CLI kept one ticket as a plain file where the pool now goes.
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    fs.rmSync(dir, { force: true });
    fs.mkdirSync(dir, { mode: 0o700 });
  }
}

/** Drops the oldest tickets past POOL_SIZE, and what CLIs that died mid-way left behind. */
function prune(dir: string): void {
  const names = kept(dir);
  for (const name of names.slice(0, Math.max(0, names.length - POOL_SIZE))) removeQuietly(path.join(dir, name));
  const now = Date.now();
  for (const name of fs.readdirSync(dir)) {
    if (!name.startsWith(".")) continue;
    const file = path.join(dir, name);
    try {
      if (now - fs.statSync(file).mtimeMs > LEFTOVER_MS) removeQuietly(file);
    } catch {
      // gone already
    }
  }
}

function removeQuietly(file: string): void {
  try {
    fs.unlinkSync(file);
  } catch {
    // taken or removed by another CLI
  }
}

/** A short file name for the slot (FNV-1a, two lanes): no node:crypto on the exec path. */
function slotName(s: string): string {
  let a = 0x811c9dc5;
  let b = 0x01000193;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193) >>> 0;
    b = Math.imul(b ^ c, 0x811c9dc5 | 1) >>> 0;
  }
  return a.toString(16).padStart(8, "0") + b.toString(16).padStart(8, "0");
}
