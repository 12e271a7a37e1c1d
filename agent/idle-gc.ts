// One full garbage collection once the agent has gone quiet after work.
// JavaScriptCore collects as a program allocates, so what a burst of work
// left behind (a copy's tar buffers, an unpack's streams, a transfer's
// frames) stays resident in an agent that then allocates nothing more: in a
// guest that memory is the VM's. Collecting when requests stop coming, not
// periodically, costs an idle agent nothing and pauses a busy one at most once
// (33-65 ms in a guest under TCG).
import { QuietClock } from "../proto/quiet-clock.js";
import { log } from "./log.js";

/** How long after the last request started or ended (or connection closed) the agent counts as quiet. */
export const QUIET_MS = 2000;

export class IdleCollector {
  private readonly clock: QuietClock;

  constructor(collect: () => void = fullCollection, quietMs = QUIET_MS) {
    this.clock = new QuietClock(quietMs, collect);
  }

  /**
   * Something happened (a request started or ended, a connection closed):
   * collect once nothing more happened for the quiet time. A request that
   * runs on (a wait on a long process, one whose client left) does not hold
   * the collection off for good; it may happen while one streams.
   */
  touch(): void {
    this.clock.touch();
    this.clock.start();
  }
}

function fullCollection(): void {
  const t0 = performance.now();
  Bun.gc(true);
  log("debug", `quiet: heap collected in ${(performance.now() - t0).toFixed(0)} ms`);
}
