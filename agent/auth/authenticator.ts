// The agent's gate for network connections: which links must authenticate,
// the constant-time key lookup, and a limit on failed attempts per address
// and key. Per key, not per address alone: every host client of a QEMU
// user-net guest arrives from 10.0.2.2, and five bad logins there must not
// lock out the good keys that come from the same address.
import crypto from "node:crypto";
import { fingerprint, verifySignature } from "../../proto/ed25519.js";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import type { Authenticator, Principal } from "../../proto/session.js";
import { log } from "../log.js";
import type { AuthMode, AuthorizedKey } from "../../proto/authorized-keys.js";
import { TicketBook } from "./tickets.js";

// vsock is here although it never leaves the machine: every local account
// can open AF_VSOCK to a guest's CID, and a key-less vsock would give any of
// them root in the guest (and, through a --host-root backmount, the files of
// whoever started QEMU).
const NETWORK_KINDS = new Set(["tcp", "ws", "tls", "wss", "vsock"]);
/** Failed attempts one key may make from one address within the window before that pair is locked out. */
export const MAX_FAILURES = 5;
export const FAILURE_WINDOW_MS = 60_000;
/** (address, key) pairs tracked at once; the oldest is forgotten first, so memory stays bounded. */
const MAX_TRACKED = 4096;

export class AuthGate {
  private readonly failures = new Map<string, number[]>();
  /** One book for every listener: a ticket from a TCP connection opens a WebSocket one too. */
  readonly tickets: TicketBook;

  constructor(
    readonly mode: AuthMode,
    private readonly keys: readonly AuthorizedKey[],
    private readonly now: () => number = Date.now,
  ) {
    this.tickets = new TicketBook(now);
  }

  /** The authenticator for a connection on this kind of endpoint from `peer`, or none if it need not authenticate. */
  forConnection(endpointKind: string, peer: string, description: string): Authenticator | undefined {
    if (this.mode === "none" || (this.mode === "network" && !NETWORK_KINDS.has(endpointKind))) return undefined;
    // A redeemed ticket's signature is checked here too: a key locked out
    // is refused with its ticket as well, and a bad one counts as a failure.
    return { verify: (key, sig, challenge) => this.verify(key, sig, challenge, peer, description), tickets: this.tickets };
  }

  private verify(key: Uint8Array, sig: Uint8Array, challenge: Uint8Array, peer: string, description: string): Principal {
    // Named only when refused: the fingerprint's hash showed in every
    // connection's profile under TCG, for a name the good path never prints.
    const who = () => (key.length === 32 ? `key ${fingerprint(key)}` : `a malformed key (${key.length} bytes)`);
    const pair = `${peer} ${key.length === 32 ? Buffer.from(key).toString("hex") : "malformed"}`;
    const locked = this.lockedFor(pair);
    if (locked > 0) {
      log("warn", `${description}: authentication refused: ${MAX_FAILURES} failures of ${who()} from ${peer} within ${FAILURE_WINDOW_MS / 1000} s`);
      throw new FractalError(ErrorCode.UNAUTHENTICATED, `too many failed attempts with ${who()} from ${peer}; try again in ${Math.ceil(locked / 1000)} s`);
    }
    const found = this.lookup(key);
    // The signature is checked even for unknown keys so both failures cost the same.
    const good = verifySignature(key, sig, challenge);
    if (found && good) {
      log("debug", `${description}: authenticated as ${found.name}`);
      return { name: found.name, allowed: found.allowed };
    }
    this.noteFailure(pair);
    const why = this.keys.length === 0 ? "this agent has no authorised keys" : !found ? `${who()} is not authorised` : `bad signature from ${who()}`;
    log("warn", `${description}: authentication failed: ${why}`);
    throw new FractalError(ErrorCode.UNAUTHENTICATED, why);
  }

  /** Compares against every key, whatever matched, so timing does not tell how close a guess came. */
  private lookup(key: Uint8Array): AuthorizedKey | undefined {
    let found: AuthorizedKey | undefined;
    const probe = Buffer.alloc(32);
    Buffer.from(key.subarray(0, 32)).copy(probe);
    for (const k of this.keys) {
      if (crypto.timingSafeEqual(probe, k.key) && key.length === 32) found ??= k;
    }
    return found;
  }

  /** Milliseconds until this (address, key) pair may try again; 0 when it may now. */
  private lockedFor(pair: string): number {
    const recent = this.recent(pair);
    if (recent.length < MAX_FAILURES) return 0;
    return recent[recent.length - MAX_FAILURES]! + FAILURE_WINDOW_MS - this.now();
  }

  private recent(pair: string): number[] {
    const cutoff = this.now() - FAILURE_WINDOW_MS;
    const list = (this.failures.get(pair) ?? []).filter((t) => t > cutoff);
    if (list.length === 0) this.failures.delete(pair);
    else this.failures.set(pair, list);
    return list;
  }

  private noteFailure(pair: string): void {
    const list = this.recent(pair);
    list.push(this.now());
    this.failures.delete(pair); // re-inserted last: Map order is our age order
    this.failures.set(pair, list.slice(-MAX_FAILURES));
    if (this.failures.size > MAX_TRACKED) this.failures.delete(this.failures.keys().next().value!);
  }
}
