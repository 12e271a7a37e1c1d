// A virtio-serial port reads EOF while no host is attached, and for an
// instant while the next one attaches (the guest can see its first bytes
// before the port-open message). Only an EOF whose hang-up persists ends
// the session: ending it on the instant one left a host that had already
// shaken hands talking to nobody (bench-peers hung on it, 1 run in ~90).
// While no host is there, the port is not read at all: the kernel's SIGIO
// says when one attaches.
import { spawnSync } from "node:child_process";
import path from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = path.resolve(__dirname, "../..");

describe("file links on a port that reads EOF without a host", () => {
  it("keeps the session through an EOF the peer came back from, and ends it once the hang-up stays", () => {
    const r = spawnSync(path.join(ROOT, "node_modules/.bin/bun"), [path.join(ROOT, "test/helpers/file-link-eof.ts")], { encoding: "utf8", timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { data: string; whileBack: number; afterGone: number; open: boolean };
    expect(out.data).toBe("ab"); // nothing lost across the writers
    expect(out.whileBack).toBe(0);
    expect(out.afterGone).toBeGreaterThan(0);
    expect(out.open).toBe(true); // the device itself stays open for the next host
  });

  it("reports a hang-up once and waits for the next peer's signal, not an EOF every pause", () => {
    const r = spawnSync(path.join(ROOT, "node_modules/.bin/bun"), [path.join(ROOT, "test/helpers/file-link-idle.ts")], { encoding: "utf8", timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { data: string; idle: number; after: number; open: boolean };
    expect(out.idle).toBe(1); // a second of no peer: one EOF, where the loop reported ~50
    expect(out.data).toBe("ab"); // the next peer's bytes came: SIGIO woke the wait (its timer is 10 minutes)
    expect(out.after).toBe(2); // and its leaving was seen
    expect(out.open).toBe(true);
  });
});
