// A clock that fires once nothing has happened for a while: a connection's
// idle deadline (deadlines.ts), the agent's collection when it goes quiet
// (agent/idle-gc.ts). Activity only records a time; the one timer, finding
// on expiry that something happened since, waits out the rest, instead of
// being cleared and set again on every frame. Time is monotonic: setting the
// machine's clock neither hastens nor delays it.

export class QuietClock {
  private last = performance.now();
  private timer: ReturnType<typeof setTimeout> | undefined;

  /**
   * @param ms how long counts as quiet
   * @param onQuiet called once per start, with how long it was quiet
   * @param busy when true at expiry, the time counts as activity (work in flight, however silent)
   */
  constructor(
    private readonly ms: number,
    private readonly onQuiet: (quietMs: number) => void,
    private readonly busy: () => boolean = () => false,
  ) {}

  /** Something happened. */
  touch(): void {
    this.last = performance.now();
  }

  /** Starts waiting for quiet, unless already waiting. */
  start(): void {
    if (this.timer === undefined) this.arm(this.ms);
  }

  private arm(wait: number): void {
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.busy()) this.last = performance.now();
      const quiet = performance.now() - this.last;
      if (quiet < this.ms) return this.arm(this.ms - quiet);
      this.onQuiet(quiet);
    }, wait);
    // Whatever the clock watches keeps the process alive, not the clock.
    this.timer.unref?.();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
