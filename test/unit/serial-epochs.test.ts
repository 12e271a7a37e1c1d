// A serial line has no connections: the agent splits it into one session per
// host (proto/serial-listen.ts). A host that attaches without a hang-up seen
// first (a UART never has one; a virtio-serial host can attach within the
// pause after the last one's EOF) says Hello to the old session, which hands
// it to a new one. That Hello used to be framed again wrongly, as an empty
// frame: the new session never answered it, and the host waited 300 ms for
// its Hello to be repeated, on every back-to-back serial exec.
import { spawnSync } from "node:child_process";
import path from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = path.resolve(__dirname, "../..");

describe("sessions on a serial line", () => {
  it("answers each host's first Hello: after a hang-up, and when the host changed without one", () => {
    const r = spawnSync(path.join(ROOT, "node_modules/.bin/bun"), [path.join(ROOT, "test/helpers/serial-epochs.ts")], { encoding: "utf8", timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { echoed: number[]; sessions: number };
    expect(out.echoed).toEqual([1, 2, 3]); // each HelloAck echoes its own host's nonce, none missing
    expect(out.sessions).toBe(3);
  });

  it("keeps what a host sent behind a Hello: a repeat of its own Hello is no new host, and a new host's requests reach its session", () => {
    // A host repeats its Hello every 300 ms until answered; under load the
    // repeat arrived after the answer, in one read with the exec sent once
    // answered, and restarted the session: the exec was dropped with it and
    // the CLI waited for its answer for ever (CI, exec --namespace).
    const r = spawnSync(path.join(ROOT, "node_modules/.bin/bun"), [path.join(ROOT, "test/helpers/serial-repeated-hello.ts")], { encoding: "utf8", timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { echoed: number[]; answered: number[]; sessions: number; pausedAfterHangUp: boolean };
    expect(out.echoed).toEqual([1, 2]); // the repeat got no second answer
    expect(out.answered).toEqual([11, 21]);
    expect(out.sessions).toBe(3); // host 1, host 2, and the one waiting for the next host
    expect(out.pausedAfterHangUp).toBe(false);
  });
});
