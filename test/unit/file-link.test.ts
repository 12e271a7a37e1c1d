// A virtio-serial port reads EOF while no host is attached, and for an
// instant while the next one attaches (the guest can see its first bytes
// before the port-open message). Only an EOF whose hang-up persists ends
// the session: ending it on the instant one left a host that had already
// shaken hands talking to nobody (bench-peers hung on it, 1 run in ~90).
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
});
