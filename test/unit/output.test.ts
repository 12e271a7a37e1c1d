// A container's output log: live attachments pace the container, log
// readers never do, and a replay streams the file in order without reading
// it whole.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { OutputLog, type OutputSink } from "../../agent/containers/output.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-output-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;
const fresh = () => new OutputLog(path.join(dir, `log${n++}`));

/** A sink that records what it got; `gate` holds every write until opened. */
function recorder() {
  const got: string[] = [];
  let open: () => void = () => {};
  let gate: Promise<void> | undefined;
  let ended = false;
  const take = (tag: string) => async (c: Uint8Array) => {
    if (gate) await gate;
    got.push(`${tag}:${Buffer.from(c).toString()}`);
  };
  const sink: OutputSink = { stdout: take("out"), stderr: take("err"), end: () => (ended = true) };
  return {
    sink,
    got,
    ended: () => ended,
    hold() {
      gate = new Promise((r) => (open = r));
    },
    release() {
      gate = undefined;
      open();
    },
  };
}
const until = async (cond: () => boolean) => {
  for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  expect(cond()).toBe(true);
};

describe("container output log", () => {
  it("replays stdout and stderr apart and in order, then ends", async () => {
    const log = fresh();
    await log.write(1, Buffer.from("a"));
    await log.write(2, Buffer.from("b"));
    await log.write(1, Buffer.from("c"));
    const r = recorder();
    log.attach(r.sink, { pace: false, fromStart: true, follow: false });
    await until(r.ended);
    expect(r.got).toEqual(["out:a", "err:b", "out:c"]);
  });

  it("never waits for a stalled logs -f reader, which catches up afterwards", async () => {
    const log = fresh();
    const r = recorder();
    r.hold();
    log.attach(r.sink, { pace: false, fromStart: true, follow: true });
    for (let i = 0; i < 1000; i++) await log.write(1, Buffer.from(`${i},`)); // would hang if the reader paced it
    log.close();
    expect(r.ended()).toBe(false);
    r.release();
    await until(r.ended);
    // Neighbouring records of one stream may arrive as one chunk.
    expect(r.got.every((g) => g.startsWith("out:"))).toBe(true);
    expect(r.got.map((g) => g.slice(4)).join("")).toBe(Array.from({ length: 1000 }, (_, i) => `${i},`).join(""));
  });

  it("follows a log as it grows, with records larger than one read", async () => {
    const log = fresh();
    const r = recorder();
    log.attach(r.sink, { pace: false, fromStart: true, follow: true });
    const big = Buffer.alloc(200_000, "x");
    await log.write(1, big);
    await new Promise((res) => setTimeout(res, 50));
    await log.write(2, Buffer.from("tail"));
    log.close();
    await until(r.ended);
    expect(r.got).toEqual([`out:${big.toString()}`, "err:tail"]);
  });

  it("shows an attachment without stdin what comes from now on, and never waits for it", async () => {
    const log = fresh();
    await log.write(1, Buffer.from("before"));
    const r = recorder();
    r.hold();
    log.attach(r.sink, { pace: false, fromStart: false, follow: true });
    await log.write(1, Buffer.from("after"));
    log.close();
    r.release();
    await until(r.ended);
    expect(r.got).toEqual(["out:after"]);
  });

  it("lets a client that feeds stdin pace the writer", async () => {
    const log = fresh();
    const r = recorder();
    r.hold();
    log.attach(r.sink, { pace: true, fromStart: false, follow: true });
    let written = false;
    const w = log.write(1, Buffer.from("x")).then(() => (written = true));
    await new Promise((res) => setTimeout(res, 50));
    expect(written).toBe(false);
    r.release();
    await w;
    expect(r.got).toEqual(["out:x"]);
    log.close();
    expect(r.ended()).toBe(true);
  });
});
