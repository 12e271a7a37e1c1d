// A server connection's two deadlines: a frame whose first bytes arrived
// must be complete within the frame timeout (a peer that sends a header and
// stalls must not hold its buffer, up to MAX_FRAME, for ever), and a
// connection with nothing in flight must not idle past the idle timeout.
// Either expiring is a fatal DEADLINE_EXCEEDED. The session says what
// happens; this file only keeps the clocks.
import { ErrorCode, ProtocolViolation } from "./errors.js";
import { QuietClock } from "./quiet-clock.js";

export interface DeadlineOptions {
  /** 0: frames are never timed (serial lines, where a 1 MiB frame at 115200 baud takes 90 s). */
  frameMs: number;
  /** 0: connections may idle for ever. */
  idleMs: number;
  /** Bytes of an incomplete frame held, while we are reading (0 when paused or between frames). */
  partial(): number;
  /** Requests in flight or streams open: not idle, however quiet. */
  busy(): boolean;
  expired(v: ProtocolViolation): void;
}

export class Deadlines {
  private frameTimer: ReturnType<typeof setTimeout> | undefined;
  /** Quiet since a frame last came or went, or the connection was last seen busy. */
  private readonly idle: QuietClock;

  constructor(private readonly o: DeadlineOptions) {
    this.idle = new QuietClock(
      o.idleMs,
      (quiet) => o.expired(new ProtocolViolation(ErrorCode.DEADLINE_EXCEEDED, `idle for ${Math.round(quiet / 1000)} s with nothing in flight: closing the connection`, true)),
      o.busy,
    );
  }

  /** A frame came or went. */
  active(): void {
    this.idle.touch();
  }

  /**
   * After input was taken: starts the frame clock when an incomplete frame
   * is held, restarting it when `progress` (a frame completed, so the one
   * held now is new); stops it when none is.
   */
  frame(progress: boolean): void {
    if (this.o.frameMs <= 0) return;
    if (progress || this.o.partial() === 0) this.stopFrame();
    if (this.o.partial() === 0 || this.frameTimer) return;
    this.frameTimer = setTimeout(() => {
      this.frameTimer = undefined;
      const held = this.o.partial();
      if (held > 0) this.o.expired(new ProtocolViolation(ErrorCode.DEADLINE_EXCEEDED, `a frame begun ${this.o.frameMs / 1000} s ago is still incomplete (${held} bytes held)`, true));
    }, this.o.frameMs);
    this.frameTimer.unref?.();
  }

  /** We stopped reading (or hold only complete frames): no peer is stalling one. */
  stopFrame(): void {
    clearTimeout(this.frameTimer);
    this.frameTimer = undefined;
  }

  /** Starts the idle clock (after the handshake). */
  startIdle(): void {
    if (this.o.idleMs > 0) this.idle.start();
  }

  stop(): void {
    this.stopFrame();
    this.idle.stop();
  }
}
