// Waiting for a hung-up descriptor's peer to come back without reading EOF
// in a loop. A virtio-serial port with no host attached reads EOF at once
// (and polls readable and hung up), so the listener, reading again after
// each 100 ms pause, started a new session ten times a second for as long as
// no host came: an idle guest's agent spent about 6% of a vCPU on it under
// TCG. The kernel instead signals (SIGIO, with O_ASYNC) when a host attaches
// or sends; a timer stays only as a slow fallback for a descriptor that
// never signals.
import { hungUp, signalOnIo } from "./libc.js";

/** The fallback: how often the descriptor is looked at when no SIGIO came. */
const FALLBACK_MS = 1000;
/** How often, when the descriptor cannot signal at all (fcntl refused). */
const POLL_MS = 100;

/** Each waiting descriptor's wake-up; SIGIO does not say which fd it is for. */
const waiters = new Set<(signalled: boolean) => void>();
let handling = false;

function onSigio(): void {
  for (const wake of [...waiters]) wake(true);
}

/**
 * Resolves true at `fd`'s next SIGIO, or at once if `ready` says so once the
 * signal is armed; false after `ms` or on `abort`. Without signals (fcntl
 * refused) it answers `ready` at once.
 */
export async function nextSignal(fd: number, abort: AbortSignal, ms: number, ready?: () => boolean): Promise<boolean> {
  if (!handling) {
    // Installed once and kept: a SIGIO with no handler would end the process.
    process.on("SIGIO", onSigio);
    handling = true;
  }
  try {
    signalOnIo(fd, true);
  } catch {
    return ready?.() ?? false;
  }
  try {
    // Armed before this check, and a SIGIO handler runs only in a later turn
    // of the event loop: a peer that comes between the check and the wait
    // still wakes it.
    if (ready?.()) return true;
    return await new Promise<boolean>((resolve) => {
      const wake = (signalled: boolean) => {
        waiters.delete(wake);
        clearTimeout(timer);
        abort.removeEventListener("abort", onAbort);
        resolve(signalled);
      };
      const onAbort = () => wake(false);
      const timer = setTimeout(() => wake(false), ms);
      waiters.add(wake);
      if (abort.aborted) onAbort();
      else abort.addEventListener("abort", onAbort);
    });
  } finally {
    // Off again: during a session it would signal every arriving buffer.
    try {
      signalOnIo(fd, false);
    } catch {
      // closed meanwhile: nothing to turn off
    }
  }
}

/**
 * Resolves at the first sign of `fd`'s peer: a SIGIO (a host attached, or
 * bytes came: reading tells which), the hang-up gone, or `abort`. Without a
 * signal the hang-up is looked at every `fallbackMs`.
 */
export async function untilPeer(fd: number, abort: AbortSignal, fallbackMs = FALLBACK_MS): Promise<void> {
  while (!abort.aborted) {
    const started = performance.now();
    if (await nextSignal(fd, abort, fallbackMs, () => !hungUp(fd))) return;
    // A descriptor that cannot signal answers at once: look again after a
    // pause, not in a spin.
    const left = POLL_MS - (performance.now() - started);
    if (left > 0) await new Promise((r) => setTimeout(r, left));
  }
}
