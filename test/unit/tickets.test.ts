// The CLI's ticket pool (host/tickets.ts) on a real directory: each slot
// opened takes its own ticket, the pool is bounded, a refusal empties it, and
// the single-file slot older CLIs kept is taken over.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import type { Signer } from "../../proto/auth.js";
import { POOL_SIZE, ticketSlot } from "../../host/tickets.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-tickets-unit-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const keyFile = path.join(dir, "key");
fs.writeFileSync(keyFile, "a key file: only its identity matters here");
const signer: Signer = { publicKey: new Uint8Array(32).fill(9), sign: async () => new Uint8Array(64).fill(5) };
const ticket = (n: number) => new Uint8Array(32).fill(n);
const slot = () => ticketSlot("tcp://127.0.0.1:1", keyFile)!;
const taken = (s: ReturnType<typeof slot>) => (s.proof ? s.proof.ticket[0] : undefined);

let state = 0;
beforeEach(() => {
  process.env.FRACTAL_STATE = path.join(dir, `state${++state}`, "vms");
});

describe("ticket pool", () => {
  it("gives each slot opened its own ticket, newest first, until none is left", async () => {
    // One slot keeping two, as two CLIs that found the pool empty would.
    const first = slot();
    expect(taken(first)).toBeUndefined();
    await first.keep(ticket(1), Promise.resolve(signer));
    await first.keep(ticket(2), Promise.resolve(signer));
    const a = slot();
    const b = slot();
    expect([taken(a), taken(b)]).toEqual([2, 1]);
    expect(b.proof).toEqual({ ticket: ticket(1), publicKey: signer.publicKey, signature: new Uint8Array(64).fill(5) });
    expect(taken(slot())).toBeUndefined();
  });

  it("keeps at most POOL_SIZE, the newest", async () => {
    const s = slot();
    for (let i = 1; i <= POOL_SIZE + 3; i++) await s.keep(ticket(i), Promise.resolve(signer));
    const got = Array.from({ length: POOL_SIZE + 1 }, () => taken(slot()));
    expect(got).toEqual([...Array.from({ length: POOL_SIZE }, (_, i) => POOL_SIZE + 3 - i), undefined]);
  });

  it("drops the others when the ticket it opened with was refused", async () => {
    const first = slot();
    for (const n of [1, 2, 3]) await first.keep(ticket(n), Promise.resolve(signer));
    const s = slot();
    expect(taken(s)).toBe(3);
    await s.keep(ticket(4), Promise.resolve(signer), true);
    expect(taken(slot())).toBe(4);
    expect(taken(slot())).toBeUndefined();
  });

  it("keeps nothing without a key, and takes over an older CLI's single ticket file", async () => {
    await slot().keep(ticket(1), Promise.resolve(undefined));
    expect(taken(slot())).toBeUndefined();
    await slot().keep(ticket(1), Promise.resolve(signer));
    const tickets = path.dirname(process.env.FRACTAL_STATE!) + "/tickets";
    const [name] = fs.readdirSync(tickets);
    fs.rmSync(path.join(tickets, name!), { recursive: true });
    fs.writeFileSync(path.join(tickets, name!), new Uint8Array(128));
    expect(taken(slot())).toBeUndefined();
    await slot().keep(ticket(7), Promise.resolve(signer));
    expect(taken(slot())).toBe(7);
  });
});
