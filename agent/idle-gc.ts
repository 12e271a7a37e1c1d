// One full garbage collection once the agent has gone quiet after work.
// JavaScriptCore collects as a program allocates, so what a burst of work
// left behind (a copy's tar buffers, an unpack's streams, a transfer's
// frames) stays resident in an agent that then allocates nothing more: in a
// guest that memory is the VM's. Collecting when requests stop coming, not on
// a clock, costs an idle agent nothing and pauses a busy one at most once
// (33-65 ms in a guest under TCG).
import { log } from "./log.js";

/** How long after the last request started or ended (or connection closed) the agent counts as quiet. */
export const QUIET_MS = 2000;

export class IdleCollector {
  /** When something last happened, on the monotonic clock: setting the guest's clock moves nothing here. */
  private last = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly collect: () => void = fullCollection,
    private readonly quietMs = QUIET_MS,
  ) {}

  /**
   * Something happened (a request started or ended, a connection closed):
   * collect once nothing more happened for quietMs. A request that runs on
   * (a wait on a long process, one whose client left) does not hold the
   * collection off for good; it may happen while one streams.
   */
  touch(): void {
    this.last = performance.now();
    if (this.timer === undefined) this.arm(this.quietMs);
  }

  private arm(ms: number): void {
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const left = this.last + this.quietMs - performance.now();
      if (left > 0) return this.arm(left);
      this.collect();
    }, ms);
    // The agent's listeners keep it alive, not this timer.
    this.timer.unref?.();
  }
}

function fullCollection(): void {
  const t0 = performance.now();
  Bun.gc(true);
  log("debug", `quiet: heap collected in ${(performance.now() - t0).toFixed(0)} ms`);
}
