// Where the CLI keeps the tickets agents give its key (agent/auth/tickets.ts),
// already signed: one file per agent address and key file, under the state
// directory, mode 0600 in a 0700 directory, as the key itself is kept. The
// next connection to that agent opens with it and needs neither a challenge's
// round trip nor the key (loading and using it is ~4 ms of a cold CLI). A
// lost or stale ticket costs that round trip and nothing more, so nothing
// here ever fails a command.
import fs from "node:fs";
import path from "node:path";
import { CHALLENGE_BYTES, signTicket, type Signer, type TicketProof } from "../proto/auth.js";
import { ticketsDir } from "./vm/state.js";

const PROOF_BYTES = CHALLENGE_BYTES + 32 + 64;

export interface TicketSlot {
  /** The signed ticket kept from the last connection, if any. */
  readonly proof: TicketProof | undefined;
  /** Signs the agent's next ticket and keeps it in place of this one; settles once written (or given up). */
  keep(ticket: Uint8Array, key: Promise<Signer | undefined>): Promise<void>;
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
  const file = path.join(ticketsDir(), slotName(id));
  let proof: TicketProof | undefined;
  try {
    const b = fs.readFileSync(file);
    if (b.length === PROOF_BYTES) {
      proof = {
        ticket: new Uint8Array(b.subarray(0, CHALLENGE_BYTES)),
        publicKey: new Uint8Array(b.subarray(CHALLENGE_BYTES, CHALLENGE_BYTES + 32)),
        signature: new Uint8Array(b.subarray(CHALLENGE_BYTES + 32)),
      };
    }
  } catch {
    // none yet
  }
  return {
    proof,
    async keep(ticket, key) {
      try {
        const signer = await key;
        if (!signer || ticket.length !== CHALLENGE_BYTES) return;
        const p = await signTicket(signer, ticket);
        fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
        // Renamed into place: a concurrent CLI reads the old ticket or the new, never half of one.
        const tmp = `${file}.${process.pid}`;
        fs.writeFileSync(tmp, Buffer.concat([p.ticket, p.publicKey, p.signature]), { mode: 0o600 });
        fs.renameSync(tmp, file);
      } catch {
        // the next connection asks for a challenge instead
      }
    },
  };
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
