// The agent collects its heap once, when requests have stopped coming: not
// between requests that keep coming, not again and again while it idles.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { IdleCollector } from "../../agent/idle-gc.js";

describe("IdleCollector", () => {
  let collections = 0;
  let idle: IdleCollector;
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] });
    collections = 0;
    idle = new IdleCollector(() => collections++, 2000);
  });
  afterEach(() => vi.useRealTimers());

  it("collects once, a quiet period after the last request", () => {
    idle.touch();
    vi.advanceTimersByTime(1500);
    // Another request: the quiet period starts again from it.
    idle.touch();
    vi.advanceTimersByTime(1999);
    expect(collections).toBe(0);
    vi.advanceTimersByTime(1);
    expect(collections).toBe(1);
    // Quiet from then on: nothing more to collect.
    vi.advanceTimersByTime(60_000);
    expect(collections).toBe(1);
  });

  it("does not collect while requests keep coming, however long", () => {
    for (let t = 0; t < 30_000; t += 500) {
      idle.touch();
      vi.advanceTimersByTime(500);
    }
    expect(collections).toBe(0);
    vi.advanceTimersByTime(1500);
    expect(collections).toBe(1);
  });

  it("collects again after later work", () => {
    idle.touch();
    vi.advanceTimersByTime(2000);
    expect(collections).toBe(1);
    idle.touch();
    vi.advanceTimersByTime(2000);
    expect(collections).toBe(2);
  });
});
