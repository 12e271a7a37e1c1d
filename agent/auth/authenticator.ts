// The agent's gate for network connections: which links must authenticate,
// the constant-time key lookup, and a per-address limit on failed attempts.
import crypto from "node:crypto";
import { fingerprint, verifySignature } from "../../proto/auth.js";
import { ErrorCode, FractalError } from "../../proto/errors.js";
import type { Authenticator, Principal } from "../../proto/session.js";
import { log } from "../log.js";
import type { AuthMode, AuthorizedKey } from "../../proto/authorized-keys.js";

const NETWORK_KINDS = new Set(["tcp", "ws", "tls", "wss"]);
/** Failed attempts an address may make within the window before it is locked out. */
export const MAX_FAILURES = 5;
export const FAILURE_WINDOW_MS = 60_000;
/** Addresses tracked at once; the oldest is forgotten first, so memory stays bounded. */
const MAX_TRACKED = 4096;

export class AuthGate {
  private readonly failures = new Map<string, number[]>();

  constructor(
    readonly mode: AuthMode,
    private readonly keys: readonly AuthorizedKey[],
    private readonly now: () => number = Date.now,
  ) {}

  /** The authenticator for a connection on this kind of endpoint from `peer`, or none if it need not authenticate. */
  forConnection(endpointKind: string, peer: string, description: string): Authenticator | undefined {
    if (this.mode === "none" || (this.mode === "network" && !NETWORK_KINDS.has(endpointKind))) return undefined;
    return { verify: (key, sig, challenge) => this.verify(key, sig, challenge, peer, description) };
  }

  private verify(key: Uint8Array, sig: Uint8Array, challenge: Uint8Array, peer: string, description: string): Principal {
    const locked = this.lockedFor(peer);
    if (locked > 0) {
      log("warn", `${description}: authentication refused: ${MAX_FAILURES} failures from ${peer} within ${FAILURE_WINDOW_MS / 1000} s`);
      throw new FractalError(ErrorCode.UNAUTHENTICATED, `too many failed attempts from ${peer}; try again in ${Math.ceil(locked / 1000)} s`);
    }
    const found = this.lookup(key);
    // The signature is checked even for unknown keys so both failures cost the same.
    const good = verifySignature(key, sig, challenge);
    if (found && good) {
      log("info", `${description}: authenticated as ${found.name}`);
      return { name: found.name, allowed: found.allowed };
    }
    this.noteFailure(peer);
    const who = key.length === 32 ? `key ${fingerprint(key)}` : `a malformed key (${key.length} bytes)`;
    const why = this.keys.length === 0 ? "this agent has no authorised keys" : !found ? `${who} is not authorised` : `bad signature from ${who}`;
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

  /** Milliseconds until `peer` may try again; 0 when it may now. */
  private lockedFor(peer: string): number {
    const recent = this.recent(peer);
    if (recent.length < MAX_FAILURES) return 0;
    return recent[recent.length - MAX_FAILURES]! + FAILURE_WINDOW_MS - this.now();
  }

  private recent(peer: string): number[] {
    const cutoff = this.now() - FAILURE_WINDOW_MS;
    const list = (this.failures.get(peer) ?? []).filter((t) => t > cutoff);
    if (list.length === 0) this.failures.delete(peer);
    else this.failures.set(peer, list);
    return list;
  }

  private noteFailure(peer: string): void {
    const list = this.recent(peer);
    list.push(this.now());
    this.failures.delete(peer); // re-inserted last: Map order is our age order
    this.failures.set(peer, list.slice(-MAX_FAILURES));
    if (this.failures.size > MAX_TRACKED) this.failures.delete(this.failures.keys().next().value!);
  }
}
