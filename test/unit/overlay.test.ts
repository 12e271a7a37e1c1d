// Overlay option strings for images of many layers: they must fit the one
// page mount(2) copies, as docker's overlay2 makes them fit.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { MOUNT_DATA_MAX, overlayData } from "../../agent/containers/overlay.js";
import { ErrorCode, FractalError } from "../../proto/errors.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "fractal-overlay-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const layer = (i: number) => `/run/fractal/layers/${i.toString(16).padStart(64, "0")}`;
const upper = "/run/fractal/containers/0123456789abcdef0123456789abcdef/upper";
const work = "/run/fractal/containers/0123456789abcdef0123456789abcdef/work";

describe("overlay mount options", () => {
  it("names the layer directories themselves when they fit", () => {
    const d = overlayData([layer(1), layer(2)], upper, work, tmp);
    expect(d).toBe(`lowerdir=${layer(1)}:${layer(2)},upperdir=${upper},workdir=${work}`);
    expect(fs.readdirSync(tmp)).toEqual([]);
  });

  it("stacks 64 layers through short links that lead to the right directories, in order", () => {
    const lowers = Array.from({ length: 64 }, (_, i) => layer(i));
    expect(lowers.join(":").length).toBeGreaterThan(4096);
    const d = overlayData(lowers, upper, work, tmp);
    expect(d.length).toBeLessThanOrEqual(MOUNT_DATA_MAX);
    const used = /^lowerdir=([^,]+),/.exec(d)![1]!.split(":");
    expect(used.map((l) => fs.readlinkSync(l))).toEqual(lowers);
    // The same directories get the same links on the next run.
    expect(overlayData(lowers, upper, work, tmp)).toBe(d);
  });

  it("refuses more layers than any option string can hold, saying how many", () => {
    const lowers = Array.from({ length: 200 }, (_, i) => layer(i));
    try {
      overlayData(lowers, upper, work, tmp);
      expect.unreachable();
    } catch (err) {
      expect((err as FractalError).code).toBe(ErrorCode.INVALID_ARGUMENT);
      expect((err as Error).message).toMatch(/200 layers/);
    }
  });
});
