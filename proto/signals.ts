// Signals as the guest numbers them. The wire carries Linux signal numbers
// whatever the host is (macOS numbers SIGUSR1 30, Linux 10), so names are
// translated here, never through the host's own os.constants.
import { ErrorCode, FractalError } from "./errors.js";

/** Highest Linux signal number (SIGRTMAX, <asm-generic/signal.h> _NSIG). */
export const MAX_SIGNAL = 64;
/** glibc's SIGRTMIN: 32 and 33 belong to its threads implementation. */
export const SIGRTMIN = 34;

/** <asm-generic/signal.h>, the same on x86_64 and arm64. */
export const LINUX_SIGNALS: Readonly<Record<string, number>> = {
  HUP: 1, INT: 2, QUIT: 3, ILL: 4, TRAP: 5, ABRT: 6, IOT: 6, BUS: 7, FPE: 8, KILL: 9, USR1: 10, SEGV: 11, USR2: 12,
  PIPE: 13, ALRM: 14, TERM: 15, STKFLT: 16, CHLD: 17, CONT: 18, STOP: 19, TSTP: 20, TTIN: 21, TTOU: 22, URG: 23,
  XCPU: 24, XFSZ: 25, VTALRM: 26, PROF: 27, WINCH: 28, IO: 29, POLL: 29, PWR: 30, SYS: 31,
};

/**
 * A signal as kill(1) and docker take it: a number (1-64), a name with or
 * without SIG in any case (usr1, SIGUSR1), or RTMIN+N / RTMAX-N.
 */
export function parseSignal(s: string): number {
  const bad = (why: string) => new FractalError(ErrorCode.INVALID_ARGUMENT, `unknown signal "${s}": ${why}`);
  if (/^\d+$/.test(s)) {
    const n = Number(s);
    if (n < 1 || n > MAX_SIGNAL) throw bad(`numbers go from 1 to ${MAX_SIGNAL}`);
    return n;
  }
  const name = s.toUpperCase().replace(/^SIG/, "");
  const rt = /^RT(MIN|MAX)(?:([+-])(\d+))?$/.exec(name);
  if (rt) {
    const off = rt[3] === undefined ? 0 : Number(rt[3]) * (rt[2] === "+" ? 1 : -1);
    const n = (rt[1] === "MIN" ? SIGRTMIN : MAX_SIGNAL) + off;
    if (n < SIGRTMIN || n > MAX_SIGNAL) throw bad(`real-time signals go from RTMIN (${SIGRTMIN}) to RTMAX (${MAX_SIGNAL})`);
    return n;
  }
  const n = LINUX_SIGNALS[name];
  if (n === undefined) throw bad("use a name such as TERM, USR1 or RTMIN+1, or a number");
  return n;
}

/** Throws unless n is a signal number the guest knows. */
export function checkSignal(n: number): number {
  if (!Number.isInteger(n) || n < 1 || n > MAX_SIGNAL) throw new FractalError(ErrorCode.INVALID_ARGUMENT, `signal ${n} is not a valid signal number (1-${MAX_SIGNAL})`);
  return n;
}
