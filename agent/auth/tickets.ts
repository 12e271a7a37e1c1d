// One-use tickets: each AuthOk hands the key a fresh one, and that key's next
// connection may open with it (signed) instead of waiting a round trip for a
// challenge. Like a challenge it is random and good once, so a recorded
// Hello is useless after its first use; unlike one it lives across
// connections, so it expires, and the book holding them is bounded.
import { newChallenge } from "../../proto/auth.js";
import type { Tickets } from "../../proto/session.js";

export const TICKET_TTL_MS = 10 * 60_000;
/** Tickets held at once; the oldest goes first (only proven keys get one, so strangers cannot fill it). */
export const MAX_TICKETS = 4096;

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

export class TicketBook implements Tickets {
  private readonly held = new Map<string, { key: string; expires: number }>();

  constructor(private readonly now: () => number = Date.now) {}

  issue(publicKey: Uint8Array): Uint8Array {
    const ticket = newChallenge();
    this.held.set(hex(ticket), { key: hex(publicKey), expires: this.now() + TICKET_TTL_MS });
    if (this.held.size > MAX_TICKETS) this.held.delete(this.held.keys().next().value!);
    return ticket;
  }

  redeem(ticket: Uint8Array, publicKey: Uint8Array): boolean {
    const id = hex(ticket);
    const entry = this.held.get(id);
    // Spent by any attempt: one who saw it go by cannot try it twice.
    this.held.delete(id);
    return entry !== undefined && entry.expires > this.now() && entry.key === hex(publicKey);
  }

  get size(): number {
    return this.held.size;
  }
}
